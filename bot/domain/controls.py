"""The controls people act with: button actions, their values, and the single reaction table."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Action(StrEnum):
    """What a button or reaction asks for."""

    REROLL = "reroll"
    VARY = "vary"
    UPSCALE = "upscale"
    EDIT = "edit"
    RECIPE = "recipe"
    DM_RECIPE = "dm_recipe"
    CANCEL_OR_DELETE = "cancel_or_delete"
    FAVOURITE = "favourite"
    REPLAY = "replay"
    REPLAY_NEW_SEED = "replay_new_seed"
    HISTORY_PAGE = "history_page"


REACTIONS: dict[str, Action] = {
    "repeat": Action.REROLL,
    "arrows_counterclockwise": Action.REROLL,
    "twisted_rightwards_arrows": Action.VARY,
    "arrow_up": Action.UPSCALE,
    "envelope": Action.DM_RECIPE,
    "email": Action.DM_RECIPE,
    "x": Action.CANCEL_OR_DELETE,
}
"""The single reaction table (also listed in the README and `/imagine help`)."""


@dataclass(frozen=True)
class Target:
    """A job and one of its images, as a button value `job:index` names them."""

    job_id: str
    idx: int = 0

    @property
    def value(self) -> str:
        """The button value."""
        return f"{self.job_id}:{self.idx}"

    @classmethod
    def parse(cls, value: str) -> Target:
        """Read a button value (a bare job id means image 0)."""
        job_id, _, idx = value.partition(":")
        return cls(job_id, int(idx) if idx.isdigit() else 0)


PAGE_SIZE = 10
MAX_LISTED = 50
MAX_FILTER = 500
"""Characters of `/imagine history` filter text kept: the Next/Previous button carries the filter in its
value, which Slack caps at 2000 characters (slack.md §4, Buttons)."""


@dataclass(frozen=True)
class HistoryQuery:
    """What `/imagine history [N] [text]` asked for, and which page is shown."""

    total: int = PAGE_SIZE
    text: str = ""
    offset: int = 0

    def __post_init__(self) -> None:
        # Every page searches the same bounded text, so page 2 matches what page 1 promised.
        object.__setattr__(self, "text", self.text[:MAX_FILTER])

    @property
    def value(self) -> str:
        """Encoded for a Next/Previous button."""
        return f"{self.total}|{self.offset}|{self.text}"

    @classmethod
    def parse(cls, value: str) -> HistoryQuery:
        """Decode a Next/Previous button value."""
        total, offset, text = [*value.split("|", 2), "", "", ""][:3]
        return cls(min(int(total or PAGE_SIZE), MAX_LISTED), text, max(int(offset or 0), 0))
