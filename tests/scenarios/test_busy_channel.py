"""A busy channel on the rate-limited FakeSlack (its default, tests/fakes/ratelimits.py), at the scenario
speed: every request ends with its images or a message to its user saying why, and nothing twice."""

from __future__ import annotations

import functools
from collections import Counter
from urllib.parse import urlsplit

from bot.features.intake import BUSY_NOTICE
from bot.store.model import JobState
from tests.scenarios.bursts import CHANNEL, account, describe, settle, spread
from tests.scenarios.harness import Harness, is_card

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


async def test_a_waiting_jobs_status_shows_its_place_in_line_as_the_line_moves(harness: Harness) -> None:
    await harness.start(max_concurrent_jobs=1)
    harness.oxen.hold()
    for user in ("U1", "U2", "U3", "U4"):
        await harness.command(f"a patient fox for {user}", user_id=user)
        await harness.slack.wait_for(
            "chat.postMessage", where=lambda call, u=user: f"<@{u}>" in str(call.params)
        )
    await harness.oxen.recorder.wait_for("POST /ai/queue")
    first, second, third, fourth = [job for job, _ in await harness.announced_jobs(4)]
    shown = [str(call.params["text"]).split(":")[2] for call in harness.slack.calls_to("chat.postMessage")]
    assert shown == [
        " *Generating…* · 1 image",  # it got the slot at once, so it is posted as generating
        " *Queued · position 1*",
        " *Queued · position 2*",
        " *Queued · position 3*",
    ]

    assert harness.running is not None
    assert await harness.running.services.runner.cancel(second.id) is JobState.CANCELLED

    def queued(job_ts: str | None, position: int) -> bool:
        return any(
            call.params.get("ts") == job_ts
            and f"*Queued · position {position}*" in str(call.params.get("text"))
            for call in harness.slack.calls_to("chat.update")
        )

    await harness.slack.recorder.wait_until(
        lambda: queued(third.status_ts, 1) and queued(fourth.status_ts, 2), timeout=10
    )
    edits = Counter(
        call.params["ts"]
        for call in harness.slack.calls_to("chat.update")
        if "Queued" in str(call.params["text"])
    )
    assert edits == {third.status_ts: 1, fourth.status_ts: 1}, "one edit per move, none for the others"

    harness.oxen.release()
    await harness.slack.wait_for(
        "chat.update",
        where=lambda call: call.params.get("ts") == fourth.status_ts and is_card(call),
        timeout=30,
    )
    for ts in (first.status_ts, third.status_ts):
        [*_, last] = [call for call in harness.slack.calls_to("chat.update") if call.params.get("ts") == ts]
        assert is_card(last), "no late position edit overwrote a later status"


async def test_a_request_that_must_wait_its_turn_is_told_its_status_message_is_coming(
    harness: Harness,
) -> None:
    await harness.start()
    harness.slack.fault("chat.postMessage", status=429, retry_after=30)
    await harness.command("the first fox", user_id="U1")
    await harness.slack.wait_for("chat.postMessage")
    await harness.command("the second fox", user_id="U2")
    [notice] = await harness.slack.wait_for("response_url")
    assert notice.params["response_type"] == "ephemeral"
    assert str(notice.params["text"]).startswith(BUSY_NOTICE)
    assert "about 3" in notice.params["text"], "Slack's Retry-After 30 holds the channel"
    await harness.slack.wait_for("chat.update", where=is_card, count=2)
    assert len(harness.slack.calls_to("response_url")) == 1, "the first request was not waiting when it came"
    assert [job.state for job, _ in await harness.jobs()] == [JobState.UPLOADED, JobState.UPLOADED]


async def test_a_rate_limited_share_and_card_wait_their_turn_and_the_job_is_delivered(
    harness: Harness,
) -> None:
    await harness.start()
    harness.oxen.hold()
    await harness.command("a fox")
    await harness.oxen.recorder.wait_for("POST /ai/queue")
    harness.slack.fault("files.completeUploadExternal", status=429, retry_after=2, times=2)
    harness.slack.fault("chat.postMessage", status=429, retry_after=2, times=3)
    harness.oxen.release()
    await harness.slack.wait_for("chat.update", where=is_card, timeout=15)
    [(job, [image])] = await harness.jobs()
    assert (job.state, job.error) == (JobState.UPLOADED, None)
    assert len(harness.slack.calls_to("files.completeUploadExternal")) == 3
    assert not any("failed" in str(m["text"]).lower() for m in harness.slack.messages(CHANNEL))
    assert image.file_id is not None


async def test_the_rate_limits_at_work_are_metrics(harness: Harness) -> None:
    await harness.start()
    harness.slack.fault("chat.postMessage", status=429, retry_after=1)
    await harness.generate("a counted fox")
    status, text = await harness.get("/metrics")
    assert status == 200
    assert "dreamboard_slack_ratelimited_total 1.0" in text.splitlines()
    assert "dreamboard_queue_position_edits_total 0.0" in text.splitlines()
    [paced] = [line for line in text.splitlines() if line.startswith("dreamboard_slack_paced_seconds_total ")]
    assert float(paced.split()[1]) > 0


async def test_a_burst_of_first_requests_shares_one_authorization(harness: Harness) -> None:
    # Bolt's own single-team authorization would call auth.test per request (on an unpaced client) until
    # one answer is cached; in a burst that gets rate-limited and Bolt answers "please try again".
    await harness.start()
    asked, response_users = await commands(harness, 12, 6, "an early fox", within=0.2)
    tally = await account(harness.slack, harness.database, asked, 1, response_users)
    assert (tally.silent_losses, tally.images_delivered) == (0, 12), describe(tally)
    assert len(harness.slack.calls_to("auth.test")) <= 3, "authorization, scopes, workspace URL: once each"
