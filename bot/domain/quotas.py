"""Daily image quotas: what a job costs, what is left today, and when the day resets.

A job costs one unit per image, `weight_4k` per 4K image. What counts is decided by the store query
(`Store.quota_usage`): images paid or being paid, i.e. every image of a queued or running job and every
image that was submitted to Oxen or succeeded; a job that failed or was cancelled before submitting
anything costs nothing. Pure logic: the caller passes the usage and the time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo

from bot.domain.days import start_of_day
from bot.domain.errors import CapReachedError

WARN_ABOVE = 0.8
"""Past this share of a user's cap, the user is told how much is left."""


@dataclass(frozen=True)
class Usage:
    """Images counted today (weighted units) for the user and for the channel."""

    user: int
    channel: int


class QuotaExceededError(CapReachedError):
    """A job would take the user or the channel past today's cap: nothing was stored or queued."""

    def __init__(self, message: str) -> None:
        super().__init__(0)
        self.args = (message,)
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class QuotaPolicy:
    """DAILY_IMAGES_PER_USER, DAILY_IMAGES_PER_CHANNEL (0 = unlimited), IMAGE_WEIGHT_4K, QUOTA_TIMEZONE."""

    per_user: int
    per_channel: int
    weight_4k: int
    tz: tzinfo

    @property
    def enabled(self) -> bool:
        """Whether any cap applies."""
        return self.per_user > 0 or self.per_channel > 0

    def weight(self, size: str) -> int:
        """Units one image of `size` costs."""
        return self.weight_4k if size.upper() == "4K" else 1

    def day_start(self, now: float) -> float:
        """Unix time of today's start in the quota's zone."""
        return start_of_day(now, self.tz)

    def next_reset(self, now: float) -> float:
        """Unix time of the next midnight in the quota's zone (DST-correct for IANA zones)."""
        local = datetime.fromtimestamp(self.day_start(now), self.tz)
        following = (local + timedelta(days=1, hours=2)).replace(hour=0, minute=0, second=0, microsecond=0)
        return following.timestamp()

    def reset_phrase(self, now: float) -> str:
        """'resets at 00:00 UTC, in 3 h 12 min'."""
        reset = self.next_reset(now)
        clock = datetime.fromtimestamp(reset, self.tz).strftime("%H:%M %Z").strip()
        minutes = math.ceil((reset - now) / 60)
        hours, minutes = divmod(minutes, 60)
        wait = f"{hours} h {minutes} min" if hours else f"{minutes} min"
        return f"resets at {clock}, in {wait}"

    def tightest(self, usage: Usage) -> tuple[int, int, str] | None:
        """The cap with the fewest images left today: (images left, at least 0; the cap; whose it is,
        as "you have" or "this channel has"); None when no cap is set."""
        caps = [
            (max(cap - used, 0), cap, whose)
            for cap, used, whose in (
                (self.per_user, usage.user, "you have"),
                (self.per_channel, usage.channel, "this channel has"),
            )
            if cap > 0
        ]
        return min(caps, key=lambda entry: entry[0]) if caps else None

    def used_up(self, cap: int, whose: str, *, now: float) -> str:
        """The refusal when a cap has no image left today."""
        used_up = "You have used your" if whose == "you have" else "This channel has used its"
        reset = self.reset_phrase(now)
        return f":no_entry: {used_up} {cap} images for today; nothing was queued. The quota {reset}."

    def admit(self, usage: Usage, *, n: int, size: str, now: float) -> str | None:
        """Check a job of `n` images of `size`; raises QuotaExceededError naming what would fit and when
        the day resets. Returns the user's 'N of M left today' line once they are past 80 % of their
        cap after this job, else None."""
        weight = self.weight(size)
        cost = n * weight
        tightest = self.tightest(usage)
        if tightest is not None and cost > tightest[0]:
            left, cap, whose = tightest
            raise QuotaExceededError(self._refusal(left, cap, whose, weight=weight, n=n, now=now))
        if self.per_user <= 0:
            return None
        used = usage.user + cost
        if used <= WARN_ABOVE * self.per_user:
            return None
        return f"{self.per_user - used} of {self.per_user} images left today ({self.reset_phrase(now)})."

    def report(self, usage: Usage, *, now: float) -> str:
        """`/imagine usage` for one person: their images and the channel's today, against the caps."""

        def against(used: int, cap: int) -> str:
            return (
                f"{used} of {cap} images ({max(cap - used, 0)} left)"
                if cap > 0
                else f"{used} images (no cap)"
            )

        weight = f" A 4K image counts as {self.weight_4k}." if self.weight_4k > 1 else ""
        return (
            f"*Today* you made {against(usage.user, self.per_user)}; this channel made "
            f"{against(usage.channel, self.per_channel)}.{weight} The quota {self.reset_phrase(now)}."
        )

    def _refusal(self, left: int, cap: int, whose: str, *, weight: int, n: int, now: float) -> str:
        if left == 0:
            return self.used_up(cap, whose, now=now)
        reset = self.reset_phrase(now)
        unit = "image" if left == 1 else "images"
        head = f":no_entry: This job needs {n * weight} but {whose} {left} {unit} left today"
        if weight > 1:
            head += f" (a 4K image counts as {weight})"
        fits = left // weight
        hint = f"try `--n {fits}`" if fits >= 1 else f"try `--size 2K --n {min(left, n)}`"
        return f"{head}: {hint}. Nothing was queued; the quota {reset}."
