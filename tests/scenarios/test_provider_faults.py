"""Oxen.ai faults, end to end: what the user reads, what Oxen billed, what Slack holds, what is stored.

Every case drives the real app over loopback against FakeOxen's fault injection (tests/fakes/oxen.py).
"Billed" is FakeOxen's own ledger: the generations that succeeded there (oxen-api.md §0.6, per image).
"""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import pytest
from PIL import Image

from bot.store.model import ImageState, JobState
from tests.fakes.recorder import Call
from tests.scenarios.harness import Harness, is_card

POLLS = "GET /ai/queue/{id}"


def is_failure_reply(call: Call) -> bool:
    """The thread reply that explains a failed job."""
    return " failed: " in str(call.params.get("text")) and not is_card(call)


def slack_saw(harness: Harness) -> str:
    """Everything Slack received from the bot, as one string."""
    return json.dumps([call.params for call in harness.slack.calls], ensure_ascii=False)


async def failure_reply(harness: Harness) -> str:
    """Wait for the failure reply in the thread; its full text (blocks included)."""
    [reply] = await harness.slack.wait_for("chat.postMessage", where=is_failure_reply, timeout=10)
    await harness.slack.wait_for("chat.update", where=lambda call: "Failed" in call.params["text"])
    return json.dumps([reply.params["text"], reply.params["blocks"]], ensure_ascii=False)


def assert_nothing_generic(harness: Harness) -> None:
    everything = slack_saw(harness)
    assert "Something went wrong" not in everything
    assert "internal error" not in everything


async def assert_delivered_once(harness: Harness, *, images: int = 1) -> None:
    """One upload message with `images` files, one result card (the status message), job uploaded."""
    await harness.slack.wait_for("chat.update", where=is_card, timeout=10)
    [(job, _)] = await harness.jobs()
    await harness.wait_finished(job.id)
    await harness.slack.wait_shared()
    [complete] = harness.slack.calls_to("files.completeUploadExternal")
    assert len(json.loads(complete.params["files"])) == images
    assert len([f for f in harness.slack.uploaded_files.values() if f.completed]) == images
    channel = harness.slack.messages("C1")
    assert len([m for m in channel if m.get("files")]) == 1
    assert len([m for m in channel if m["text"].startswith("Result of job")]) == 1
    assert not any(" failed: " in m["text"] for m in channel)
    [(job, stored)] = await harness.jobs()
    assert job.state is JobState.UPLOADED
    assert job.card_ts is not None
    assert all(image.state is ImageState.SUCCEEDED and image.file_id for image in stored)


def poll_ids(harness: Harness) -> set[str]:
    return {str(call.params["generation_id"]) for call in harness.oxen.recorder.calls_to(POLLS)}


# -- a submission whose answer was lost is reconciled, not paid for twice -----------------------------


async def test_submission_processed_then_500_is_adopted_not_resubmitted(harness: Harness) -> None:
    await harness.start()
    harness.oxen.fault("POST /ai/queue", status=500, after=True)
    await harness.command("a fox")
    await assert_delivered_once(harness)
    assert len(harness.oxen.submissions) == 1
    assert len(harness.oxen.recorder.calls_to("GET /ai/queue")) >= 1, "reconciled with the list"
    [generation] = harness.oxen.generations.values()
    assert harness.oxen.billed == [generation.id]
    [(_, [image])] = await harness.jobs()
    assert image.generation_id == generation.id


async def test_submission_processed_then_connection_dropped_is_adopted(harness: Harness) -> None:
    await harness.start()
    harness.oxen.fault("POST /ai/queue", after=True, drop=True)
    await harness.command("a fox")
    await assert_delivered_once(harness)
    assert len(harness.oxen.submissions) == 1
    assert len(harness.oxen.recorder.calls_to("GET /ai/queue")) >= 1, "reconciled with the list"
    [generation] = harness.oxen.generations.values()
    assert harness.oxen.billed == [generation.id]
    [(_, [image])] = await harness.jobs()
    assert image.generation_id == generation.id


async def test_submission_processed_then_read_timeout_is_adopted(harness: Harness) -> None:
    running = await harness.start()
    # The client's read timeout is 180 s (OxenClient); a fault that outwaits it would take three minutes.
    # Shorten it on the running client instead: the fault then holds the answer far longer than the bot
    # waits, and httpx raises a real ReadTimeout on a request Oxen did process.
    running.services.oxen._http.timeout = httpx.Timeout(30.0, read=1.0)
    harness.oxen.fault("POST /ai/queue", after=True, delay=60.0)
    await harness.command("a fox")
    await assert_delivered_once(harness)
    assert len(harness.oxen.submissions) == 1
    assert len(harness.oxen.recorder.calls_to("GET /ai/queue")) >= 1, "reconciled with the list"
    [generation] = harness.oxen.generations.values()
    assert harness.oxen.billed == [generation.id]


