"""The Pacer (bot/slack/pacing.py) on a virtual clock: turns per channel, Retry-After, patience; and the
PacedWebClient against the rate-limited FakeSlack."""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_slack_response import AsyncSlackResponse

from bot.slack.errors import SlackErrorKind, classify
from bot.slack.pacing import PacedWebClient, Pacer, channel_of, paid_work, patience
from tests.fakes.ratelimits import RateLimits
from tests.fakes.slack import FakeSlack

_T = TypeVar("_T")


class VirtualTime:
    """A clock that jumps to the next sleeper's wake-up once every task is blocked (no I/O here, so a
    few trips through the event loop settle them), making waits exact and instant."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, id(woken), woken))
        await woken

    async def run(self, *coroutines: Awaitable[_T]) -> list[_T | BaseException]:
        """Run the coroutines to the end, moving the clock whenever all of them wait."""
        gathered = asyncio.gather(*coroutines, return_exceptions=True)
        while not gathered.done():
            for _ in range(20):
                await asyncio.sleep(0)
            if self._sleepers and not gathered.done():
                self.now, _, woken = heapq.heappop(self._sleepers)
                if not woken.done():  # a sleeper cancelled meanwhile
                    woken.set_result(None)
        return list(await gathered)


def limited(retry_after: str | None = "2") -> SlackApiError:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    response = AsyncSlackResponse(
        client=None,
        http_verb="POST",
        api_url="x",
        req_args={},
        data={"ok": False, "error": "ratelimited"},
        headers=headers,
        status_code=429,
    )
    return SlackApiError("ratelimited", response)  # type: ignore[no-untyped-call]


def pacer(time: VirtualTime, **kwargs: Any) -> Pacer:
    return Pacer(clock=time.clock, sleep=time.sleep, **kwargs)


async def test_posts_into_one_channel_take_turns_one_interval_apart() -> None:
    time = VirtualTime()
    pace = pacer(time, interval=1.0)
    sent: list[tuple[str, float]] = []

    async def post(channel: str) -> None:
        async def send() -> None:
            sent.append((channel, time.now))

        await pace.run("chat.postMessage", channel, send)

    await time.run(*(post("C1") for _ in range(4)), post("C2"))
    assert [at for channel, at in sent if channel == "C1"] == [0.0, 1.0, 2.0, 3.0]
    assert [at for channel, at in sent if channel == "C2"] == [0.0], "another channel does not wait"


async def test_paid_work_takes_the_channels_next_turn_ahead_of_new_work() -> None:
    time = VirtualTime()
    pace = pacer(time, interval=1.0)
    sent: list[str] = []

    async def post(name: str, *, paid: bool = False, after: float = 0.0) -> None:
        if after:
            await time.sleep(after)

        async def send() -> None:
            sent.append(name)

        if paid:
            with paid_work():
                await pace.run("files.completeUploadExternal", "C1", send)
        else:
            await pace.run("chat.postMessage", "C1", send)

    statuses = [post(f"status {i}") for i in range(4)]
    await time.run(*statuses, post("upload", paid=True, after=0.5), post("status 4", after=0.6))
    # status 1 already holds the turn after status 0 (it waits out the interval); the upload, asked at
    # 0.5 s, goes next, ahead of the statuses asked before it.
    assert sent == ["status 0", "status 1", "upload", "status 2", "status 3", "status 4"]


async def test_a_call_cancelled_while_waiting_for_its_turn_gives_the_turn_on() -> None:
    time = VirtualTime()
    pace = pacer(time, interval=1.0)
    sent: list[str] = []

    def post(name: str) -> asyncio.Task[None]:
        async def send() -> None:
            sent.append(name)

        return asyncio.create_task(pace.run("chat.postMessage", "C1", send))

    first, doomed, last = post("first"), post("doomed"), post("last")
    await asyncio.sleep(0)
    doomed.cancel()
    await time.run(first, doomed, last)
    assert sent == ["first", "last"]
    assert pace.backlog("C1") == pytest.approx(0.0, abs=1.0), "nothing is left counted as waiting"


async def test_a_429_is_sent_again_after_retry_after_and_holds_the_method() -> None:
    time = VirtualTime()
    pace = pacer(time, interval=0.5)
    answers: list[Exception | str] = [limited("2"), "ok"]
    attempts: list[float] = []

    async def send() -> str:
        attempts.append(time.now)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert await time.run(pace.run("chat.update", "C1", send)) == ["ok"]
    assert attempts == [0.0, 1.0], "Retry-After 2 in Slack's seconds, 0.5 s each here"
    assert pace.limited == 1


async def test_patience_bounds_the_wait_and_fails_with_slacks_own_error() -> None:
    time = VirtualTime()
    pace = pacer(time, interval=1.0, patience=2.5)
    sent: list[float] = []

    async def send() -> None:
        sent.append(time.now)

    results = await time.run(*(pace.run("chat.postMessage", "C1", send) for _ in range(5)))
    assert sent == [0.0, 1.0, 2.0]
    refused = [result for result in results if isinstance(result, SlackApiError)]
    assert len(refused) == 2
    error = classify(refused[0])
    assert (error.kind, error.code) == (SlackErrorKind.RATE_LIMITED, "ratelimited")

    with patience(0), pytest.raises(SlackApiError):
        await pace.run("chat.postMessage", "C1", send)
    assert sent == [0.0, 1.0, 2.0], "a call with no patience is not sent when it would have to wait"


async def test_a_call_that_keeps_being_limited_gives_up_at_the_patience() -> None:
    time = VirtualTime()
    pace = pacer(time, interval=1.0, patience=10)
    attempts: list[float] = []

    async def send() -> None:
        attempts.append(time.now)
        raise limited("3")

    [result] = await time.run(pace.run("views.publish", None, send))
    assert isinstance(result, SlackApiError)
    assert attempts == [0.0, 3.0, 6.0, 9.0]


async def test_other_errors_pass_through_unretried() -> None:
    pace = pacer(VirtualTime())
    calls = 0

    async def send() -> None:
        nonlocal calls
        calls += 1
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await pace.run("chat.postMessage", "C1", send)
    assert calls == 1


def test_the_channel_is_read_from_any_argument_shape() -> None:
    assert channel_of({"channel": "C1"}) == "C1"
    assert channel_of(None, {"channel_id": "C2"}) == "C2"
    assert channel_of({"channels": "C3,C4"}) == "C3"
    assert channel_of({"text": "x"}, None) is None


async def test_the_paced_client_stays_inside_the_fakes_limit() -> None:
    speed = 20.0
    async with FakeSlack(rate_limits=RateLimits(speed=speed)) as slack:
        client = PacedWebClient(
            token=slack.bot_token, base_url=slack.api_url, pacer=Pacer(interval=1 / speed)
        )
        await asyncio.gather(*(client.chat_postMessage(channel="C1", text=f"hi {i}") for i in range(12)))
        assert len(slack.messages("C1")) == 12
        assert len(slack.calls_to("chat.postMessage")) - 12 == len(slack.rate_limits.refused)
        assert len(slack.rate_limits.refused) <= 3, "paced, not retried into the limit"
