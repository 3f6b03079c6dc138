"""A busy channel on the rate-limited FakeSlack (its default, tests/fakes/ratelimits.py), at the scenario
speed: every request ends with its images or a message to its user saying why, and nothing twice."""

from __future__ import annotations

import functools
from collections import Counter
from urllib.parse import urlsplit

from bot.store.model import JobState
from tests.scenarios.bursts import CHANNEL, account, describe, settle, spread
from tests.scenarios.harness import Harness

SETTLE_TIMEOUT = 90.0
"""Generous: these bursts take a few seconds at the scenario speed, more on a loaded CI machine."""


async def commands(
    harness: Harness, count: int, users: int, text: str, within: float
) -> tuple[Counter[str], dict[str, str]]:
    """Send `count` signed /imagine from `users` people into one channel, spread over `within` of Slack's
    seconds; wait until each has ended; returns commands per user and each response_url path's user."""
    speed = harness.slack.rate_limits.speed
    payloads = [
        harness.slack.command_payload(f"{text} {i}", user_id=f"U{i % users + 1:02d}", channel_id=CHANNEL)
        for i in range(count)
    ]
    response_users = {urlsplit(p["response_url"]).path: p["user_id"] for p in payloads}
    sends = [functools.partial(harness.slack.send_command_payload, harness.events_url, p) for p in payloads]
    responses = await spread(sends, within / speed)
    assert [response.status for response in responses] == [200] * count
    await settle(harness.slack, count, timeout=SETTLE_TIMEOUT)
    return Counter(p["user_id"] for p in payloads), response_users


async def test_thirty_commands_from_ten_people_within_three_seconds(harness: Harness) -> None:
    await harness.start()
    asked, response_users = await commands(harness, 30, 10, "a busy fox", within=3)
    tally = await account(harness.slack, harness.database, asked, 1, response_users)
    assert tally.silent_losses == 0, describe(tally)
    assert tally.duplicates == [], describe(tally)
    assert (tally.images_delivered, tally.failed_jobs) == (30, []), describe(tally)
    assert sum(tally.told.values()) == 0, "paced, every status message was posted"
    assert_paced(harness)


async def test_ten_four_image_commands(harness: Harness) -> None:
    await harness.start()
    asked, response_users = await commands(harness, 10, 5, "four busy foxes --n 4", within=2)
    tally = await account(harness.slack, harness.database, asked, 4, response_users)
    assert tally.silent_losses == 0, describe(tally)
    assert tally.duplicates == [], describe(tally)
    assert (tally.images_delivered, tally.failed_jobs) == (40, []), describe(tally)
    assert_paced(harness)


async def test_fifteen_thread_replies_from_five_people_within_two_seconds(harness: Harness) -> None:
    await harness.start()
    root = await harness.generate("a quiet fox")
    speed = harness.slack.rate_limits.speed
    replies = [
        harness.slack.human_message(
            CHANNEL, f"now in a busy street {i}", user=f"U{i % 5 + 1:02d}", thread_ts=root
        )
        for i in range(15)
    ]
    responses = await spread([functools.partial(harness.send, event) for event in replies], 2 / speed)
    assert [response.status for response in responses] == [200] * 15
    await settle(harness.slack, 16, timeout=SETTLE_TIMEOUT)
    asked = Counter(str(event["user"]) for event in replies) + Counter({"U1": 1})
    tally = await account(harness.slack, harness.database, asked, 1)
    assert tally.silent_losses == 0, describe(tally)
    assert tally.duplicates == [], describe(tally)
    assert (tally.images_delivered, tally.failed_jobs) == (16, []), describe(tally)
    jobs = [job for job, _ in await harness.jobs()]
    assert all(job.thread_ts == root and job.state is JobState.UPLOADED for job in jobs)
    assert_paced(harness)


def assert_paced(harness: Harness) -> None:
    """Posts took turns instead of being retried into the limit: few of them were refused."""
    refused = [entry for entry in harness.slack.rate_limits.refused if entry[1].startswith("channel:")]
    posts = len(harness.slack.calls_to("chat.postMessage")) + len(
        harness.slack.calls_to("files.completeUploadExternal")
    )
    assert len(refused) <= posts // 10, f"{len(refused)} of {posts} posts refused: {refused[:10]}"
