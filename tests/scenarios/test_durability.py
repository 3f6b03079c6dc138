"""Restarts, duplicate deliveries, caps and fairness: nothing is lost or done twice. The restart while
Oxen works runs on PostgreSQL too."""

from __future__ import annotations

import json

from bot.store.model import ImageState, JobState
from tests.scenarios.backends import BOTH_BACKENDS
from tests.scenarios.harness import Harness, is_card


@BOTH_BACKENDS
async def test_restart_while_oxen_is_working_polls_instead_of_resubmitting(harness: Harness) -> None:
    await harness.start()
    harness.oxen.hold()
    await harness.command("a fox --n 2")
    await harness.oxen.recorder.wait_for("POST /ai/queue", count=2)
    await harness.stop()
    [(job, images)] = await harness.jobs()
    assert job.state is JobState.RUNNING
    assert all(image.state is ImageState.SUBMITTED and image.generation_id for image in images)

    await harness.start()
    harness.oxen.release()
    [complete] = await harness.slack.wait_for("files.completeUploadExternal")
    assert len(json.loads(complete.params["files"])) == 2
    await harness.slack.wait_for("chat.update", where=is_card)
    assert len(harness.oxen.submissions) == 2
    assert len(harness.slack.calls_to("files.completeUploadExternal")) == 1
    [(job, _)] = await harness.jobs()
    assert job.state is JobState.UPLOADED


async def test_restart_during_upload_uploads_exactly_once(harness: Harness) -> None:
    await harness.start()
    harness.slack.fault("files.completeUploadExternal", delay=30.0)
    await harness.command("a fox")
    await harness.slack.wait_for("files.getUploadURLExternal")
    await harness.stop(grace=0.05)
    [(job, images)] = await harness.jobs()
    assert job.state is JobState.RUNNING
    assert images[0].state is ImageState.SUCCEEDED

    await harness.start()
    await harness.slack.wait_for("chat.update", where=is_card)
    shared = [f for f in harness.slack.uploaded_files.values() if f.completed]
    assert len(shared) == 1
    assert len(harness.oxen.submissions) == 1
    [(job, _)] = await harness.jobs()
    assert job.state is JobState.UPLOADED


async def test_restart_before_the_result_card_shows_it_without_uploading_again(harness: Harness) -> None:
    await harness.start()
    harness.oxen.hold()
    await harness.command("a fox")
    await harness.oxen.recorder.wait_for("POST /ai/queue")
    harness.slack.fault("chat.update", delay=30.0)
    harness.oxen.release()
    await harness.slack.wait_for("chat.update", where=is_card)
    await harness.stop(grace=0.05)
    [(job, _)] = await harness.jobs()
    assert (job.state, job.card_ts) == (JobState.UPLOADED, None)

    await harness.start()
    await harness.slack.wait_for("chat.update", where=is_card, count=2)
    await harness.wait_finished(job.id)
    assert len(harness.slack.calls_to("files.completeUploadExternal")) == 1
    assert len([f for f in harness.slack.uploaded_files.values() if f.completed]) == 1
    [(job, _)] = await harness.jobs()
    assert job.card_ts is not None


async def fill_the_queue(harness: Harness) -> None:
    """Start a bot with one slot and a queue cap of 1, and fill both for U1 (Oxen holds the first)."""
    await harness.start(max_concurrent_jobs=1, max_queued_per_user=1)
    harness.oxen.hold()
    await harness.command("first")
    await harness.oxen.recorder.wait_for("POST /ai/queue")
    await harness.command("second")
    await harness.slack.wait_for("chat.postMessage", count=2)


async def test_over_the_queue_cap_the_user_is_told_and_nothing_is_lost(harness: Harness) -> None:
    await fill_the_queue(harness)
    await harness.command("third and over the cap")
    [reply] = await harness.slack.wait_for("response_url")
    assert reply.params["response_type"] == "ephemeral"
    assert "You have 1 jobs queued" in reply.params["text"]
    assert "third and over the cap" in reply.params["text"]
    assert [job.prompt for job, _ in await harness.jobs()] == ["first", "second"]
    harness.oxen.release()
    await harness.slack.wait_for("files.completeUploadExternal", count=2)


async def test_slots_are_shared_fairly_between_users(harness: Harness) -> None:
    await harness.start(max_concurrent_jobs=1)
    harness.oxen.hold()
    await harness.command("alice one", user_id="UA")
    await harness.oxen.recorder.wait_for("POST /ai/queue")
    await harness.command("alice two", user_id="UA")
    await harness.command("alice three", user_id="UA")
    await harness.command("bob one", user_id="UB")
    await harness.slack.wait_for("chat.postMessage", count=4)
    harness.oxen.release()
    await harness.slack.wait_for("files.completeUploadExternal", count=4)
    assert [body["prompt"] for body in harness.oxen.submissions] == [
        "alice one",
        "bob one",
        "alice two",
        "alice three",
    ]


async def test_over_the_cap_with_a_refused_response_url_the_user_is_told_in_an_ephemeral(
    harness: Harness,
) -> None:
    await fill_the_queue(harness)
    harness.slack.fault("response_url", status=500)  # expired or used up: the answer must still arrive
    await harness.command("third and over the cap")
    [reply] = await harness.slack.wait_for("chat.postEphemeral")
    assert (reply.params["channel"], reply.params["user"]) == ("C1", "U1")
    assert "third and over the cap" in str(reply.params["text"])
    harness.oxen.release()
    await harness.slack.wait_for("files.completeUploadExternal", count=2)