async def test_submission_500_that_did_not_run_is_resubmitted_once(harness: Harness) -> None:
    await harness.start()
    harness.oxen.fault("POST /ai/queue", status=500)
    await harness.command("a fox")
    await assert_delivered_once(harness)
    posts = harness.oxen.recorder.calls_to("POST /ai/queue")
    lists = harness.oxen.recorder.calls_to("GET /ai/queue")
    assert len(posts) == 2
    assert lists, "the lost answer was reconciled before the second POST"
    assert posts[0].at < lists[0].at < posts[1].at
    [generation] = harness.oxen.generations.values()
    assert harness.oxen.billed == [generation.id]


async def test_rate_limited_submission_waits_retry_after_then_succeeds(harness: Harness) -> None:
    await harness.start()
    harness.oxen.fault("POST /ai/queue", status=429, retry_after=1)
    await harness.command("a fox")
    await assert_delivered_once(harness)
    first, second = harness.oxen.recorder.calls_to("POST /ai/queue")
    assert second.at - first.at >= 1.0, "Retry-After: 1 was honoured"
    assert harness.oxen.recorder.calls_to("GET /ai/queue") == [], "a 429 is known not to have run"
    [generation] = harness.oxen.generations.values()
    assert harness.oxen.billed == [generation.id]


# -- answers that are not what was asked for ------------------------------------------------------------


async def test_an_empty_generations_answer_fails_the_job_with_a_specific_message(harness: Harness) -> None:
    await harness.start()
    harness.oxen.fault("POST /ai/queue", status=200, body={"generations": []})
    await harness.command("a fox")
    text = await failure_reply(harness)
    assert "accepted the request but started 0 generations, not 1" in text
    assert_nothing_generic(harness)
    assert len(harness.oxen.submissions) == 1
    assert harness.oxen.billed == []
    assert harness.slack.calls_to("files.getUploadURLExternal") == []
    [(job, [image])] = await harness.jobs()
    assert job.state is JobState.FAILED
    assert job.error is not None
    assert "started 0 generations" in job.error
    assert image.generation_id is None


@pytest.mark.parametrize("status", [404, 405])
async def test_a_missing_queue_fails_the_job_once_by_name_and_never_uses_the_sync_route(
    harness: Harness, status: int
) -> None:
    await harness.start()
    if status == 404:
        harness.oxen.queue_enabled = False
    else:
        harness.oxen.fault("POST /ai/queue", status=405)
    await harness.command("a fox")
    text = await failure_reply(harness)
    assert f"generation queue is missing at the configured API address (HTTP {status}" in text
    assert "OXEN_API_URL" in text
    assert_nothing_generic(harness)
    assert len(harness.oxen.recorder.calls_to("POST /ai/queue")) == 1, "a 404/405 is final, not retried"
    assert harness.oxen.sync_calls == []
    assert harness.oxen.billed == []
    assert len([c for c in harness.slack.calls_to("chat.postMessage") if is_failure_reply(c)]) == 1
    assert harness.slack.calls_to("files.getUploadURLExternal") == []
    [(job, [image])] = await harness.jobs()
    assert job.state is JobState.FAILED
    assert image.generation_id is None


async def test_succeeded_without_a_result_url_is_explained_and_nothing_uploaded(harness: Harness) -> None:
    await harness.start()
    harness.oxen.succeed_without_result()
    await harness.command("a fox")
    text = await failure_reply(harness)
    assert "finished but sent no result" in text
    assert_nothing_generic(harness)
    assert harness.slack.calls_to("files.getUploadURLExternal") == []
    assert harness.slack.calls_to("upload") == []
    assert len(harness.oxen.submissions) == 1
    [generation] = harness.oxen.generations.values()
    assert harness.oxen.billed == [generation.id], "Oxen billed the run; the bot did not run it again"
    [(job, [image])] = await harness.jobs()
    assert (job.state, image.state) == (JobState.FAILED, ImageState.FAILED)
    assert harness.oxen.recorder.calls_to("DELETE /ai/queue/{id}") == []


