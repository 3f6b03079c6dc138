"""`python -m bench --bursts`: the three one-channel bursts of issue 11 against the rate-limited FakeSlack,
at Slack's real speed by default (1 post per second per channel), each against a fresh bot process.

Per burst: images delivered, users told why a request did not start, silent losses, duplicates, Web API
calls per delivered image, wall time (first request sent → last request ended) and the ideal: the least
time Slack's limits allow for the calls this bot made (per limited bucket, the calls past its burst
divided by its rate; the slowest bucket sets it), or the fake Oxen's latency if that is longer.
"""

from __future__ import annotations

import functools
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.process import BotProcess, start_bot
from tests.fakes import ratelimits
from tests.fakes.oxen import FakeOxen
from tests.fakes.slack import FakeSlack
from tests.scenarios.bursts import CHANNEL, Tally, account, settle, spread

LATENCY = 5.0
"""The fake Oxen's generation time, seconds."""
SLOTS = "8"
"""MAX_CONCURRENT_JOBS, the default."""
NOT_WEB_API = ("response_url", "file_download", "upload")
"""Recorded calls that are not Web API calls (the byte upload is not counted, as issue 11 counts)."""


async def run_bursts(folder: Path, speed: float = 1.0) -> dict[str, Any]:
    """The three bursts; `speed` > 1 runs Slack's clock (and the bot's pacing) that much faster."""
    results: dict[str, Any] = {}
    for name, burst in (
        ("burst30", thirty_commands),
        ("burst_n4", four_image_commands),
        ("burst_threads", replies),
    ):
        results.update({f"{name}_{key}": value for key, value in (await burst(folder, speed)).items()})
    results["bursts_speed"] = speed
    return results


Work = Callable[[FakeSlack, BotProcess, Path], Awaitable[Tally]]


async def _with_bot(folder: Path, label: str, speed: float, work: Work) -> dict[str, Any]:
    async with (
        FakeSlack(keep_uploads=False, rate_limits=ratelimits.RateLimits(speed=speed)) as slack,
        FakeOxen(latency=LATENCY / speed) as oxen,
    ):
        database = folder / f"{label}.sqlite3"
        bot = await start_bot(slack, oxen, database, max_concurrent_jobs=SLOTS)
        try:
            await oxen.recorder.wait_until(lambda: oxen.subscriber_count() >= 1, timeout=30)
            started = time.perf_counter()
            tally = await work(slack, bot, database)
            tally.wall_time = (time.perf_counter() - started) * speed
        finally:
            await bot.stop()
        return summary(slack, tally)


async def _commands(
    slack: FakeSlack,
    bot: BotProcess,
    database: Path,
    *,
    count: int,
    users: int,
    text: str,
    within: float,
    n: int,
) -> Tally:
    speed = slack.rate_limits.speed
    payloads = [
        slack.command_payload(f"{text} {i}", user_id=f"U{i % users + 1:02d}", channel_id=CHANNEL)
        for i in range(count)
    ]
    owners = {urlsplit(p["response_url"]).path: p["user_id"] for p in payloads}
    await spread(
        [functools.partial(slack.send_command_payload, bot.events_url, p) for p in payloads], within / speed
    )
    await settle(slack, count, timeout=max(120.0, 20 * count / speed))
    return await account(slack, database, Counter(p["user_id"] for p in payloads), n, owners)


async def thirty_commands(folder: Path, speed: float) -> dict[str, Any]:
    """30 `/imagine` from 10 people into one channel within 3 s."""
    work = functools.partial(_commands, count=30, users=10, text="a busy fox", within=3.0, n=1)
    return await _with_bot(folder, "burst30", speed, work)


async def four_image_commands(folder: Path, speed: float) -> dict[str, Any]:
    """10 `/imagine … --n 4` from 5 people into one channel within 2 s."""
    work = functools.partial(_commands, count=10, users=5, text="four busy foxes --n 4", within=2.0, n=4)
    return await _with_bot(folder, "burst_n4", speed, work)


async def replies(folder: Path, speed: float) -> dict[str, Any]:
    """15 thread replies from 5 people within 2 s, in the thread of one finished job."""

    async def work(slack: FakeSlack, bot: BotProcess, database: Path) -> Tally:
        await slack.send_command(bot.events_url, "a quiet fox", user_id="U01", channel_id=CHANNEL)
        await settle(slack, 1, timeout=120)
        root = slack.messages(CHANNEL)[0]["ts"]
        events = [
            slack.human_message(
                CHANNEL, f"now in a busy street {i}", user=f"U{i % 5 + 1:02d}", thread_ts=root
            )
            for i in range(15)
        ]
        sends = [functools.partial(slack.send_event, bot.events_url, event) for event in events]
        await spread(sends, 2.0 / slack.rate_limits.speed)
        await settle(slack, 16, timeout=max(120.0, 300 / slack.rate_limits.speed))
        asked = Counter(str(event["user"]) for event in events) + Counter({"U01": 1})
        return await account(slack, database, asked, 1)

    return await _with_bot(folder, "burst_threads", speed, work)


def summary(slack: FakeSlack, tally: Tally) -> dict[str, Any]:
    """The figures of one burst."""
    web_calls = [call for call in slack.calls if call.method not in NOT_WEB_API]
    refused = slack.rate_limits.refused
    least = {key: round(seconds, 1) for key, seconds in slack.rate_limits.least_seconds().items()}
    return {
        "requests": float(sum(tally.requests.values())),
        "images_asked": float(tally.images_asked),
        "images_delivered": float(tally.images_delivered),
        "users_told": float(sum(tally.told.values())),
        "busy_notices": float(sum(tally.notices.values())),
        "failed_jobs": float(len(tally.failed_jobs)),
        "silent_losses": float(tally.silent_losses),
        "duplicates": float(len(tally.duplicates)),
        "refused_429": float(len(refused)),
        "web_api_calls_per_image": len(web_calls) / max(1, tally.images_delivered),
        "wall_s": tally.wall_time,
        "wall_to_ideal": tally.wall_time / max(max(least.values(), default=0.0), LATENCY),
        "ideal_s": max(max(least.values(), default=0.0), LATENCY),
        "details": {
            "slowest_buckets": dict(sorted(least.items(), key=lambda item: -item[1])[:3]),
            "refused_by_method": dict(Counter(method for method, _, _ in refused)),
            "calls_by_method": dict(Counter(call.method for call in web_calls)),
            "silent": tally.silent,
            "duplicates": tally.duplicates,
            "failed": tally.failed_jobs,
        },
    }
