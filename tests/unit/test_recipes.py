"""Recipes: a stored job becomes a new request, carrying every flag the job keeps."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from typing import Any

import pytest

from bot.domain.requests import FLAGS, GenerationRequest, Limits
from bot.jobs import recipes
from bot.store.model import ImageState, Job, JobImage
from tests.unit.test_views import make_job

JOB = make_job(prompt="a red fox", aspect_ratio="4:3", size="2K", seed=1000, n=3, model="flux-2-dev")
IMAGE = JobImage(JOB.id, 1, 1001, ImageState.SUCCEEDED, "g1", None, "F1")


def modal(prompt: str = "a blue fox", aspect_ratio: str = "9:16", size: str = "4K", seed: str = "7") -> Any:
    """The Edit modal's `view.state.values`, as Slack sends them."""
    return {
        "prompt": {"value": {"type": "plain_text_input", "value": prompt}},
        "aspect_ratio": {"value": {"type": "static_select", "selected_option": {"value": aspect_ratio}}},
        "size": {"value": {"type": "static_select", "selected_option": {"value": size}}},
        "seed": {"value": {"type": "plain_text_input", "value": seed}},
    }


def test_every_request_field_is_a_flag_that_decides_whether_recipes_carry_it() -> None:
    assert set(GenerationRequest.model_fields) == {"prompt", *(flag.field for flag in FLAGS)}
    # A job keeps neither --fresh nor --nokit as a flag (its params record the kit it had, domain/kits.py).
    assert {flag.field for flag in FLAGS if not flag.carried} == {"fresh", "nokit"}
    assert {flag.field for flag in FLAGS if flag.carried} <= {field.name for field in fields(Job)}


@pytest.mark.parametrize(
    ("make", "changes", "reference"),
    [
        (recipes.reroll, {"seed": None}, None),
        (
            lambda job: recipes.vary(job, IMAGE),
            {"seed": None, "n": 1, "aspect_ratio": "match_input_image"},
            IMAGE,
        ),
        (
            lambda job: recipes.upscale(job, IMAGE),
            {"seed": 1001, "n": 1, "size": "4K", "aspect_ratio": "match_input_image"},
            IMAGE,
        ),
        (lambda job: recipes.replay(job, new_seed=False), {}, None),
        (lambda job: recipes.replay(job, new_seed=True), {"seed": None}, None),
        (
            lambda job: recipes.edit(job, modal(), Limits()),
            {"prompt": "a blue fox", "aspect_ratio": "9:16", "size": "4K", "seed": 7},
            None,
        ),
    ],
    ids=["reroll", "vary", "upscale", "replay", "replay-new-seed", "edit"],
)
def test_each_recipe_carries_every_flag_it_does_not_change(
    make: Callable[[Job], recipes.Recipe], changes: dict[str, object], reference: JobImage | None
) -> None:
    recipe = make(JOB)
    assert recipe.reference == reference
    assert recipe.request.prompt == changes.get("prompt", JOB.prompt)
    for flag in FLAGS:
        kept = (
            getattr(JOB, flag.field) if flag.carried else GenerationRequest.model_fields[flag.field].default
        )
        assert getattr(recipe.request, flag.field) == changes.get(flag.field, kept), flag.name


def test_edit_leaves_empty_choices_to_the_job_or_the_defaults() -> None:
    request = recipes.edit(JOB, modal(aspect_ratio="", size="", seed=""), Limits()).request
    assert (request.aspect_ratio, request.size, request.seed, request.n) == (None, "2K", None, 3)


@pytest.mark.parametrize(
    ("values", "errors"),
    [
        (modal(prompt="  "), {"prompt": "Describe the image."}),
        (modal(prompt="x" * 21), {"prompt": "At most 20 characters (this is 21)."}),
        (modal(size="8K"), {"size": "Use 2K or 4K."}),
        (modal(seed="seven"), {"seed": "A whole number from 0 to 100, or empty for a random seed."}),
        (modal(seed="-1"), {"seed": "A whole number from 0 to 98, or empty for a random seed."}),
        (modal(seed="99"), {"seed": "A whole number from 0 to 98, or empty for a random seed."}),
        (
            modal(prompt="", seed="1.5"),
            {
                "prompt": "Describe the image.",
                "seed": "A whole number from 0 to 100, or empty for a random seed.",
            },
        ),
    ],
    ids=[
        "empty-prompt",
        "long-prompt",
        "size-not-offered",
        "seed-not-a-number",
        "seed-below",
        "seed-plus-n",
        "two-fields",
    ],
)
def test_edit_explains_each_bad_field(values: Any, errors: dict[str, str]) -> None:
    limits = Limits(prompt_max=20, seed_range=(0, 100))
    with pytest.raises(recipes.EditError) as caught:
        recipes.edit(JOB, values, limits)
    assert caught.value.errors == errors


def test_edit_accepts_the_last_seed_that_leaves_room_for_every_image() -> None:
    assert recipes.edit(JOB, modal(seed="98"), Limits(seed_range=(0, 100))).request.seed == 98
