"""Reactions on the image message under Slack's timing: the share lands after completeUploadExternal
answers, and the bot learns the upload message from its own file_share event (or, failing that, from a
bounded files.info poll)."""

from __future__ import annotations

from typing import Any

import pytest

from bot.jobs.uploads import ShareTiming
from bot.store.model import JobState
from tests.scenarios.harness import Harness, is_card

LATE = 3.0
"""Shares visible this long after completeUploadExternal (issue 11 measured 0 jobs from a 🔁 then)."""


async def reroll_on_the_image(harness: Harness, *, command: Any, react: Any) -> None:
    """A 🔁 on the image message of a job whose share lands LATE seconds after its upload completed makes
    exactly one job, in the same thread."""
    harness.slack.share_delay = LATE
    await command("a red fox --seed 40")
    [card] = await harness.slack.wait_for("chat.update", where=is_card, timeout=10)
    assert not [m for m in harness.slack.messages("C1") if m.get("files")], "the share has not landed yet"
    [(job, _)] = await harness.jobs()
    assert (job.state, job.upload_ts, card.params["ts"]) == (JobState.UPLOADED, None, job.status_ts)

    upload_ts = await harness.wait_upload_ts(job.id, timeout=LATE + 10)
    [upload] = [m for m in harness.slack.messages("C1") if m.get("files")]
    assert upload_ts == upload["ts"]
    assert harness.slack.calls_to("files.info") == [], "learned from the file_share event"

    await react(harness.slack.reaction_event("repeat", user="U2", channel="C1", ts=upload_ts))
    await react(harness.slack.reaction_event("repeat", user="U2", channel="C1", ts=upload_ts))  # again
    await harness.slack.wait_for("chat.update", where=is_card, count=2, timeout=10)
    jobs = await harness.jobs()
    assert len(jobs) == 2
    reroll, _ = jobs[1]
    assert (reroll.parent_id, reroll.thread_ts, reroll.user_id) == (job.id, job.status_ts, "U2")


async def test_a_reroll_on_the_image_message_works_with_shares_visible_late_http(harness: Harness) -> None:
    await harness.start()

    async def command(text: str) -> None:
        assert (await harness.command(text)).status == 200

    async def react(event: dict[str, Any]) -> None:
        assert (await harness.send(event)).status == 200

    await reroll_on_the_image(harness, command=command, react=react)
    assert {d["via"] for d in harness.slack.delivered_events} == {"http"}


async def test_a_reroll_on_the_image_message_works_with_shares_visible_late_socket_mode(
    harness: Harness,
) -> None:
    await harness.start(slack_app_token=harness.slack.app_token, slack_signing_secret=None)
    await harness.slack.wait_socket_connected(timeout=5)

    async def command(text: str) -> None:
        payload = harness.slack.command_payload(text)
        await harness.slack.socket_send("slash_commands", payload, accepts_response_payload=True)

    async def react(event: dict[str, Any]) -> None:
        envelope = harness.slack.event_envelope(event)
        await harness.slack.socket_send("events_api", envelope, accepts_response_payload=False)

    await reroll_on_the_image(harness, command=command, react=react)
    assert {d["via"] for d in harness.slack.delivered_events} == {"socket"}


async def test_file_access_stubs_in_the_event_are_matched_by_file_id(harness: Harness) -> None:
    harness.slack.event_files = "stub"
    await harness.start()
    await harness.generate("a red fox")
    [(job, [image])] = await harness.jobs()
    [event] = [d["event"] for d in harness.slack.delivered_events]
    assert event["files"][0]["file_access"] == "check_file_info"
    assert await harness.wait_upload_ts(job.id) == event["ts"]
    assert event["files"][0]["id"] == image.file_id
    assert harness.slack.calls_to("files.info") == []


async def test_without_the_event_a_bounded_files_info_poll_finds_the_upload_message(harness: Harness) -> None:
    harness.share_timing = ShareTiming(event_wait=0.2, polls=(0.2, 1.0, 3.0))
    await harness.start()
    harness.slack.events_url = None  # the event is lost (not subscribed, or a delivery that failed)
    harness.slack.share_delay = 0.5  # a poll finds the share (the first one may come too early)
    await harness.command("a red fox")
    await harness.slack.wait_for("chat.postMessage")  # the job is stored after the ack, before its status
    [(job, _)] = await harness.jobs()
    upload_ts = await harness.wait_upload_ts(job.id)
    [upload] = [m for m in harness.slack.messages("C1") if m.get("files")]
    assert upload_ts == upload["ts"]
    infos = harness.slack.calls_to("files.info")
    assert 1 <= len(infos) <= 3
    stored = [j for j, _ in await harness.jobs() if j.id == job.id]
    assert stored[0].upload_ts == upload_ts


async def test_the_poll_gives_up_after_its_bound(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    harness.share_timing = ShareTiming(event_wait=0.1, polls=(0.1, 0.2))
    running = await harness.start()
    harness.slack.events_url = None
    harness.slack.share_delay = 30.0  # never within the bound
    await harness.command("a red fox")
    await harness.slack.wait_for("files.info", count=2)
    await running.services.uploads.idle()
    assert any("Slack showed no share" in r.getMessage() for r in caplog.records)
    [(job, _)] = await harness.jobs()
    assert (job.state, job.upload_ts) == (JobState.UPLOADED, None)
    assert len(harness.slack.calls_to("files.info")) == 2