async def test_provider_failure_is_named_once_and_not_wrapped_twice(harness: Harness) -> None:
    await harness.start()
    harness.oxen.fail_generations("Internal server error")
    await harness.command("a fox")
    text = await failure_reply(harness)
    assert "The model provider failed while generating (Internal server error)" in text
    everything = slack_saw(harness)
    assert "refused the request" not in everything
    assert everything.count("The model provider failed") == everything.count("Internal server error")
    assert_nothing_generic(harness)
    assert harness.oxen.billed == []
    [(job, _)] = await harness.jobs()
    assert job.state is JobState.FAILED
    assert job.error is not None
    assert job.error.count("Internal server error") == 1


async def test_a_result_served_as_html_is_not_uploaded_and_not_billed_again(harness: Harness) -> None:
    await harness.start()
    harness.oxen.serve_result_as("text/html")
    await harness.command("a fox")
    text = await failure_reply(harness)
    [(job, _)] = await harness.jobs()
    assert f"result `{job.id}-1` is not an image (it was served as text/html); nothing was uploaded" in text
    assert_nothing_generic(harness)
    assert harness.slack.calls_to("files.getUploadURLExternal") == []
    assert harness.slack.calls_to("files.completeUploadExternal") == []
    assert len(harness.oxen.submissions) == 1
    [generation] = harness.oxen.generations.values()
    assert harness.oxen.billed == [generation.id]
    [(job, _)] = await harness.jobs()
    assert job.state is JobState.FAILED


async def test_png_bytes_served_as_octet_stream_are_uploaded_as_png(harness: Harness) -> None:
    await harness.start()
    harness.oxen.serve_result_as("application/octet-stream")
    await harness.command("a fox")
    await assert_delivered_once(harness)
    [reserved] = harness.slack.calls_to("files.getUploadURLExternal")
    assert str(reserved.params["filename"]).endswith(".png")
    [file] = [f for f in harness.slack.uploaded_files.values() if f.completed]
    assert file.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert file.filename.endswith(".png")


async def test_jpeg_bytes_served_as_png_are_uploaded_as_jpeg(harness: Harness) -> None:
    await harness.start()
    jpeg = io.BytesIO()
    Image.new("RGB", (64, 48), "teal").save(jpeg, format="JPEG")
    harness.oxen.serve_result_as("image/png", jpeg.getvalue())
    await harness.command("a fox")
    await assert_delivered_once(harness)
    [reserved] = harness.slack.calls_to("files.getUploadURLExternal")
    assert str(reserved.params["filename"]).endswith(".jpg")
    [file] = [f for f in harness.slack.uploaded_files.values() if f.completed]
    assert (file.content, file.filename) == (jpeg.getvalue(), reserved.params["filename"])


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("image/png", b"<!DOCTYPE html><html><body>Sign in to Oxen.ai</body></html>"),
        ("image/jpeg", bytes(range(256)) * 64),
    ],
)
async def test_a_non_image_served_with_an_image_type_fails_the_job_naming_the_image(
    harness: Harness, content_type: str, body: bytes
) -> None:
    await harness.start()
    harness.oxen.serve_result_as(content_type, body)
    await harness.command("a fox")
    text = await failure_reply(harness)
    [(job, _)] = await harness.jobs()
    assert job.state is JobState.FAILED
    expected = f"result `{job.id}-1` is not an image (it was served as {content_type}); nothing was uploaded"
    assert expected in text
    assert job.error is not None
    assert expected in job.error
    assert_nothing_generic(harness)
    assert harness.slack.calls_to("files.getUploadURLExternal") == []
    assert harness.slack.calls_to("files.completeUploadExternal") == []


# -- polling that breaks: the job fails and nothing keeps running at Oxen ---------------------------


async def assert_failed_and_cancelled(harness: Harness, text: str, expected: str) -> None:
    assert expected in text
    assert_nothing_generic(harness)
    generations = list(harness.oxen.generations.values())
    cancelled = {
        str(call.params["generation_id"]) for call in harness.oxen.recorder.calls_to("DELETE /ai/queue/{id}")
    }
    assert cancelled == {generation.id for generation in generations}
    assert all(generation.status == "cancelled" for generation in generations)
    assert harness.oxen.billed == []
    assert harness.slack.calls_to("files.getUploadURLExternal") == []
    [(job, _)] = await harness.jobs()
    assert job.state is JobState.FAILED


