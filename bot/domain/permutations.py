"""Prompt permutations: `a {red|blue} fox in {snow|rain}` is one request per combination (pure).

The rules, in the order they are applied:

- `\\{`, `\\}` and `\\|` stand for the literal character (the backslash is dropped), in any prompt.
- A group is a pair of braces holding at least one `|`: `{red|blue}`. Its options are trimmed; an empty
  option means "without it" (`a {big|} fox` is "a big fox" and "a fox"), shown as "(none)" in labels. A
  group whose options are all empty (`{|}`) is refused.
- Braces without a `|` inside are plain text, kept as written: `{red}` and `{"style": 1}` change nothing.
- Groups cannot nest, and cannot sit inside other braces (`{a|{b|c}}`, `{x {a|b}}`): refused.
- When the text holds a `|` and a brace that is not closed or not opened, it is refused as unbalanced
  (a forgotten `}` must not generate the braces as text); without any `|` stray braces are plain text.
- Groups may sit anywhere, flags included: `--ar {1:1|16:9}` varies the aspect ratio. Every combination
  is then a whole request text that is validated on its own; flags outside groups apply to all of them.
- Combinations are the cartesian product of the groups, first group varying slowest, numbered from 1.
  At most MAX_COMBINATIONS: the count is computed before any combination is built.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from bot.domain.errors import CapReachedError
from bot.domain.quotas import QuotaPolicy, Usage

MAX_COMBINATIONS = 8
"""The most combinations one `/imagine` may make (each is a job with its own status message)."""
NONE_LABEL = "(none)"
"""How an empty option appears in a variant's label."""

_ESCAPES = {"\\{": "{", "\\}": "}", "\\|": "|"}
_ESCAPED = re.compile(r"\\[{}|]")
# Private-use characters stand in for escaped ones while the braces are matched.
_HIDDEN = {"{": "\ue000", "}": "\ue001", "|": "\ue002"}
_SHOWN = {hidden: char for char, hidden in _HIDDEN.items()}


class PermutationError(ValueError):
    """The braces cannot be expanded; the message says why and how to fix it (safe to show)."""


@dataclass(frozen=True)
class Variant:
    """One combination: its number (from 1), the option chosen in each group, and its request text."""

    number: int
    choices: tuple[str, ...]
    text: str

    @property
    def options(self) -> str:
        """'red, rain': the chosen options (an empty option shown as "(none)")."""
        return ", ".join(choice or NONE_LABEL for choice in self.choices)

    @property
    def label(self) -> str:
        """'2 · red, rain': the number and the chosen options."""
        return f"{self.number} · {self.options}"


@dataclass(frozen=True)
class Expansion:
    """A prompt with groups: the text as written and its combinations in order."""

    template: str
    groups: tuple[tuple[str, ...], ...]
    variants: tuple[Variant, ...]


def _hide_escapes(text: str) -> str:
    return _ESCAPED.sub(lambda match: _HIDDEN[_ESCAPES[match.group()]], text)


def _show(text: str) -> str:
    return "".join(_SHOWN.get(char, char) for char in text)


def unescape(text: str) -> str:
    """The text with `\\{`, `\\}` and `\\|` turned into the literal characters."""
    return _show(_hide_escapes(text))


def _pairs(text: str) -> tuple[list[tuple[int, int, int]], list[int]]:
    """Matched brace pairs as (open, close, depth) and the positions of unmatched braces."""
    opened: list[int] = []
    pairs: list[tuple[int, int, int]] = []
    stray: list[int] = []
    for position, char in enumerate(text):
        if char == "{":
            opened.append(position)
        elif char == "}":
            if opened:
                start = opened.pop()
                pairs.append((start, position, len(opened)))
            else:
                stray.append(position)
    return sorted(pairs), sorted(stray + opened)


def combination_count(groups: tuple[tuple[str, ...], ...]) -> int:
    """The product of the groups' option counts (computed before any combination is built)."""
    return math.prod(len(options) for options in groups)


