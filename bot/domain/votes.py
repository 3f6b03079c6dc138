"""Vote-to-pick rules (pure): which reaction votes for which image, vote durations, digest periods and
the ranking order.

Reaction names, as Slack sends them in `reaction_added` / `reaction_removed`: the thumbs-up is `+1`
(`thumbsup` is its alias, the name the event's documentation example shows, slack.md §3.3), and an
emoji with a skin tone is named `<base>::skin-tone-<2…6>` (docs.slack.dev/reference/methods/reactions.add).
The keycaps 1️⃣–4️⃣ are `one` … `four`.

What a reaction means on a result with `n` images:
- single image: 👍 (any skin tone) and 1️⃣ vote for it;
- several images: 1️⃣–4️⃣ vote for that image; 👍 is not a vote (it would not say which image), and
  neither is a number beyond `n`: both get a hint (see `VoteHint`).
Votes are counted per person and image: one person's 👍 and 1️⃣ on the same single image are one vote.
The author's own reaction counts like anyone's, so the count is the one Slack shows beside the message.

On a permutation set's contact sheet, the keycaps 1️⃣–🔟 (`one` … `nine`, `keycap_ten`) vote for that
tile's image, as if on its result (`read_sheet_reaction`); 👍 there does not say which tile.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from enum import StrEnum

from bot.domain.days import start_of_day

THUMBS_UP = frozenset({"+1", "thumbsup"})
NUMBERS = {"one": 0, "two": 1, "three": 2, "four": 3}
"""Keycap reaction names and the image index (0-based) they vote for."""
SHEET_NUMBERS = {
    name: index
    for index, name in enumerate(
        ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "keycap_ten")
    )
}
"""Keycap reaction names on a contact sheet and the tile index (0-based) they vote for."""
_SKIN_TONE = re.compile(r"::skin-tone-[2-6]$")

MIN_DURATION = 60
MAX_DURATION = 7 * 86400
_DURATION = re.compile(r"^(\d{1,6})([smhd])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

DEFAULT_TOP = 5
MAX_TOP = 10


class VoteHint(StrEnum):
    """Why a voting reaction on a result did not count (the reacting person is told, once per message)."""

    PICK_A_NUMBER = "pick_a_number"
    """👍 on a result with several images."""
    NO_SUCH_IMAGE = "no_such_image"
    """A number beyond the result's image count."""


@dataclass(frozen=True)
class Ballot:
    """A reaction that votes for image `idx` of the result it is on."""

    idx: int


def base_reaction(reaction: str) -> str:
    """The reaction's name without a skin-tone modifier."""
    return _SKIN_TONE.sub("", reaction)


def is_voting_reaction(reaction: str) -> bool:
    """Whether the reaction could be a vote at all (every other reaction is ignored, at no cost)."""
    base = base_reaction(reaction)
    return base in THUMBS_UP or base in SHEET_NUMBERS


def read_reaction(reaction: str, image_count: int) -> Ballot | VoteHint | None:
    """What `reaction` on a result with `image_count` images means: a ballot, a hint to give, or None
    (not a voting reaction)."""
    base = base_reaction(reaction)
    if base in THUMBS_UP:
        return Ballot(0) if image_count == 1 else VoteHint.PICK_A_NUMBER
    if base in NUMBERS:
        idx = NUMBERS[base]
        return Ballot(idx) if idx < image_count else VoteHint.NO_SUCH_IMAGE
    return None


def read_sheet_reaction(reaction: str, voteable: Sequence[bool]) -> Ballot | VoteHint | None:
    """What `reaction` on a contact sheet means, where `voteable[i]` says whether tile i + 1 shows an
    image: a ballot for that tile (its index), a hint to give, or None (not a voting reaction)."""
    base = base_reaction(reaction)
    if base in THUMBS_UP:
        return VoteHint.PICK_A_NUMBER
    if base in SHEET_NUMBERS:
        tile = SHEET_NUMBERS[base]
        return Ballot(tile) if tile < len(voteable) and voteable[tile] else VoteHint.NO_SUCH_IMAGE
    return None


class DurationError(ValueError):
    """A vote duration that cannot be used; the message says which forms work."""


DURATION_HELP = "Durations are minutes, hours or days from 1m to 7d, like `15m`, `90m`, `2h` or `1d`."


def looks_like_duration(word: str) -> bool:
    """Whether `word` is written like a duration (a number and a unit), valid or not."""
    return _DURATION.match(word.lower()) is not None


def parse_duration(word: str) -> int:
    """Seconds in `15m`, `2h`, `1d`, `90m` (from 1 minute to 7 days); raises DurationError."""
    match = _DURATION.match(word.lower())
    if match is None:
        raise DurationError(f"`{word}` is not a duration. {DURATION_HELP}")
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if match.group(2) == "s" or seconds < MIN_DURATION:
        raise DurationError(f"A vote lasts at least 1 minute. {DURATION_HELP}")
    if seconds > MAX_DURATION:
        raise DurationError(f"A vote lasts at most 7 days. {DURATION_HELP}")
    return seconds


def describe_duration(seconds: int) -> str:
    """`15 min`, `2 h`, `1 d 6 h` (what an announcement says)."""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [f"{value} {unit}" for value, unit in ((days, "d"), (hours, "h"), (minutes, "min")) if value]
    return " ".join(parts) or "1 min"


class Period(StrEnum):
    """The window of `/imagine top`: results made today, in the last 7 days, or ever."""

    TODAY = "today"
    WEEK = "week"
    ALL = "all"

    def since(self, now: float, tz: tzinfo) -> float:
        """Unix time the window starts at: today's midnight in `tz`; for a week, the midnight six days
        before it (today and the six days before); for all, 0."""
        if self is Period.ALL:
            return 0.0
        midnight = start_of_day(now, tz)
        if self is Period.TODAY:
            return midnight
        # Aware datetime arithmetic is on the wall clock: six days back is midnight again, DST or not.
        return (datetime.fromtimestamp(midnight, tz) - timedelta(days=6)).timestamp()

    @property
    def phrase(self) -> str:
        """How the digest names the window."""
        return {Period.TODAY: "today", Period.WEEK: "in the last 7 days", Period.ALL: "of all time"}[self]


@dataclass(frozen=True)
class Tally:
    """One image's votes, as ranked: more votes first, then the earlier result, then the lower index."""

    job_id: str
    idx: int
    votes: int
    created_at: float

    @property
    def order(self) -> tuple[int, float, str, int]:
        """The ranking key (ascending)."""
        return (-self.votes, self.created_at, self.job_id, self.idx)


def rank(tallies: list[Tally], limit: int) -> list[Tally]:
    """The `limit` best images, ties broken by the earliest result (then by image index)."""
    return sorted((t for t in tallies if t.votes > 0), key=lambda t: t.order)[:limit]


@dataclass(frozen=True)
class VoteRound:
    """A timed vote on the results of one thread (`vote_rounds`)."""

    id: int
    team_id: str
    channel_id: str
    thread_ts: str
    opened_by: str
    request_key: str
    opened_at: float
    deadline: float
    announce_ts: str | None
    closed_at: float | None
    result_ts: str | None
