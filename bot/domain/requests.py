"""Parsing `/imagine` text ("<prompt> --flag value …") into a validated GenerationRequest."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

ASPECT_RATIOS = ("1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "match_input_image")
SIZES = ("2K", "4K")
MAX_IMAGES = 4
DEFAULT_SEED_RANGE = (0, 2_147_483_647)
DEFAULT_PROMPT_MAX = 4000
DEFAULT_MAX_REFERENCES = 10

# Slack clients turn a typed "--" into an em or en dash; accept those as flag prefixes too.
_FLAG = re.compile(r"^(?:--|—|–)([A-Za-z][\w-]*)(?:=(.*))?$")
_MODEL_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
_SLACK_ESCAPE = re.compile(r"<([^<>]*)>")


class RequestError(ValueError):
    """The user's text is not a valid request; the message is safe to show them."""


class GenerationRequest(BaseModel):
    """What the user asked for, before the model's schema is applied."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str
    aspect_ratio: str | None = None
    size: str | None = None
    seed: int | None = None
    n: int = 1
    model: str | None = None
    fresh: bool = False
    nokit: bool = False


@dataclass(frozen=True)
class Limits:
    """Bounds taken from the model's live schema (defaults when the schema says nothing)."""

    prompt_max: int = DEFAULT_PROMPT_MAX
    seed_range: tuple[int, int] = DEFAULT_SEED_RANGE
    sizes: tuple[str, ...] = SIZES
    max_references: int = DEFAULT_MAX_REFERENCES
    """References the model takes, at most Dreamboard's limit of 10."""


@dataclass(frozen=True)
class Flag:
    """One `--flag` of `/imagine`: how it is spelled, read, explained, and whether recipes carry it."""

    name: str
    field: str
    """The GenerationRequest field it sets (a Job attribute of the same name when `carried`)."""
    carried: bool
    """Whether a job keeps it, so Reroll, Vary, 4K, Replay and Edit carry it over from the job."""
    help: str
    parse: Callable[[str, Limits], object] | None = None
    """Reads a value; None for a switch, which takes no value."""
    placeholder: str = ""
    """What the usage line shows as its value."""
    example: str = ""
    """A value for the "needs a value" error."""
    aliases: tuple[str, ...] = ()

    def render(self, value: object) -> str | None:
        """The text that gives `value` back when parsed, or None for the field's default."""
        if value == GenerationRequest.model_fields[self.field].default:
            return None
        return f"--{self.name}" if self.parse is None else f"--{self.name} {value}"


def _aspect_ratio(value: str, _: Limits) -> str:
    normalised = value.lower().replace("x", ":")
    if normalised not in ASPECT_RATIOS:
        raise RequestError(f"`--ar {value}` is not supported. Use one of: {', '.join(ASPECT_RATIOS)}.")
    return normalised


def _size(value: str, limits: Limits) -> str:
    size = value.upper()
    if size not in limits.sizes:
        raise RequestError(f"`--size {value}` is not supported. Use {' or '.join(limits.sizes)}.")
    return size


def _seed(value: str, limits: Limits) -> int:
    low, high = limits.seed_range
    try:
        seed = int(value, 10)
    except ValueError:
        raise RequestError(f"`--seed {value}` must be a whole number from {low} to {high}.") from None
    if not low <= seed <= high:
        raise RequestError(f"`--seed {value}` is out of range: use a whole number from {low} to {high}.")
    return seed


def _count(value: str, _: Limits) -> int:
    try:
        count = int(value, 10)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_IMAGES:
        raise RequestError(f"`--n {value}`: ask for 1 to {MAX_IMAGES} images.")
    return count


def _model(value: str, _: Limits) -> str:
    if not _MODEL_ID.match(value):
        raise RequestError(f"`--model {value}` is not an Oxen model id (like `bytedance-seedream-4-5`).")
    return value


FLAGS: tuple[Flag, ...] = (
    # name, field, carried, help, parse, placeholder, example
    Flag(
        "ar",
        "aspect_ratio",
        True,
        f"aspect ratio: {', '.join(ASPECT_RATIOS)}",
        _aspect_ratio,
        "16:9",
        "16:9",
        aliases=("aspect",),
    ),
    Flag("size", "size", True, " or ".join(SIZES), _size, "|".join(SIZES), "4K"),
    Flag("seed", "seed", True, "a whole number", _seed, "N", "42"),
    Flag("n", "n", True, f"1 to {MAX_IMAGES} images (seeds N, N+1, …)", _count, f"1-{MAX_IMAGES}", "2"),
    Flag("model", "model", True, "another Oxen image model id", _model, "MODEL_ID", "bytedance-seedream-4-5"),
    Flag("fresh", "fresh", False, "in a thread reply: start over, without the thread's earlier images"),
    Flag("nokit", "nokit", False, "leave out this channel's kit (its flags, style and pinned references)"),
)
"""The single flag table: the parser, the usage line, `/imagine help` and the recipes derive from it."""

