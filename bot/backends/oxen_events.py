"""CompletionWatcher: Oxen's completion events wake pollers early; polling stays the source of truth.

Oxen's event stream (`GET /api/events`) has no replay, so it is only an optimisation: a generation
that finishes while the stream is down is still found by the next poll (OXEN_POLL_INTERVAL). With the
stream up, a finished image is noticed within milliseconds instead of up to a poll interval later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict

from bot.backends.base import BackendError, FailureKind
from bot.backends.oxen import OxenClient

log = logging.getLogger(__name__)

_REMEMBERED = 10_000


class CompletionWatcher:
    """Listens to completion events in the background and lets pollers wait for their generation."""

    def __init__(self, oxen: OxenClient, *, max_backoff: float = 30.0) -> None:
        self._oxen = oxen
        self._max_backoff = max_backoff
        self._waiters: dict[str, asyncio.Event] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start listening (reconnecting with backoff after errors)."""
        self._task = asyncio.create_task(self._listen(), name="oxen-completion-events")

    async def stop(self) -> None:
        """Stop listening."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait(self, generation_id: str, within: float) -> None:
        """Return when the generation's completion event arrives, or after `within` seconds."""
        if generation_id in self._finished:
            return
        event = self._waiters.setdefault(generation_id, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), within)
        except TimeoutError:
            pass
        finally:
            self._waiters.pop(generation_id, None)

    def _completed(self, generation_id: str) -> None:
        self._finished[generation_id] = None
        while len(self._finished) > _REMEMBERED:
            self._finished.popitem(last=False)
        waiter = self._waiters.get(generation_id)
        if waiter is not None:
            waiter.set()

    async def _listen(self) -> None:
        backoff = 1.0
        while True:
            try:
                async for event in self._oxen.completion_events():
                    backoff = 1.0
                    self._completed(str(event.get("generation_id", "")))
            except BackendError as exc:
                if exc.kind in (FailureKind.NOT_FOUND, FailureKind.INVALID, FailureKind.AUTH):
                    log.info("Oxen completion events unavailable (%s); polling only", exc)
                    return
                log.warning("Oxen completion events interrupted: %s", exc)
            except Exception:
                log.warning("Oxen completion events interrupted unexpectedly", exc_info=True)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff)
