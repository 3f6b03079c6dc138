"""Tasks: work the process runs in the background, kept so that shutdown can wait for it.

Every task is referenced until it ends (asyncio keeps only weak references), its exception is logged
with the task's name instead of surfacing as "Task exception was never retrieved", and `drain`
waits for what is still running, up to a deadline, then cancels the rest and awaits them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Tasks:
    """A set of running tasks of one kind (`what` names them in log lines)."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._running: dict[asyncio.Task[Any], None] = {}  # an ordered set
        self._closed = False

    def __len__(self) -> int:
        return len(self._running)

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
        """Start `coro` as a tracked task; refused (RuntimeError) once `drain` has begun."""
        if self._closed:
            coro.close()
            raise RuntimeError(f"not starting {self._what} {name!r}: shutting down")
        task = asyncio.create_task(coro, name=name)
        self.adopt(task)
        return task

    def adopt(self, task: asyncio.Task[Any]) -> None:
        """Track a task that something else started (Bolt's listener tasks); allowed while draining."""
        if task in self._running:
            return
        self._running[task] = None
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._running.pop(task, None)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("%s %s failed: %s", self._what, task.get_name(), type(error).__name__, exc_info=error)

    async def drain(self, grace: float) -> None:
        """Refuse new tasks, wait up to `grace` seconds for the running ones (including any adopted
        meanwhile), then cancel what is left and wait for it to unwind."""
        self._closed = True
        if self._running:
            log.info(
                "waiting up to %.1fs for %d %s: %s",
                grace,
                len(self._running),
                self._what,
                ", ".join(task.get_name() for task in self._running),
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self._running and (remaining := deadline - loop.time()) > 0:
            await asyncio.wait(list(self._running), timeout=remaining)
        late = list(self._running)
        if not late:
            return
        log.warning(
            "%d %s still running after %.1fs, cancelling: %s",
            len(late),
            self._what,
            grace,
            ", ".join(task.get_name() for task in late),
        )
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    async def settled(self) -> None:
        """Wait until none of the tracked tasks runs, including any adopted meanwhile."""
        while self._running:
            await asyncio.wait(list(self._running))
