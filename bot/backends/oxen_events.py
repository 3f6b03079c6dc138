"""CompletionWatcher: Oxen's completion events wake pollers early; polling stays the source of truth.

Oxen's event stream (`GET /api/events`) has no replay (oxen-api.md §3.5), so it is only an
optimisation: a generation that finishes while the stream is down is still found by a poll, which
`PollSchedule` aims at the model's usual end while `connected` is False. The stream sends a
`: keep-alive` comment every 15 s when idle (§3.5); httpx-sse skips comments, but their bytes reset
the read timeout, so a stream silent for `idle_timeout` s is taken as dead and reopened.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict

from bot.backends.base import BackendError, FailureKind
from bot.backends.oxen import OxenClient
from bot.backends.poll_schedule import Clock

log = logging.getLogger(__name__)

_REMEMBERED = 10_000
KEEPALIVE_PERIOD = 15.0
"""Oxen's keep-alive period on an idle stream (oxen-api.md §3.5)."""
IDLE_TIMEOUT = 2 * KEEPALIVE_PERIOD + 5.0
"""Silence after which the stream counts as dead: two keep-alives missed, plus slack."""


class CompletionWatcher:
    """Listens to completion events in the background and lets pollers wait for their generation."""

    def __init__(
        self,
        oxen: OxenClient,
        *,
        max_backoff: float = 30.0,
        idle_timeout: float = IDLE_TIMEOUT,
        clock: Clock = time.monotonic,
    ) -> None:
        self._oxen = oxen
        self._max_backoff = max_backoff
        self._idle_timeout = idle_timeout
        self._clock = clock
        self._waiters: dict[str, asyncio.Event] = {}
        self._finished: OrderedDict[str, float] = OrderedDict()
        self._task: asyncio.Task[None] | None = None
        self.connected = False
        """Whether the stream is open now (events can arrive)."""

    def start(self) -> None:
        """Start listening (reconnecting with backoff after errors)."""
        self._task = asyncio.create_task(self._listen(), name="oxen-completion-events")

    async def stop(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def completed_at(self, generation_id: str) -> float | None:
        """When (clock time) the generation's completion event arrived, if it did."""
        return self._finished.get(generation_id)

    async def wait(self, generation_id: str, within: float) -> float | None:
        """Wait up to `within` s for the generation's completion event; its arrival time, or None on
        a timeout or when the stream opened or closed meanwhile (the caller's plan changes)."""
        if generation_id in self._finished:
            return self._finished[generation_id]
        event = self._waiters.setdefault(generation_id, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), within)
        except TimeoutError:
            pass
        finally:
            self._waiters.pop(generation_id, None)
        return self._finished.get(generation_id)

    def _completed(self, generation_id: str) -> None:
        self._finished[generation_id] = self._clock()
        while len(self._finished) > _REMEMBERED:
            self._finished.popitem(last=False)
        waiter = self._waiters.get(generation_id)
        if waiter is not None:
            waiter.set()

    def _connection(self, up: bool) -> None:
        if up == self.connected:
            return
        self.connected = up
        for waiter in self._waiters.values():
            waiter.set()

    async def _listen(self) -> None:
        backoff = 1.0
        while True:
            try:
                async for event in self._oxen.completion_events(
                    idle_timeout=self._idle_timeout, on_open=lambda: self._connection(True)
                ):
                    backoff = 1.0
                    self._completed(str(event.get("generation_id", "")))
            except BackendError as exc:
                self._connection(False)
                if exc.kind in (FailureKind.NOT_FOUND, FailureKind.INVALID, FailureKind.AUTH):
                    log.info("Oxen completion events unavailable (%s); polling only", exc)
                    return
                log.warning("Oxen completion events interrupted: %s", exc)
            except Exception:
                log.warning("Oxen completion events interrupted unexpectedly", exc_info=True)
            self._connection(False)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff)
