"""Pacing Web API calls to Slack's rate limits instead of retrying into them.

Slack allows about one message per second per channel, with short bursts, and limits every other method
per workspace by tier; over a limit it answers HTTP 429 with Retry-After in seconds (slack.md §4,
https://docs.slack.dev/apis/web-api/rate-limits). So:

- calls that post a message into a channel (chat.postMessage, files.completeUploadExternal with a channel)
  take turns per channel, one every `interval`, in the order they asked;
- a 429 on any method holds that method (and, for a post, that channel) for Retry-After, and the call is
  sent again afterwards: a 429 means Slack did not carry the call out, so resending never posts twice;
- calls made for work already paid for (`paid_work()`: a started job's upload and card) take the
  channel's next turn ahead of calls that start new work (status posts of new jobs), so a job holding a
  generation slot is never stuck behind the status posts of everyone who asked after it;
- a call never waits longer than `patience` in all: when its turn would come later, it fails at once with
  Slack's own `ratelimited` error, so the caller can tell its user instead of hanging (the estimate is
  made when it asks: paid work that asks later can still push a new job's post back).

`unit` is how long one of Slack's seconds lasts here. It is 1 in production; tests that run Slack's clock
faster shrink it, and Retry-After and `patience` are read in Slack's seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import logging
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any, TypeVar

from aiohttp import FormData
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.domain.secrets import Redactor

log = logging.getLogger(__name__)

_T = TypeVar("_T")

SLACK_POST_INTERVAL = 1.0
"""Slack's sustained rate for messages into one channel: one per second (slack.md §4)."""
PATIENCE = 120.0
"""The longest (in Slack's seconds) a call waits for its turn and for Retry-After before it gives up."""
RECOVERY = 60.0
"""For this long (Slack's seconds) after a 429, calls of that method take turns too (one tier minute)."""
RECOVERY_INTERVAL = 60.0 / 50.0
"""Their spacing meanwhile: Tier 3's published floor, 50 a minute (slack.md §4), the tier of the methods
a busy channel makes the bot call most (chat.update, conversations.replies)."""
CHANNEL_POSTING = frozenset({"chat.postMessage", "files.completeUploadExternal"})
"""Methods that put a message into a channel."""

_patience: ContextVar[float | None] = ContextVar("slack_patience", default=None)
_paid: ContextVar[bool] = ContextVar("slack_paid_work", default=False)


@contextlib.contextmanager
def patience(seconds: float) -> Iterator[None]:
    """Calls made inside wait at most `seconds` (Slack's) instead of the pacer's default; 0: never wait,
    fail at once when the call would have to wait (for a best-effort edit that a later one replaces)."""
    token = _patience.set(seconds)
    try:
        yield
    finally:
        _patience.reset(token)


@contextlib.contextmanager
def paid_work() -> Iterator[None]:
    """Calls made inside are for work already paid for: they take a lane's next turn first."""
    token = _paid.set(True)
    try:
        yield
    finally:
        _paid.reset(token)


class _Turns:
    """One lane's turns: first come, first served, except that paid work goes before new work."""

    def __init__(self) -> None:
        self._taken = False
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    async def take(self, *, paid: bool) -> None:
        """Wait until the turn is this caller's; `give_back` must follow."""
        if not self._taken and not self._waiting:
            self._taken = True
            return
        handed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (0 if paid else 1, next(self._order), handed)
        heapq.heappush(self._waiting, entry)
        try:
            await handed
        except BaseException:
            if handed.done() and not handed.cancelled():
                self.give_back()  # handed the turn, then cancelled before using it
            elif entry in self._waiting:
                self._waiting.remove(entry)
                heapq.heapify(self._waiting)
            raise

    def give_back(self) -> None:
        """Hand the turn to the best waiter, or free it."""
        while self._waiting:
            _, _, handed = heapq.heappop(self._waiting)
            if not handed.done():
                handed.set_result(None)
                return
        self._taken = False


