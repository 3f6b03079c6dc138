"""The fake's rate limits (tests/fakes/ratelimits.py) on an injected clock, and their HTTP answer."""

from __future__ import annotations

import httpx

from tests.fakes.ratelimits import RateLimits, unlimited
from tests.fakes.slack import FakeSlack


class Clock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def posts(limits: RateLimits, channel: str, count: int) -> list[int | None]:
    return [limits.check("chat.postMessage", {"channel": channel}) for _ in range(count)]


def test_a_channel_takes_a_burst_of_three_then_one_message_a_second() -> None:
    clock = Clock()
    limits = RateLimits(clock=clock)
    assert posts(limits, "C1", 4) == [None, None, None, 1]
    clock.advance(0.5)
    assert posts(limits, "C1", 1) == [1], "half a second refills half a message: Retry-After rounds up"
    clock.advance(0.5)
    assert posts(limits, "C1", 2) == [None, 1]
    clock.advance(10)
    assert posts(limits, "C1", 4) == [None, None, None, 1], "the burst refills, and no further"


def test_channels_are_limited_separately_and_a_refusal_spends_nothing() -> None:
    clock = Clock()
    limits = RateLimits(clock=clock)
    assert posts(limits, "C1", 10)[3:] == [1] * 7
    assert posts(limits, "C2", 3) == [None] * 3
    clock.advance(1)
    assert posts(limits, "C1", 2) == [None, 1], "seven refusals did not push C1's next turn back"
    assert [entry[:2] for entry in limits.refused[:1]] == [("chat.postMessage", "channel:C1")]


def test_sharing_a_file_into_a_channel_spends_its_message_allowance() -> None:
    limits = RateLimits(clock=Clock())
    assert posts(limits, "C1", 2) == [None, None]
    assert limits.check("files.completeUploadExternal", {"channel_id": "C1", "files": "[]"}) is None
    assert posts(limits, "C1", 1) == [1]
    assert limits.check("files.completeUploadExternal", {"files": "[]"}) is None, (
        "a private upload posts nothing"
    )


def test_tiers_are_per_method_with_a_quarter_minute_burst() -> None:
    clock = Clock()
    limits = RateLimits(clock=clock)
    updates = [limits.check("chat.update", {"channel": "C1", "ts": "1"}) for _ in range(13)]
    assert updates == [None] * 12 + [2], "Tier 3: 50/min, burst 12; the 13th waits 60/50 s, rounded up"
    assert limits.check("chat.postEphemeral", {"channel": "C1"}) is None, "another method, its own bucket"
    clock.advance(60 / 50)
    assert limits.check("chat.update", {}) is None
    unknown = [limits.check("some.method", {}) for _ in range(6)]
    assert unknown == [None] * 5 + [3], "unlisted methods are Tier 2: 20/min, burst 5"
    connections = [limits.check("apps.connections.open", {}) for _ in range(2)]
    assert connections == [None, 60], "Tier 1"


def test_speed_runs_slacks_clock_faster_and_retry_after_stays_whole_seconds() -> None:
    clock = Clock()
    limits = RateLimits(speed=4, clock=clock)
    assert posts(limits, "C1", 4) == [None, None, None, 1]
    clock.advance(1 / 4)
    assert posts(limits, "C1", 2) == [None, 1]
    assert RateLimits(speed=4, clock=clock).slack_now() == 0
    assert all(result is None for result in posts(unlimited(), "C1", 50))


async def test_a_limited_call_is_answered_429_ratelimited_with_retry_after() -> None:
    clock = Clock()
    async with FakeSlack(rate_limits=RateLimits(clock=clock)) as slack:
        headers = {"Authorization": f"Bearer {slack.bot_token}"}
        async with httpx.AsyncClient(base_url=slack.api_url, headers=headers) as http:
            answers = [
                await http.post("chat.postMessage", json={"channel": "C1", "text": f"hi {i}"})
                for i in range(4)
            ]
            assert [answer.status_code for answer in answers] == [200, 200, 200, 429]
            assert answers[3].json() == {"ok": False, "error": "ratelimited"}
            assert answers[3].headers["Retry-After"] == "1"
            assert len(slack.messages("C1")) == 3, "a refused call is not carried out"
            clock.advance(1)
            again = await http.post("chat.postMessage", json={"channel": "C1", "text": "hi again"})
            assert again.status_code == 200