def expand(text: str, *, limit: int = MAX_COMBINATIONS) -> Expansion | None:
    """The combinations of `text`, or None when it has no group (a plain prompt: use `unescape`).
    Raises PermutationError for nesting, unbalanced braces, empty groups or more than `limit`."""
    hidden = _hide_escapes(text)
    pairs, stray = _pairs(hidden)
    groups = [(start, end) for start, end, _ in pairs if "|" in _direct_content(hidden, start, end, pairs)]
    if stray and "|" in hidden:
        where = hidden[max(0, stray[0] - 15) : stray[0] + 15]
        raise PermutationError(
            f"A brace near “{_show(where).strip()}” is not closed or not opened. Write options as "
            "`{red|blue}`; for a literal brace or bar write `\\{`, `\\}` or `\\|`."
        )
    if not groups:
        return None
    for start, end in groups:
        inside = [p for p in pairs if start < p[0] < end or p[0] < start < p[1]]
        if inside:
            raise PermutationError(
                f"Braces inside braces (near “{_show(hidden[start : end + 1])}”) are not supported: "
                "give each group its own braces, like `a {red|blue} fox in {snow|rain}`."
            )
    options: list[tuple[str, ...]] = []
    for start, end in groups:
        choices = tuple(_show(option).strip() for option in hidden[start + 1 : end].split("|"))
        if not any(choices):
            raise PermutationError(
                f"`{_show(hidden[start : end + 1])}` has no options: put words between the bars."
            )
        options.append(choices)
    count = combination_count(tuple(options))
    if count > limit:
        shapes = " × ".join(str(len(choices)) for choices in options)
        raise PermutationError(
            f"`{text.strip()[:200]}` makes {count} combinations ({shapes}); Dreamboard runs at most "
            f"{limit} at once. Remove some options, or split it into several commands."
        )
    pieces: list[str] = []
    cursor = 0
    for start, end in groups:
        pieces.append(_show(hidden[cursor:start]))
        cursor = end + 1
    tail = _show(hidden[cursor:])
    variants = []
    for number, chosen in enumerate(itertools.product(*options), start=1):
        body = "".join(piece + choice for piece, choice in zip(pieces, chosen, strict=True)) + tail
        variants.append(Variant(number, chosen, body))
    return Expansion(text, tuple(options), tuple(variants))


def _direct_content(text: str, start: int, end: int, pairs: list[tuple[int, int, int]]) -> str:
    """What a pair holds outside any pair inside it."""
    inner = [(s, e) for s, e, _ in pairs if start < s and e < end]
    kept = [char for position, char in enumerate(text[start + 1 : end], start=start + 1)
            if not any(s <= position <= e for s, e in inner)]  # fmt: skip
    return "".join(kept)


class QueueRoomError(CapReachedError):
    """A set needs more places in the user's queue than are free (MAX_QUEUED_PER_USER): none is taken."""

    def __init__(self, room: int, needed: int) -> None:
        super().__init__(needed - room)
        self.room = room
        self.needed = needed

    def __str__(self) -> str:
        room = f"room for {self.room} more" if self.room else "no room for more"
        return (
            f":hourglass: These {self.needed} combinations are {self.needed} jobs, and your queue has {room} "
            "right now, so none was queued. Try again when some of your jobs have finished, or use fewer "
            "options."
        )


def quota_refusal(
    policy: QuotaPolicy, usage: Usage, costs: Sequence[int], *, now: float, has_4k: bool = False
) -> str | None:
    """Why a set whose combinations cost `costs` (weighted images each; `has_4k` when some are 4K) does
    not fit today's quota, naming how many of its first combinations would; None when the whole set fits."""
    total = sum(costs)
    tightest = policy.tightest(usage)
    if tightest is None or total <= tightest[0]:
        return None
    left, cap, whose = tightest
    if left == 0:
        return policy.used_up(cap, whose, now=now)
    reset = policy.reset_phrase(now)
    fits = len(list(itertools.takewhile(lambda spent: spent <= left, itertools.accumulate(costs))))
    weight = f" (a 4K image counts as {policy.weight_4k})" if has_4k and policy.weight_4k > 1 else ""
    unit = "image" if left == 1 else "images"
    if fits == 0:
        hint = "not even the first would fit: lower `--n` or `--size`"
    else:
        first = "only the first" if fits == 1 else f"the first {fits}"
        hint = f"{first} would fit: remove some options or lower `--n`"
    return (
        f":no_entry: These {len(costs)} combinations need {total} images{weight} but {whose} {left} {unit} "
        f"left today; {hint}. Nothing was queued; the quota {reset}."
    )
