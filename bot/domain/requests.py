"""Parsing `/imagine` text ("<prompt> --flag value …") into a validated GenerationRequest."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

ASPECT_RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "match_input_image")
SIZES = ("2K", "4K")
MAX_IMAGES = 4
DEFAULT_SEED_RANGE = (0, 2_147_483_647)
DEFAULT_PROMPT_MAX = 4000

USAGE = "/imagine <prompt> [--ar 16:9] [--size 2K|4K] [--seed N] [--n 1-4] [--model MODEL_ID]"
_SWITCHES = frozenset({"fresh"})

_FLAG_ALIASES = {
    "ar": "ar",
    "aspect": "ar",
    "size": "size",
    "seed": "seed",
    "n": "n",
    "model": "model",
}
# Slack clients turn a typed "--" into an em or en dash; accept those as flag prefixes too.
_FLAG = re.compile(r"^(?:--|—|–)([A-Za-z][\w-]*)(?:=(.*))?$")
_MODEL_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
_SLACK_ESCAPE = re.compile(r"<([^<>]*)>")


class RequestError(ValueError):
    """The user's text is not a valid request; the message is safe to show them."""


class GenerationRequest(BaseModel):
    """What the user asked for, before the model's schema is applied."""

    model_config = ConfigDict(frozen=True)

    prompt: str
    aspect_ratio: str | None = None
    size: str | None = None
    seed: int | None = None
    n: int = 1
    model: str | None = None
    fresh: bool = False


@dataclass(frozen=True)
class Limits:
    """Bounds taken from the model's live schema (defaults when the schema says nothing)."""

    prompt_max: int = DEFAULT_PROMPT_MAX
    seed_range: tuple[int, int] = DEFAULT_SEED_RANGE
    sizes: tuple[str, ...] = SIZES


def unescape_slack(text: str) -> str:
    """Turn Slack's `<@U…>`, `<#C…|name>`, `<https://…|label>` and entities back into readable text."""

    def readable(match: re.Match[str]) -> str:
        inner = match.group(1)
        target, _, label = inner.partition("|")
        if target.startswith("@"):
            return f"@{label}" if label else target
        if target.startswith("#"):
            return f"#{label}" if label else target
        if target.startswith("!"):
            if label:
                return label
            return "@" + target[1:].split("^")[0]
        return label or target

    text = _SLACK_ESCAPE.sub(readable, text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def parse_request(text: str, limits: Limits | None = None) -> GenerationRequest:
    """Parse `/imagine` text; raises RequestError with a user-facing explanation."""
    limits = limits or Limits()
    words: list[tuple[int, str]] = []
    values: dict[str, str] = {}
    lines = [line.split() for line in unescape_slack(text).splitlines()]
    tokens = [(number, token) for number, line in enumerate(lines) for token in line]
    index = 0
    while index < len(tokens):
        line_number, token = tokens[index]
        index += 1
        match = _FLAG.match(token)
        if match is None:
            words.append((line_number, token))
            continue
        name = match.group(1).lower()
        if name in _SWITCHES and match.group(2) is None:
            values[name] = "yes"
            continue
        flag = _FLAG_ALIASES.get(name)
        if flag is None:
            raise RequestError(
                f"Unknown flag `--{name}`. Known flags: --ar, --size, --seed, --n, --model, --fresh."
            )
        if flag in values:
            raise RequestError(f"`--{name}` is given twice; keep one.")
        value = match.group(2)
        if value is None:
            if index >= len(tokens) or _FLAG.match(tokens[index][1]):
                raise RequestError(f"`--{name}` needs a value, for example `{_EXAMPLES[flag]}`.")
            value = tokens[index][1]
            index += 1
        values[flag] = value
    prompt = "\n".join(
        " ".join(word for number, word in words if number == line) for line in sorted({n for n, _ in words})
    )
    if not prompt:
        raise RequestError("The prompt is empty: describe the image before the flags.")
    if len(prompt) > limits.prompt_max:
        raise RequestError(
            f"The prompt is {len(prompt):,} characters; this model accepts at most {limits.prompt_max:,}."
        )
    request = GenerationRequest(
        prompt=prompt,
        aspect_ratio=_aspect_ratio(values["ar"]) if "ar" in values else None,
        size=_size(values["size"], limits.sizes) if "size" in values else None,
        seed=_seed(values["seed"], limits.seed_range) if "seed" in values else None,
        n=_count(values["n"]) if "n" in values else 1,
        model=_model(values["model"]) if "model" in values else None,
        fresh="fresh" in values,
    )
    last_seed = (request.seed or 0) + request.n - 1
    if request.seed is not None and last_seed > limits.seed_range[1]:
        raise RequestError(
            f"`--seed {request.seed}` with `--n {request.n}` needs seeds up to {last_seed}; "
            f"the largest seed is {limits.seed_range[1]}."
        )
    return request


_EXAMPLES = {
    "ar": "--ar 16:9",
    "size": "--size 4K",
    "seed": "--seed 42",
    "n": "--n 2",
    "model": "--model bytedance-seedream-4-5",
}


def _aspect_ratio(value: str) -> str:
    normalised = value.lower().replace("x", ":")
    if normalised not in ASPECT_RATIOS:
        raise RequestError(f"`--ar {value}` is not supported. Use one of: {', '.join(ASPECT_RATIOS)}.")
    return normalised


def _size(value: str, sizes: tuple[str, ...]) -> str:
    size = value.upper()
    if size not in sizes:
        raise RequestError(f"`--size {value}` is not supported. Use {' or '.join(sizes)}.")
    return size


def _seed(value: str, seed_range: tuple[int, int]) -> int:
    low, high = seed_range
    try:
        seed = int(value, 10)
    except ValueError:
        raise RequestError(f"`--seed {value}` must be a whole number from {low} to {high}.") from None
    if not low <= seed <= high:
        raise RequestError(f"`--seed {value}` is out of range: use a whole number from {low} to {high}.")
    return seed


def _count(value: str) -> int:
    try:
        count = int(value, 10)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_IMAGES:
        raise RequestError(f"`--n {value}`: ask for 1 to {MAX_IMAGES} images.")
    return count


def _model(value: str) -> str:
    if not _MODEL_ID.match(value):
        raise RequestError(f"`--model {value}` is not an Oxen model id (like `bytedance-seedream-4-5`).")
    return value
