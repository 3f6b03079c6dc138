"""Usage statistics for `/imagine usage`: rankings, failure rate, time to image, days and spend.

Definitions (the report and README use the same words):

- *Images* are counted by the quota rule (`Store.quota_usage`): every image of a queued or running job,
  and every image submitted to Oxen or succeeded. Each counts once here (Oxen's market price is per image
  whatever its size); only the quota weights 4K images.
- *Days* are calendar days in QUOTA_TIMEZONE. "Today" starts at the last midnight there, "the last 7
  days" are today and the 6 days before it.
- *Failure rate* = failed images ÷ finished images. Finished images are the counted images of jobs that
  ended uploaded or failed (a cancelled job is left out: someone stopped it, nothing failed). A finished
  image failed unless its job was uploaded and the image itself succeeded.
- *Time to image* is per uploaded job: from `created_at` (the job stored, as the Slack request was
  accepted) to `finished_at` (its images shared in Slack, just before the result card).
- *Median* is the middle value (the mean of the two middle ones for an even count); *p95* is the
  nearest-rank percentile: the ⌈0.95 × n⌉-th smallest value.

Pure logic: the store counts, the caller passes the time and zone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

from bot.domain.days import start_of_day

WEEK_DAYS = 7
CHART_DAYS = 14
TOP = 10
"""How many users or channels a ranking shows before "and K others"."""


@dataclass(frozen=True)
class Tally:
    """One user's or channel's images today and in the last 7 days."""

    key: str
    today: int
    week: int


@dataclass(frozen=True)
class Ranking:
    """The largest counts first (ties by key), the first `TOP` shown and the rest summed up."""

    shown: tuple[tuple[str, int], ...]
    others: int
    """How many keys were left out."""
    others_images: int
    """Their images together."""


@dataclass(frozen=True)
class Outcomes:
    """Finished and failed images (see the module docstring)."""

    finished: int
    failed: int

    @property
    def rate(self) -> float | None:
        """Failed ÷ finished; None when nothing finished."""
        return self.failed / self.finished if self.finished else None


@dataclass(frozen=True)
class Timing:
    """Median and p95 time to image, in seconds, over `count` uploaded jobs."""

    count: int
    median: float | None
    p95: float | None


def rank(counts: Sequence[tuple[str, int]], top: int = TOP) -> Ranking:
    """Order (key, images) by images, most first, then key; keep `top`, sum the rest. Zero counts drop."""
    ordered = sorted(((key, n) for key, n in counts if n > 0), key=lambda item: (-item[1], item[0]))
    rest = ordered[top:]
    return Ranking(tuple(ordered[:top]), len(rest), sum(n for _, n in rest))


def rankings(tallies: Sequence[Tally], top: int = TOP) -> tuple[Ranking, Ranking]:
    """Today's ranking and the last 7 days' ranking of the same tallies."""
    return (
        rank([(t.key, t.today) for t in tallies], top),
        rank([(t.key, t.week) for t in tallies], top),
    )


def median(values: Sequence[float]) -> float | None:
    """The middle value (mean of the two middle ones for an even count); None for no values."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return None
    middle = n // 2
    return ordered[middle] if n % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def percentile(values: Sequence[float], share: float) -> float | None:
    """Nearest-rank percentile: the ⌈share × n⌉-th smallest value (share in (0, 1]); None for no values."""
    if not 0 < share <= 1:
        raise ValueError("share must be in (0, 1]")
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[max(math.ceil(share * len(ordered)), 1) - 1]


def timing(seconds: Sequence[float]) -> Timing:
    """Median and p95 of the times to image."""
    return Timing(len(seconds), median(seconds), percentile(seconds, 0.95))


def day_starts(now: float, tz: tzinfo, days: int) -> list[float]:
    """Unix times of the midnights that start the last `days` calendar days in `tz`, oldest first; the
    last one starts today. Days are calendar days, so one across a DST change is 23 or 25 hours long."""
    today = datetime.fromtimestamp(start_of_day(now, tz), tz).date()
    starts = []
    for back in range(days - 1, -1, -1):
        day = today - timedelta(days=back)
        starts.append(datetime(day.year, day.month, day.day, tzinfo=tz).timestamp())
    return starts


def day_labels(starts: Sequence[float], tz: tzinfo) -> list[str]:
    """ "Mon 23" style labels for day starts (the chart's axis)."""
    return [datetime.fromtimestamp(start, tz).strftime("%a %d") for start in starts]


def per_day(starts: Sequence[float], counted: dict[float, int]) -> list[int]:
    """Images for every day start, 0 for a day the store found nothing on."""
    return [counted.get(start, 0) for start in starts]


def spend(images: int, price: float) -> float:
    """Estimated Oxen spend: images × the configured price per image (US$)."""
    return images * price


def duration(seconds: float | None) -> str:
    """'42 s', '3 min 5 s', '1 h 2 min'; '–' when unknown."""
    if seconds is None:
        return "–"
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


@dataclass(frozen=True)
class PersonalUsage:
    """One person's last 7 days (their quota line for today comes from domain/quotas.py)."""

    week_images: int
    outcomes: Outcomes
    timing: Timing


@dataclass(frozen=True)
class WorkspaceUsage:
    """The workspace report: rankings today and over the last 7 days, failures, timing and spend."""

    zone: str
    users_today: Ranking
    users_week: Ranking
    channels_today: Ranking
    channels_week: Ranking
    today_images: int
    week_images: int
    outcomes: Outcomes
    timing: Timing
    price: float
    """OXEN_PRICE_PER_IMAGE, US$."""
