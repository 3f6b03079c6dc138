"""Long prompts in the ✏️ Edit modal: cut into Slack-sized input boxes and joined back exactly."""

from __future__ import annotations

import random

import pytest
from slack_sdk.models.views import View

from bot.domain.controls import Target
from bot.domain.requests import (
    PROMPT_BOX_MAX,
    Limits,
    join_prompt,
    prompt_box_size,
    split_prompt,
)
from bot.jobs import recipes
from bot.views import blocks as views
from tests.unit.test_views import make_job


def random_prompt(rng: random.Random) -> str:
    words = [
        "".join(rng.choice("abc") for _ in range(rng.randint(1, 60))) for _ in range(rng.randint(1, 300))
    ]
    return "".join(word + rng.choice([" ", "\n", "  ", " \n"]) for word in words).strip()


@pytest.mark.parametrize("box", [5, 50, 300, 3000])
def test_split_then_join_gives_the_prompt_back(box: int) -> None:
    rng = random.Random(box)
    for _ in range(100):
        prompt = random_prompt(rng)
        boxes = split_prompt(prompt, box)
        assert all(0 < len(part) <= box and part == part.strip() for part in boxes.parts)
        assert len(boxes.joins) == len(boxes.parts) - 1
        assert join_prompt(boxes.parts, boxes.joins) == prompt


def test_a_word_longer_than_a_box_is_cut_mid_word() -> None:
    boxes = split_prompt("x" * 7 + " y", 3)
    assert boxes.parts == ("xxx", "xxx", "x y")
    assert join_prompt(boxes.parts, boxes.joins) == "x" * 7 + " y"


def test_a_short_prompt_is_one_box() -> None:
    assert split_prompt("a red fox", PROMPT_BOX_MAX).parts == ("a red fox",)


def test_edited_boxes_are_joined_and_empty_ones_left_out() -> None:
    assert join_prompt(["  a red ", "", " fox"], [" ", "\n"]) == "a red\nfox"
    assert join_prompt(["a", "b", "c"], []) == "a b c"


def test_the_box_size_follows_slack_and_the_model() -> None:
    assert prompt_box_size(Limits(prompt_max=4000)) == 3000
    assert prompt_box_size(Limits(prompt_max=1200)) == 1200


def test_the_edit_modal_of_a_long_prompt_is_valid_and_loses_nothing() -> None:
    prompt = " ".join(f"w{index:04}" for index in range(600))
    job = make_job(prompt=prompt, n=1, seed=3)
    boxes = split_prompt(prompt, 3000)
    view = views.edit_modal(job, Target(job.id), reference_count=0, sizes=("2K", "4K"), prompt=boxes)
    assert View(**view).to_dict()["blocks"] == view["blocks"], "slack_sdk parses it as it is"
    inputs = [b for b in view["blocks"] if b.get("block_id", "").startswith("prompt")]
    assert [b["element"]["max_length"] for b in inputs] == [3000, 3000]
    assert [b.get("optional", False) for b in inputs] == [False, True]
    values = {b["block_id"]: {"value": {"value": b["element"]["initial_value"]}} for b in inputs}
    edits = recipes.check_edit(values, Limits(), n=1, size="2K", joins=boxes.joins)
    assert edits.prompt == prompt


def test_a_joined_prompt_over_the_model_limit_is_refused_on_the_first_box() -> None:
    values = {"prompt": {"value": {"value": "a" * 30}}, "prompt_2": {"value": {"value": "b" * 30}}}
    with pytest.raises(recipes.EditError) as caught:
        recipes.check_edit(values, Limits(prompt_max=50), n=1, size="2K", joins=[" "])
    assert caught.value.errors == {"prompt": "At most 50 characters (this is 61)."}