class Pacer:
    """Turns per channel for posts, and holds per method (or channel) after a 429."""

    def __init__(
        self,
        *,
        interval: float = SLACK_POST_INTERVAL,
        patience: float = PATIENCE,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.interval = interval
        self.unit = interval / SLACK_POST_INTERVAL
        self.patience = patience
        self._clock = clock
        self._sleep = sleep
        self._turns: dict[str, _Turns] = {}
        self._queued: Counter[str] = Counter()
        self._last_sent: dict[str, float] = {}
        self._limited_at: dict[str, float] = {}
        self._held: dict[str, float] = {}
        self.waited = 0.0
        """Total seconds calls spent waiting for their turn or a Retry-After (a metric)."""
        self.limited = 0
        """429 answers received (a metric)."""

    def backlog(self, channel: str) -> float:
        """Seconds until a post into `channel` asked for now would be sent (0: at once)."""
        return self._backlog(f"channel:{channel}", self.interval, [f"channel:{channel}"])

    async def run(self, method: str, channel: str | None, send: Callable[[], Awaitable[_T]]) -> _T:
        """Send when it is this call's turn; resend after Retry-After on 429; raise a `ratelimited`
        SlackApiError when the wait would exceed the patience."""
        limit = _patience.get()
        deadline = self._clock() + (self.patience if limit is None else limit) * self.unit
        posts = channel if method in CHANNEL_POSTING else None
        while True:
            holds = [*_held_by(method, posts), f"method:{method}"]
            if posts is not None:
                await self._take_turn(f"channel:{posts}", self.interval, holds, method, posts, deadline)
            elif self._clock() - self._limited_at.get(method, -math.inf) < RECOVERY * self.unit:
                interval = RECOVERY_INTERVAL * self.unit
                await self._take_turn(f"method:{method}", interval, holds, method, channel, deadline)
            else:
                await self._wait_until(self._held.get(f"method:{method}", 0.0), method, deadline)
            try:
                return await send()
            except SlackApiError as exc:
                if getattr(exc.response, "status_code", None) != 429:
                    raise
                self.limited += 1
                retry_after = _retry_after(exc.response.headers) * self.unit
                now = self._clock()
                self._limited_at[method] = now
                for key in _held_by(method, posts):
                    self._held[key] = max(self._held.get(key, 0.0), now + retry_after)
                log.info("%s rate-limited; sent again after %.2fs", method, retry_after)

    def _backlog(self, lane: str, interval: float, holds: list[str]) -> float:
        now = self._clock()
        held = max((self._held.get(key, 0.0) for key in holds), default=0.0)
        free = max(self._last_sent.get(lane, -math.inf) + interval, held, now)
        return free - now + self._queued[lane] * interval

    async def _take_turn(
        self, lane: str, interval: float, holds: list[str], method: str, channel: str | None, deadline: float
    ) -> None:
        """Wait for this lane's next turn (first come, first served; paid work first): `interval` after
        its last call was sent, and after any hold. Turns are measured from when calls were really sent,
        so a stalled loop never bunches them up."""
        if self._clock() + self._backlog(lane, interval, holds) > deadline:
            raise _ratelimited(method, channel)
        turns = self._turns.setdefault(lane, _Turns())
        self._queued[lane] += 1
        queued = True
        try:
            await turns.take(paid=_paid.get())
            self._queued[lane] -= 1
            queued = False
            try:
                turn = max(
                    self._last_sent.get(lane, -math.inf) + interval,
                    *(self._held.get(key, 0.0) for key in holds),
                )
                await self._wait_until(turn, method, deadline, channel)
                self._last_sent[lane] = self._clock()
            finally:
                turns.give_back()
        finally:
            if queued:
                self._queued[lane] -= 1
            if self._queued[lane] <= 0:
                del self._queued[lane]

    async def _wait_until(
        self, moment: float, method: str, deadline: float, channel: str | None = None
    ) -> None:
        now = self._clock()
        if moment <= now:
            return
        if moment > deadline:
            raise _ratelimited(method, channel)
        self.waited += moment - now
        await self._sleep(moment - now)


class PacedWebClient(AsyncWebClient):
    """An AsyncWebClient whose every Web API call goes through a Pacer (so Bolt's calls are paced too)
    and, with a `redactor`, leaves without secrets: every string of its arguments is redacted (the token
    travels in the Authorization header, which is left alone)."""

    def __init__(self, *args: Any, pacer: Pacer, redactor: Redactor | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pacer = pacer
        self.redactor = redactor

    async def api_call(
        self,
        api_method: str,
        *,
        http_verb: str = "POST",
        files: dict[str, Any] | None = None,
        data: dict[str, Any] | FormData | None = None,
        params: dict[str, Any] | None = None,
        json: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
        auth: dict[str, Any] | None = None,
    ) -> AsyncSlackResponse:
        """`AsyncWebClient.api_call`, redacted, sent when the pacer gives it a turn."""
        if self.redactor is not None:
            json, params = self._redacted(json), self._redacted(params)
            if isinstance(data, dict):
                data = self._redacted(data)
        send = functools.partial(
            AsyncWebClient.api_call,
            self,
            api_method,
            http_verb=http_verb,
            files=files,
            data=data,
            params=params,
            json=json,
            headers=headers,
            auth=auth,
        )
        channel = channel_of(json, params, data if isinstance(data, dict) else None)
        return await self.pacer.run(api_method, channel, send)

    def _redacted(self, arguments: dict[str, Any] | None) -> dict[str, Any] | None:
        """`arguments` with every string redacted, except the credentials Slack asks for as arguments."""
        if arguments is None or self.redactor is None:
            return arguments
        redact = self.redactor.redact_payload
        return {
            key: value if key in CREDENTIAL_ARGUMENTS else redact(value) for key, value in arguments.items()
        }


CREDENTIAL_ARGUMENTS = frozenset({"token", "app_token", "client_secret"})
"""Arguments that carry a credential to Slack on purpose (apps.connections.open sends the app token)."""


def _held_by(method: str, channel: str | None) -> list[str]:
    """What a 429 holds: the method (its tier is per workspace), and for a post its channel. A
    chat.postMessage 429 is the channel's (its workspace-wide limit is not published), so other
    channels go on; a files.completeUploadExternal 429 may be either, so both are held."""
    keys = [] if method == "chat.postMessage" and channel is not None else [f"method:{method}"]
    return keys + ([f"channel:{channel}"] if channel is not None else [])


def channel_of(*arguments: Mapping[str, Any] | None) -> str | None:
    """The conversation a call names (`channel`, `channel_id`, or the first of `channels`)."""
    for given in arguments:
        if not given:
            continue
        channel = given.get("channel") or given.get("channel_id")
        if not channel and given.get("channels"):
            channel = str(given["channels"]).split(",")[0]
        if channel:
            return str(channel)
    return None


def _retry_after(headers: Mapping[str, Any] | None) -> float:
    """Retry-After in seconds, at least 1 (Slack sends whole seconds; a missing header counts as 1)."""
    for name, value in (headers or {}).items():
        if name.lower() == "retry-after":
            try:
                return max(1.0, float(value))
            except (TypeError, ValueError):
                break
    return 1.0


def _ratelimited(method: str, channel: str | None) -> SlackApiError:
    """The error Slack itself would have answered, for a call the pacer did not send."""
    response = AsyncSlackResponse(
        client=None,
        http_verb="POST",
        api_url=method,
        req_args={},
        data={"ok": False, "error": "ratelimited"},
        headers={},
        status_code=429,
    )
    where = f" in {channel}" if channel else ""
    log.warning("%s%s: not sent, Slack's rate limit would hold it for too long", method, where)
    message = f"{method}{where}: not sent, rate-limited for longer than the patience"
    return SlackApiError(message, response)  # type: ignore[no-untyped-call]
