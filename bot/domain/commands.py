"""What `/imagine <text>` asks for: a subcommand only when the text has exactly a subcommand's shape,
otherwise a prompt (pure; handlers/commands.py dispatches on the result).

The shapes (anything else is a prompt, so `/imagine show stoppers` or `/imagine history of rome`
generate):

- empty, `help`, `--help`: the help message;
- `show <job id>`, `seed <job id>`: a job id is exactly 10 hex digits;
- `seed <N> <prompt…>`: a prompt with `--seed N` (N all digits, a prompt after it);
- `history`, `history <N>`, `history export`, and `history <N> <text…>` with N from 1 to MAX_LISTED
  (a number outside that range followed by text is a prompt: `history 1984 propaganda poster`);
- `usage` alone: the caller's usage, or the workspace report for admins (`usage of colour` is a prompt).
- `kit`, `kit clear`, `kit unpin <N>` (N from 1 to MAX_PINS) and `kit set` followed by a flag: the
  channel's kit (`kit set` alone explains itself; `kit of tools` and `kit set the table on fire` are
  prompts).

A leading `--` (or the em or en dash Slack clients turn it into) forces the rest to be a prompt:
`/imagine -- show me the money`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.domain.controls import MAX_LISTED
from bot.domain.kits import MAX_PINS

JOB_ID = re.compile(r"^[0-9a-fA-F]{10}$")
FORCE_PROMPT = ("--", "—", "–")
"""A first word that makes the rest a prompt whatever it looks like."""
HELP_WORDS = frozenset({"", "help", "--help", "—help", "–help"})


@dataclass(frozen=True)
class Help:
    """Show the help message."""


@dataclass(frozen=True)
class Show:
    """`/imagine show <job id>`: repost a result card here."""

    job_id: str


@dataclass(frozen=True)
class Recipe:
    """`/imagine seed <job id>`: the recipe of a job."""

    job_id: str


@dataclass(frozen=True)
class History:
    """`/imagine history …`: `words` are what follows `history` (N, a filter, or `export`)."""

    words: tuple[str, ...]


@dataclass(frozen=True)
class UsageReport:
    """`/imagine usage`: the caller's images (today against the caps, last 7 days), or the admin report."""


@dataclass(frozen=True)
class KitShow:
    """`/imagine kit`: show the channel's kit."""


@dataclass(frozen=True)
class KitSet:
    """`/imagine kit set --flag value …`: `args` are the words after `set`, as typed."""

    args: str


@dataclass(frozen=True)
class KitClear:
    """`/imagine kit clear`: remove the channel's kit."""


@dataclass(frozen=True)
class KitUnpin:
    """`/imagine kit unpin <N>`: drop the N-th pinned reference (as `/imagine kit` numbers them)."""

    number: int


@dataclass(frozen=True)
class Prompt:
    """Generate: `text` is request text for parse_request (prompt and flags)."""

    text: str


@dataclass(frozen=True)
class UsageError:
    """The text has a subcommand's shape but cannot be carried out; `message` says how to fix it."""

    message: str


Command = (
    Help
    | Show
    | Recipe
    | History
    | UsageReport
    | KitShow
    | KitSet
    | KitClear
    | KitUnpin
    | Prompt
    | UsageError
)


def is_number(word: str) -> bool:
    """Whether `word` is written in ASCII digits only (`str.isdigit` also takes "²" and "١", which
    `int` refuses or reads as another number)."""
    return word.isascii() and word.isdigit()


def listed_count(word: str) -> int | None:
    """The N of `/imagine history N` when `word` is a number from 1 to MAX_LISTED, else None."""
    if not is_number(word) or len(word.lstrip("0")) > len(str(MAX_LISTED)):
        return None
    count = int(word)
    return count if 1 <= count <= MAX_LISTED else None


def parse_command(text: str) -> Command:
    """Classify `/imagine` text by its exact shape (see the module docstring)."""
    words = text.split()
    if not words or (len(words) == 1 and words[0].lower() in HELP_WORDS):
        return Help()
    first = words[0].lower()
    if words[0] in FORCE_PROMPT:
        return Prompt(text.strip()[len(words[0]) :].strip())
    if first in ("show", "seed") and len(words) == 2 and JOB_ID.match(words[1]):
        job_id = words[1].lower()
        return Show(job_id) if first == "show" else Recipe(job_id)
    if first == "seed" and words[1:2] and is_number(words[1]):
        if len(words) == 2:
            return UsageError(
                f"`/imagine seed {words[1]}` needs a prompt after the number, like "
                f"`/imagine seed {words[1]} a lighthouse at dusk`. To draw the words themselves, "
                f"write `/imagine -- seed {words[1]}`."
            )
        prompt = text.strip()[len(words[0]) :].strip()[len(words[1]) :].strip()
        return Prompt(f"{prompt} --seed {words[1]}")
    if first == "usage" and len(words) == 1:
        return UsageReport()
    if first == "kit":
        kit = _kit_command(text, words)
        if kit is not None:
            return kit
    if first == "history":
        rest = words[1:]
        if not rest or (len(rest) == 1 and (is_number(rest[0]) or rest[0].lower() == "export")):
            return History(tuple(word.lower() if word.lower() == "export" else word for word in rest))
        if listed_count(rest[0]) is not None:
            return History(tuple(rest))
    return Prompt(text)


def _kit_command(text: str, words: list[str]) -> Command | None:
    """The `kit …` shapes, or None when the text is a prompt that starts with "kit"."""
    rest = [word.lower() for word in words[1:]]
    if not rest:
        return KitShow()
    if rest == ["clear"]:
        return KitClear()
    if len(rest) == 2 and rest[0] == "unpin" and rest[1] in {str(n) for n in range(1, MAX_PINS + 1)}:
        return KitUnpin(int(rest[1]))
    if rest == ["set"]:
        return UsageError(
            'Say what the kit sets, like `/imagine kit set --ar 16:9 --size 2K --style "flat vector"`.'
        )
    if rest[0] == "set" and words[2].startswith(FORCE_PROMPT):
        return KitSet(text.strip()[len(words[0]) :].strip()[len(words[1]) :].strip())
    return None