# The usage line shows flags with values; switches (--fresh, --nokit) are listed by `/imagine help`.
USAGE = "/imagine <prompt> " + " ".join(f"[--{f.name} {f.placeholder}]" for f in FLAGS if f.parse)
_BY_NAME = {name: flag for flag in FLAGS for name in (flag.name, *flag.aliases)}
_KNOWN = ", ".join(f"--{flag.name}" for flag in FLAGS)


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
        flag = _BY_NAME.get(name)
        if flag is None:
            raise RequestError(f"Unknown flag `--{name}`. Known flags: {_KNOWN}.")
        if flag.name in values:
            raise RequestError(f"`--{name}` is given twice; keep one.")
        value = match.group(2)
        if flag.parse is None:
            if value is not None:
                raise RequestError(f"`--{name}` takes no value.")
            values[flag.name] = ""
            continue
        if value is None:
            if index >= len(tokens) or _FLAG.match(tokens[index][1]):
                raise RequestError(f"`--{name}` needs a value, for example `--{flag.name} {flag.example}`.")
            value = tokens[index][1]
            index += 1
        values[flag.name] = value
    prompt = "\n".join(
        " ".join(word for number, word in words if number == line) for line in sorted({n for n, _ in words})
    )
    if not prompt:
        raise RequestError("The prompt is empty: describe the image before the flags.")
    if len(prompt) > limits.prompt_max:
        raise RequestError(
            f"The prompt is {len(prompt):,} characters; this model accepts at most {limits.prompt_max:,}."
        )
    fields = {
        flag.field: True if flag.parse is None else flag.parse(values[flag.name], limits)
        for flag in FLAGS
        if flag.name in values
    }
    request = GenerationRequest.model_validate({"prompt": prompt, **fields})
    last_seed = (request.seed or 0) + request.n - 1
    if request.seed is not None and last_seed > limits.seed_range[1]:
        raise RequestError(
            f"`--seed {request.seed}` with `--n {request.n}` needs seeds up to {last_seed}; "
            f"the largest seed is {limits.seed_range[1]}."
        )
    return request


def request_text(request: GenerationRequest) -> str:
    """The `/imagine` text (without the command) that parses back to `request`."""
    flags = (flag.render(getattr(request, flag.field)) for flag in FLAGS)
    return " ".join([request.prompt, *(text for text in flags if text)])


PROMPT_BOX_MAX = 3000
"""The most a Slack plain_text_input holds: its `max_length` takes 1 to 3000
(https://docs.slack.dev/reference/block-kit/block-elements/plain-text-input-element)."""
_LONGEST_JOIN = 40
_WHITESPACE_RUN = re.compile(r"\s+")


@dataclass(frozen=True)
class PromptBoxes:
    """A prompt cut into input boxes of at most `box` characters, and the whitespace each cut removed
    (`joins[i]` goes between `parts[i]` and `parts[i + 1]`), so join_prompt gives the prompt back."""

    parts: tuple[str, ...]
    joins: tuple[str, ...]


def prompt_box_size(limits: Limits) -> int:
    """How much one Edit-modal prompt box holds: Slack's input limit or the model's prompt limit."""
    return max(1, min(PROMPT_BOX_MAX, limits.prompt_max))


def split_prompt(prompt: str, box: int) -> PromptBoxes:
    """Cut `prompt` into parts of at most `box` characters at the last whitespace that fits (kept in
    `joins`; a run longer than 40 characters is kept as its first 40), or mid-word when a part has
    none. Parts never start or end with whitespace, so Slack trimming a value changes nothing."""
    parts: list[str] = []
    joins: list[str] = []
    rest = prompt.strip()
    while len(rest) > box:
        starts = [run.start() for run in _WHITESPACE_RUN.finditer(rest, 1, box + 1)]
        cut = _WHITESPACE_RUN.match(rest, starts[-1]) if starts else None
        if cut is not None:
            parts.append(rest[: cut.start()])
            joins.append(cut.group()[:_LONGEST_JOIN])
            rest = rest[cut.end() :]
        else:
            parts.append(rest[:box])
            joins.append("")
            rest = rest[box:]
    parts.append(rest)
    return PromptBoxes(tuple(parts), tuple(joins))


def join_prompt(parts: Sequence[str], joins: Sequence[str]) -> str:
    """The prompt from (possibly edited) boxes: each stripped, empty ones left out, neighbours joined
    with the whitespace their cut removed (a space where that is unknown)."""
    prompt = ""
    for index, part in enumerate(parts):
        text = part.strip()
        if not text:
            continue
        if prompt:
            prompt += joins[index - 1] if 0 < index <= len(joins) else " "
        prompt += text
    return prompt
