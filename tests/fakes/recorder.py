"""Call recording shared by the fakes, with event-driven waiting (no polling sleeps)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from aiohttp import web


@dataclass(frozen=True)
class Call:
    """One request a fake received."""

    method: str
    params: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    at: float = field(default_factory=time.perf_counter)
    path: str = ""
    """The URL path, where it tells calls of one method apart (each response_url is its own)."""


class Recorder:
    """Every call, in order; `wait_for` wakes on each new call instead of sleeping."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._changed = asyncio.Condition()

    async def record(self, call: Call) -> None:
        """Append a call and wake every waiter."""
        async with self._changed:
            self.calls.append(call)
            self._changed.notify_all()

    def calls_to(self, method: str) -> list[Call]:
        """The calls of one method, in order."""
        return [call for call in self.calls if call.method == method]

    async def wait_for(
        self,
        method: str,
        *,
        count: int = 1,
        where: Callable[[Call], bool] | None = None,
        timeout: float = 5.0,
    ) -> list[Call]:
        """Wait until `count` calls of `method` (matching `where`) were seen; returns the first `count`."""

        def matching() -> list[Call]:
            return [call for call in self.calls_to(method) if where is None or where(call)]

        try:
            await self.wait_until(lambda: len(matching()) >= count, timeout=timeout)
        except TimeoutError:
            seen = "\n".join(f"  {call.method} {call.params}"[:300] for call in self.calls)
            raise AssertionError(
                f"expected {count} × {method} within {timeout}s; calls seen:\n{seen}"
            ) from None
        return matching()[:count]

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until `predicate()` holds, re-checking after every recorded call."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    async def notify(self) -> None:
        """Wake waiters after a state change that is not a call (e.g. a socket connecting)."""
        async with self._changed:
            self._changed.notify_all()


class _Counted(Protocol):
    times: int


_F = TypeVar("_F", bound=_Counted)


def take_fault(faults: dict[str, list[_F]], key: str) -> _F | None:
    """The fault that applies to this call of `key`, used up after `times` calls (-1: never)."""
    queue = faults.get(key)
    if not queue:
        return None
    fault = queue[0]
    if fault.times > 0:
        fault.times -= 1
        if fault.times == 0:
            queue.pop(0)
    return fault


def drop_connection(request: web.Request) -> web.Response:
    """Close the client's connection without answering; returns a response aiohttp never gets to send.

    The client sees the connection end with no status line: httpx raises `RemoteProtocolError`
    ("Server disconnected without sending a response"), aiohttp `ServerDisconnectedError`. That is what a
    crashed server, a load balancer timing out, or a network cut looks like to the client."""
    transport = request.transport
    if transport is not None:
        transport.close()
    return web.Response(status=499)
