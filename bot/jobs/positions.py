"""QueuePositions: a waiting job's status message shows its current place in line.

The job queue calls `changed` whenever the line may have moved (here, or on PostgreSQL on another
replica: it looks every second), and positions are read from the shared line in the database; one
background loop then edits the status messages this replica posted whose position changed.
chat.update is Tier 3 (50+ per minute per workspace, slack.md §4) and the job steps need it too
(Generating, Done), so the edits are coalesced: a message is edited at most once per `min_interval`,
never when its position is unchanged, edits share a budget of `per_minute`, the jobs nearest the front
first, and an edit never waits for Slack's rate limit (a later one replaces it). Times are in Slack's
seconds (`unit` real seconds each, as in bot/slack/pacing.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from bot.slack import pacing
from bot.store.model import Job, JobState

log = logging.getLogger(__name__)

MIN_INTERVAL = 5.0
"""Seconds (Slack's) between two edits of one status message."""
PER_MINUTE = 20.0
"""Position edits per minute in all, less than half of chat.update's Tier 3 (the job steps use the rest)."""
BURST = 5.0
"""Edits that may go out at once after a quiet spell."""


@dataclass
class _Shown:
    position: int
    at: float


class QueuePositions:
    """Edits waiting jobs' status messages as their place in line changes (coalesced, within a budget)."""

    def __init__(
        self,
        *,
        positions: Callable[[], Awaitable[dict[str, int]]],
        load: Callable[[str], Awaitable[Job | None]],
        edit: Callable[[Job, int], Awaitable[bool]],
        unit: float = 1.0,
        min_interval: float = MIN_INTERVAL,
        per_minute: float = PER_MINUTE,
        burst: float = BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._positions = positions
        self._load = load
        self._edit = edit
        self._min_interval = min_interval * unit
        self._rate = per_minute / 60.0 / unit
        self._burst = burst
        self._tokens = burst
        self._stamp = clock()
        self._clock = clock
        self._shown: dict[str, _Shown] = {}
        self._editing: dict[str, asyncio.Task[bool]] = {}
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self.edits = 0
        """Edits Slack took (a metric)."""

    def shown(self, job_id: str, position: int) -> None:
        """The status message of a job now in line was posted showing `position`."""
        self._shown[job_id] = _Shown(position, self._clock())

    def changed(self) -> None:
        """The line moved (the queue's hook): look again soon."""
        self._wake.set()

    async def forget(self, job_id: str) -> None:
        """The job left the line (it starts, or is cancelled): no more edits, and one under way is
        waited for, so it cannot land after the job's next status."""
        self._shown.pop(job_id, None)
        editing = self._editing.get(job_id)
        if editing is not None:
            await asyncio.wait([editing])

    def start(self) -> None:
        """Start the background loop."""
        if self._loop is None:
            self._loop = asyncio.create_task(self._run(), name="queue-positions")

    async def close(self) -> None:
        """Stop the loop (an edit under way is cancelled)."""
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None

    async def _run(self) -> None:
        while True:
            delay = await self.step()
            self._wake.clear()
            if delay is None or delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):  # not wait_for: see JobQueue._claim_loop
                        await self._wake.wait()

    async def step(self) -> float | None:
        """Make the edits that are due; returns seconds until the next one may be, None: none pending."""
        if not self._shown:
            return None
        desired = await self._positions()
        for job_id in [job_id for job_id in self._shown if job_id not in desired]:
            del self._shown[job_id]
        now = self._clock()
        due: list[tuple[int, str]] = []
        wait = math.inf
        for job_id, shown in self._shown.items():
            position = desired[job_id]
            if position == shown.position:
                continue
            ready = shown.at + self._min_interval
            if ready <= now:
                due.append((position, job_id))
            else:
                wait = min(wait, ready - now)
        for position, job_id in sorted(due):
            if not self._take_token():
                wait = min(wait, (1.0 - self._tokens) / self._rate)
                break
            await self._edit_one(job_id, position)
        return None if wait == math.inf else wait

    def _take_token(self) -> bool:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    async def _edit_one(self, job_id: str, position: int) -> None:
        task = asyncio.create_task(self._send(job_id, position))
        self._editing[job_id] = task
        try:
            done = await asyncio.shield(task)
        finally:
            self._editing.pop(job_id, None)
        shown = self._shown.get(job_id)
        if shown is not None:
            shown.at = self._clock()
            if done:
                shown.position = position

    async def _send(self, job_id: str, position: int) -> bool:
        job = await self._load(job_id)
        if (
            job is None
            or job.state is not JobState.QUEUED
            or job.status_ts is None
            or job_id not in self._shown
        ):
            return False
        with pacing.patience(0):
            done = await self._edit(job, position)
        if done:
            self.edits += 1
        return done
