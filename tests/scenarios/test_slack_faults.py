"""Slack faults, end to end: what the user reads, what Slack holds, what Oxen billed, what is stored.

Every case drives the real app over loopback against FakeSlack's fault injection (tests/fakes/slack.py).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from bot.store.model import JobState
from tests.scenarios.harness import Harness, is_card


def slack_saw(harness: Harness) -> str:
    """Everything Slack received from the bot, as one string."""
    return json.dumps([call.params for call in harness.slack.calls], ensure_ascii=False)


def cards_in_channel(harness: Harness, channel: str = "C1") -> list[str]:
    return [m["ts"] for m in harness.slack.messages(channel) if m["text"].startswith("Result of job")]


def uploads_in_channel(harness: Harness, channel: str = "C1") -> list[str]:
    return [m["ts"] for m in harness.slack.messages(channel) if m.get("files")]


async def assert_delivered_once(harness: Harness) -> None:
    """One upload message, one card (the status message rewritten), job uploaded with its card recorded,
    billed once."""
    await harness.slack.wait_for("chat.update", where=is_card, timeout=10)
    [(job, _)] = await harness.jobs()
    await harness.wait_finished(job.id)
    await harness.slack.wait_shared()
    assert len(uploads_in_channel(harness)) == 1
    assert len([f for f in harness.slack.uploaded_files.values() if f.completed]) == 1
    [card_ts] = cards_in_channel(harness)
    assert not any(" failed: " in m["text"] for m in harness.slack.messages("C1"))
    [(job, [image])] = await harness.jobs()
    assert (job.state, job.card_ts) == (JobState.UPLOADED, card_ts)
    assert image.file_id is not None
    assert harness.slack.uploaded_files[image.file_id].completed
    [generation] = harness.oxen.generations.values()
    assert harness.oxen.billed == [generation.id]
    assert len(harness.oxen.submissions) == 1


# -- the upload URL -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "attempts"),
    [
        pytest.param({"status": 429, "retry_after": 0}, 2, id="rate-limited"),
        pytest.param({"status": 429, "retry_after": 1}, 2, id="rate-limited-1s"),
        pytest.param({"status": 500}, 2, id="server-error"),
        # The bytes arrived but the answer was lost: the single-use URL answers 404 to the retry.
        pytest.param({"after": True, "drop": True}, 2, id="answer-lost"),
    ],
)
async def test_an_upload_fault_once_still_delivers_one_file(
    harness: Harness, fault: dict[str, Any], attempts: int
) -> None:
    await harness.start()
    harness.slack.fault("upload", **fault)
    await harness.command("a fox")
    await assert_delivered_once(harness)
    uploads = harness.slack.calls_to("upload")
    assert len(uploads) == attempts
    assert len({call.params["file_id"] for call in uploads}) == 1, "the same reserved file, not a new one"
    assert len(harness.slack.calls_to("files.getUploadURLExternal")) == 1
    assert len(harness.slack.calls_to("files.completeUploadExternal")) == 1
    if fault.get("retry_after") == 1:
        assert uploads[1].at - uploads[0].at >= 1.0, "Retry-After was honoured"


async def test_complete_upload_processed_but_answer_lost_shares_once(harness: Harness) -> None:
    await harness.start()
    harness.slack.fault("files.completeUploadExternal", status=500, after=True)
    await harness.command("a fox")
    await assert_delivered_once(harness)
    assert len(harness.slack.calls_to("files.completeUploadExternal")) == 1
    assert harness.slack.calls_to("files.info"), "the lost answer was checked with files.info"
    assert len([call for call in harness.slack.calls_to("chat.update") if is_card(call)]) == 1


# -- the result card ------------------------------------------------------------------------------------


async def hold_until_status_posted(harness: Harness) -> None:
    """Start a job whose generation is held, so a fault set now hits the card and not the status."""
    harness.oxen.hold()
    await harness.command("a fox")
    await harness.oxen.recorder.wait_for("POST /ai/queue")


async def test_card_shown_but_answer_lost_is_shown_again_harmlessly(harness: Harness) -> None:
    await harness.start()
    await hold_until_status_posted(harness)
    harness.slack.fault("chat.update", status=500, after=True)
    harness.oxen.release()
    await harness.slack.wait_for("chat.update", where=is_card, count=2, timeout=10)
    await assert_delivered_once(harness)
    assert harness.slack.calls_to("conversations.replies") == [], "chat.update is idempotent: no search"
    [(job, _)] = await harness.jobs()
    assert job.card_ts == job.status_ts


async def test_card_refused_every_time_leaves_the_job_uploaded_and_a_restart_shows_it(
    harness: Harness,
) -> None:
    await harness.start()
    await hold_until_status_posted(harness)
    harness.slack.fault("chat.update", error="internal_error", times=3)
    harness.oxen.release()
    await harness.slack.wait_for("chat.update", where=is_card, count=3, timeout=15)
    await harness.slack.wait_shared()
    [(job, _)] = await harness.jobs()
    assert (job.state, job.card_ts) == (JobState.UPLOADED, None)
    assert cards_in_channel(harness) == []
    assert len(uploads_in_channel(harness)) == 1
    assert "failed" not in slack_saw(harness).lower()

    await harness.stop()
    await harness.start()
    await harness.slack.wait_for("chat.update", where=is_card, count=4)
    await assert_delivered_once(harness)
    assert len(harness.slack.calls_to("files.completeUploadExternal")) == 1
    assert len(list(harness.slack.calls_to("chat.postMessage"))) == 1, "the status, only"


# -- the status message: the job is not started, and nothing is left behind -----------------------------


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        pytest.param(
            # Refused every time, Retry-After 60: sent at 0 and 60 s (Slack's); the next try would come
            # after 120 s (each wait counts from an answer), beyond the pacer's patience (PATIENCE = 120 s).
            {"status": 429, "retry_after": 60, "times": -1},
            "Slack is rate-limiting Dreamboard in this channel",
            id="rate-limited",
        ),
        pytest.param(
            {"status": 500},
            "Slack did not answer when Dreamboard posted the status message",
            id="server-error",
        ),
        pytest.param(
            {"error": "not_in_channel"},
            "I'm not in this conversation yet. Invite me with `/invite <@U0BOT>`",
            id="not-in-channel",
        ),
    ],
)
async def test_a_refused_status_message_is_explained_and_leaves_no_job(
    harness: Harness, fault: dict[str, Any], expected: str
) -> None:
    await harness.start()
    harness.slack.fault("chat.postMessage", **fault)
    await harness.command("a fox")
    [answer] = await harness.slack.wait_for("response_url")
    assert answer.params["response_type"] == "ephemeral"
    assert expected in answer.params["text"]
    assert "Something went wrong" not in slack_saw(harness)
    attempts = len(harness.slack.calls_to("chat.postMessage"))
    if fault.get("status") == 429:
        assert attempts == 2, "Retry-After was waited out once, then the patience ran out"
    else:
        assert attempts == 1
    assert await harness.jobs() == []
    assert harness.oxen.submissions == []
    assert harness.slack.messages("C1") == []

    harness.slack.clear_faults()
    await harness.command("a second fox")
    status = (await harness.slack.wait_for("chat.postMessage", count=attempts + 1))[-1]
    assert "*Generating…*" in status.params["text"], "no place in line was leaked: it starts at once"
    await harness.slack.wait_for("chat.update", where=is_card, timeout=10)
    [(job, _)] = await harness.jobs()
    assert (job.prompt, job.state) == ("a second fox", JobState.UPLOADED)


async def test_a_status_message_posted_but_answer_lost_leaves_nothing_misleading(harness: Harness) -> None:
    await harness.start()
    harness.slack.fault("chat.postMessage", status=500, after=True)
    await harness.command("a fox")

    def settled() -> bool:
        done = any(is_card(call) for call in harness.slack.calls_to("chat.update"))
        return done or bool(harness.slack.calls_to("response_url"))

    await harness.slack.recorder.wait_until(settled, timeout=10)
    if harness.slack.calls_to("response_url"):
        # Told "not started": then Slack must not show the job as queued.
        assert await harness.jobs() == []
        assert not any("Generating" in m["text"] for m in harness.slack.messages("C1"))
    else:
        # Or the posted message was found and the job went on with it, as its one status message.
        await assert_delivered_once(harness)
        [(job, _)] = await harness.jobs()
        [status] = [m for m in harness.slack.messages("C1") if not m.get("files")]
        assert (status["ts"], status["text"].startswith("Result of job")) == (job.status_ts, True)


# -- a cancel that comes too late ---------------------------------------------------------------------


async def test_x_while_the_files_are_being_shared_delivers_and_says_so(harness: Harness) -> None:
    await harness.start()
    # The share is held (then carried out) long enough for the reaction to arrive while it is in flight.
    harness.slack.fault("files.completeUploadExternal", delay=3.0)
    await harness.command("a fox")
    await harness.slack.wait_for("files.completeUploadExternal")
    [(job, _)] = await harness.jobs()
    event = harness.slack.reaction_event("x", user="U1", channel="C1", ts=str(job.status_ts))
    await harness.slack.send_event(harness.events_url, event)
    [told] = await harness.slack.wait_for("chat.postEphemeral", timeout=10)
    assert told.params["user"] == "U1"
    assert "was already posting its images, so it was delivered, not cancelled" in told.params["text"]
    await assert_delivered_once(harness)
    assert harness.slack.deleted_files == []
    assert harness.oxen.recorder.calls_to("DELETE /ai/queue/{id}") == []
    assert not any("Cancelled" in call.params["text"] for call in harness.slack.calls_to("chat.update"))


# -- caps under concurrency ----------------------------------------------------------------------------


async def test_concurrent_commands_over_the_cap_admit_exactly_one_more(harness: Harness) -> None:
    await harness.start(max_concurrent_jobs=1, max_queued_per_user=1)
    harness.oxen.hold()
    await harness.command("running")
    await harness.oxen.recorder.wait_for("POST /ai/queue")
    prompts = [f"burst {i}" for i in range(6)]
    await asyncio.gather(*(harness.command(prompt) for prompt in prompts))
    refusals = await harness.slack.wait_for("response_url", count=5)
    await harness.slack.wait_for("chat.postMessage", count=2)
    assert all("You have 1 jobs queued already" in call.params["text"] for call in refusals)
    assert all(call.params["response_type"] == "ephemeral" for call in refusals)
    jobs = [job for job, _ in await harness.jobs()]
    assert len(jobs) == 2
    [admitted] = [job.prompt for job in jobs if job.prompt != "running"]
    refused = {prompt for prompt in prompts if any(prompt in call.params["text"] for call in refusals)}
    assert refused == set(prompts) - {admitted}
    harness.oxen.release()
    await harness.slack.wait_for("files.completeUploadExternal", count=2)
    await harness.slack.wait_for("chat.update", where=is_card, count=2, timeout=10)
    assert len(harness.slack.calls_to("response_url")) == 5
    assert len(harness.oxen.submissions) == 2
    assert sorted(harness.oxen.billed) == sorted(harness.oxen.generations)
    assert {job.state for job, _ in await harness.jobs()} == {JobState.UPLOADED}