async def test_polls_failing_until_retries_run_out_fail_the_job_and_cancel_it(harness: Harness) -> None:
    await harness.start()
    harness.oxen.hold()
    harness.oxen.fault("GET /ai/queue", status=500, times=-1)
    await harness.command("a fox")
    text = await failure_reply(harness)
    await assert_failed_and_cancelled(harness, text, "Oxen.ai is unavailable right now (HTTP 500)")
    assert len(harness.oxen.recorder.calls_to(POLLS)) == 3, "FAST_RETRIES: three attempts, then give up"
    assert len(harness.oxen.submissions) == 1


async def test_a_malformed_poll_answer_fails_the_job_and_cancels_it(harness: Harness) -> None:
    await harness.start()
    harness.oxen.hold()
    harness.oxen.fault("GET /ai/queue", status=200, body={"state": "who knows"})
    await harness.command("a fox")
    text = await failure_reply(harness)
    await assert_failed_and_cancelled(harness, text, "Oxen.ai sent an answer Dreamboard does not understand")
    assert len(harness.oxen.submissions) == 1


async def test_a_poll_failure_of_one_image_cancels_its_sibling_at_oxen(harness: Harness) -> None:
    await harness.start()
    harness.oxen.hold()
    await harness.command("a fox --n 2")
    # A poll of a generation comes only after its id was stored: wait until both images are being polled.
    await harness.oxen.recorder.wait_until(lambda: len(poll_ids(harness)) == 2)
    harness.oxen.fault("GET /ai/queue", status=200, body={"state": "who knows"})
    text = await failure_reply(harness)
    await assert_failed_and_cancelled(harness, text, "Oxen.ai sent an answer Dreamboard does not understand")
    assert len(harness.oxen.generations) == 2
    assert len(harness.oxen.submissions) == 2


async def test_a_sibling_whose_submission_answer_is_pending_is_found_and_cancelled(harness: Harness) -> None:
    await harness.start()
    harness.oxen.hold()
    # The first POST is processed (its generation exists) but its answer is held back, so that image has
    # no generation id yet when its sibling's poll breaks and the job fails.
    harness.oxen.fault("POST /ai/queue", after=True, delay=30.0)
    await harness.command("a fox --n 2")
    await harness.oxen.recorder.wait_for(POLLS)
    harness.oxen.fault("GET /ai/queue", status=200, body={"state": "who knows"})
    text = await failure_reply(harness)
    await assert_failed_and_cancelled(harness, text, "Oxen.ai sent an answer Dreamboard does not understand")
    assert len(harness.oxen.generations) == 2
    assert len(harness.oxen.submissions) == 2
    [(_, images)] = await harness.jobs()
    assert sorted(image.generation_id is None for image in images) == [False, True]


async def test_a_cancel_while_the_submission_answer_is_pending_cancels_it_at_oxen(harness: Harness) -> None:
    await harness.start()
    harness.oxen.hold()
    harness.oxen.fault("POST /ai/queue", after=True, delay=30.0)
    await harness.command("a fox")
    await harness.oxen.recorder.wait_for("POST /ai/queue")
    [(job, _)] = await harness.jobs()
    event = harness.slack.reaction_event("x", user="U1", channel="C1", ts=str(job.status_ts))
    await harness.slack.send_event(harness.events_url, event)
    [told] = await harness.slack.wait_for("chat.postEphemeral")
    assert f"Job `{job.id}` was cancelled." in told.params["text"]
    [generation] = harness.oxen.generations.values()
    [cancel] = harness.oxen.recorder.calls_to("DELETE /ai/queue/{id}")
    assert cancel.params["generation_id"] == generation.id
    assert generation.status == "cancelled"
    assert harness.oxen.billed == []
    [(job, [image])] = await harness.jobs()
    assert (job.state, image.generation_id) == (JobState.CANCELLED, None)


# -- secrets ------------------------------------------------------------------------------------------


async def test_an_upstream_error_quoting_the_api_key_never_reaches_slack(harness: Harness) -> None:
    await harness.start()
    key = harness.oxen.api_key
    harness.oxen.fail_generations(
        f"Internal server error: upstream rejected Authorization {key} for this call"
    )
    await harness.command("a fox")
    text = await failure_reply(harness)
    assert "The model provider failed while generating" in text
    assert "[redacted]" in text
    assert key not in slack_saw(harness)
    [(job, [image])] = await harness.jobs()
    assert job.state is JobState.FAILED
    stored: list[Any] = [job.error, image.error]
    assert all(value is not None and key not in value for value in stored)
