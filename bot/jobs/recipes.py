"""Recipes: the one place a stored job becomes a new request (Reroll, Vary, 4K, Replay and Edit).

Every flag a job keeps (`Flag.carried` in FLAGS) is copied from the job first, and each recipe then
states only what it changes, so a new flag is carried over by all of them without touching this file.
Pure: no Slack, no store, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bot.domain.requests import FLAGS, GenerationRequest, Limits, join_prompt
from bot.store.model import Job, JobImage


@dataclass(frozen=True)
class Recipe:
    """A new request made from a stored job, and the references it is made with."""

    request: GenerationRequest
    reference: JobImage | None = None
    """The job's image that is the only reference; None keeps the job's own references."""


class EditError(ValueError):
    """The Edit modal's values are not a valid request; `errors` are the texts by input block id."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{block}: {text}" for block, text in errors.items()))
        self.errors = errors


def _request(job: Job, **changes: object) -> GenerationRequest:
    """The job's prompt and every flag it keeps, with `changes` applied."""
    carried = {flag.field: getattr(job, flag.field) for flag in FLAGS if flag.carried}
    return GenerationRequest.model_validate({"prompt": job.prompt, **carried, **changes})


def reroll(job: Job) -> Recipe:
    """The same prompt, flags and references with a new seed."""
    return Recipe(_request(job, seed=None))


def vary(job: Job, image: JobImage) -> Recipe:
    """One new image from `image` of the job, with a new seed."""
    return Recipe(_request(job, seed=None, n=1, aspect_ratio="match_input_image"), image)


def upscale(job: Job, image: JobImage) -> Recipe:
    """`image` of the job again in 4K, from itself and with its own seed."""
    request = _request(job, seed=image.seed, n=1, size="4K", aspect_ratio="match_input_image")
    return Recipe(request, image)


def replay(job: Job, *, new_seed: bool) -> Recipe:
    """The job again, with its references and (unless `new_seed`) its seed."""
    return Recipe(_request(job, seed=None) if new_seed else _request(job))


PROMPT_BLOCK = "prompt"


def prompt_block_id(index: int) -> str:
    """The block id of the Edit modal's `index`-th prompt box (0: "prompt", then "prompt_2", …)."""
    return PROMPT_BLOCK if index == 0 else f"{PROMPT_BLOCK}_{index + 1}"


@dataclass(frozen=True)
class Edits:
    """The Edit modal's values, checked: what the new job changes."""

    prompt: str
    aspect_ratio: str | None
    size: str
    seed: int | None


def check_edit(
    values: Mapping[str, Any], limits: Limits, *, n: int, size: str, joins: Sequence[str] = ()
) -> Edits:
    """The Edit modal's values (Slack's `view.state.values`) checked against `limits` for a job of `n`
    images and `size`; pure, so the submission can be answered before any work. The prompt is every
    prompt box in order, joined with the whitespace `joins` recorded (see split_prompt). Raises
    EditError."""

    def value(block: str) -> str:
        element = (values.get(block) or {}).get("value") or {}
        selected = element.get("selected_option") or {}
        return str(selected.get("value") or element.get("value") or "").strip()

    errors: dict[str, str] = {}
    boxes: list[str] = []
    while prompt_block_id(len(boxes)) in values:
        boxes.append(value(prompt_block_id(len(boxes))))
    prompt = join_prompt(boxes, joins)
    if not prompt:
        errors[PROMPT_BLOCK] = "Describe the image."
    elif len(prompt) > limits.prompt_max:
        errors[PROMPT_BLOCK] = f"At most {limits.prompt_max:,} characters (this is {len(prompt):,})."
    size = value("size") or size
    if size not in limits.sizes:
        errors["size"] = f"Use {' or '.join(limits.sizes)}."
    seed: int | None = None
    if value("seed"):
        low, high = limits.seed_range
        try:
            seed = int(value("seed"))
        except ValueError:
            errors["seed"] = f"A whole number from {low} to {high}, or empty for a random seed."
        else:
            if not low <= seed <= high - n + 1:
                errors["seed"] = f"A whole number from {low} to {high - n + 1}, or empty for a random seed."
    if errors:
        raise EditError(errors)
    return Edits(prompt, value("aspect_ratio") or None, size, seed)


def apply_edit(job: Job, edits: Edits) -> Recipe:
    """The job with checked Edit-modal values applied, keeping its references."""
    return Recipe(
        _request(job, prompt=edits.prompt, aspect_ratio=edits.aspect_ratio, size=edits.size, seed=edits.seed)
    )


def edit(job: Job, values: Mapping[str, Any], limits: Limits, *, joins: Sequence[str] = ()) -> Recipe:
    """The job with the Edit modal's values applied, keeping its references; raises EditError."""
    return apply_edit(job, check_edit(values, limits, n=job.n, size=job.size, joins=joins))
