"""When Oxen misbehaves: retries, final failures, and what the thread is told."""

from __future__ import annotations

import json

from bot.store.model import JobState
from tests.scenarios.harness import Harness, is_card


async def test_rate_limit_then_success_honours_retry_after(harness: Harness) -> None:
    await harness.start()
    harness.oxen.fault("POST /ai/queue", status=429, retry_after=1)
    await harness.command("a fox")
    await harness.slack.wait_for("chat.update", where=is_card, timeout=10)
    assert len(harness.oxen.recorder.calls_to("POST /ai/queue")) == 2
    [(job, _)] = await harness.jobs()
    assert job.state is JobState.UPLOADED


async def test_server_errors_forever_fail_the_job_with_a_clear_message(harness: Harness) -> None:
    await harness.start()
    harness.oxen.fault("POST /ai/queue", status=500, times=-1)
    await harness.command("a fox")
    [reply] = await harness.slack.wait_for(
        "chat.postMessage", where=lambda call: "failed" in call.params["text"]
    )
    assert "Oxen.ai is unavailable right now (HTTP 500)" in json.dumps(reply.params["blocks"])
    await harness.slack.wait_for("chat.update", where=lambda call: "Failed" in call.params["text"])
    assert len(harness.oxen.recorder.calls_to("POST /ai/queue")) == 3
    [(job, _)] = await harness.jobs()
    assert job.state is JobState.FAILED
    assert job.error is not None
    assert "HTTP 500" in job.error
    assert harness.slack.calls_to("files.completeUploadExternal") == []


async def test_client_errors_are_not_retried(harness: Harness) -> None:
    await harness.start()
    harness.oxen.fault(
        "POST /ai/queue", status=400, body={"error": {"type": "invalid_params", "detail": "bad"}}
    )
    await harness.command("a fox")
    await harness.slack.wait_for("chat.postMessage", where=lambda call: "failed" in call.params["text"])
    assert len(harness.oxen.recorder.calls_to("POST /ai/queue")) == 1


async def test_content_policy_becomes_a_readable_message_in_the_thread(harness: Harness) -> None:
    await harness.start()
    harness.oxen.fail_generations(
        "InputTextSensitiveContentDetected: The request failed because the input text may contain "
        "sensitive information"
    )
    await harness.command("something the filter dislikes")
    [reply] = await harness.slack.wait_for(
        "chat.postMessage", where=lambda call: "failed" in call.params["text"]
    )
    root_ts = harness.slack.messages("C1")[0]["ts"]
    assert reply.params["thread_ts"] == root_ts
    assert "content filter blocked" in json.dumps(reply.params["blocks"])
    [(job, images)] = await harness.jobs()
    assert job.state is JobState.FAILED
    assert images[0].error is not None


async def test_insufficient_credits_is_final_and_explained(harness: Harness) -> None:
    await harness.start()
    harness.oxen.fail_generations("Insufficient credits")
    await harness.command("a fox")
    [reply] = await harness.slack.wait_for(
        "chat.postMessage", where=lambda call: "failed" in call.params["text"]
    )
    assert "out of credits" in json.dumps(reply.params["blocks"])
    assert len(harness.oxen.submissions) == 1


async def test_one_failed_image_of_two_still_delivers_the_other(harness: Harness) -> None:
    await harness.start()
    harness.oxen.fail_generations("Insufficient credits", times=1)
    await harness.command("a fox --n 2")
    [complete] = await harness.slack.wait_for("files.completeUploadExternal")
    assert len(json.loads(complete.params["files"])) == 1
    [card] = await harness.slack.wait_for("chat.update", where=is_card)
    assert "1 of 2 images failed" in json.dumps(card.params["blocks"])


async def test_the_api_key_never_reaches_slack(harness: Harness) -> None:
    await harness.start()
    harness.oxen.fault("POST /ai/queue", status=401)
    await harness.command("a fox")
    await harness.slack.wait_for("chat.postMessage", where=lambda call: "failed" in call.params["text"])
    everything = json.dumps([call.params for call in harness.slack.calls])
    assert harness.oxen.api_key not in everything
    assert "API key" in everything


async def test_a_job_that_outlives_its_timeout_is_cancelled_on_oxen(harness: Harness) -> None:
    await harness.start(oxen_job_timeout=0.3)
    harness.oxen.hold()
    await harness.command("a fox that takes forever")
    [reply] = await harness.slack.wait_for(
        "chat.postMessage", where=lambda call: "failed" in call.params["text"]
    )
    assert "did not finish within" in json.dumps(reply.params["blocks"])
    [cancel] = harness.oxen.recorder.calls_to("DELETE /ai/queue/{id}")
    [generation] = harness.oxen.generations.values()
    assert cancel.params["generation_id"] == generation.id
    assert generation.status == "cancelled"
    [(job, _)] = await harness.jobs()
    assert job.state is JobState.FAILED


async def test_slack_rate_limits_are_retried_after_retry_after(harness: Harness) -> None:
    await harness.start()
    harness.slack.fault("chat.postMessage", status=429, retry_after=1)
    await harness.command("a fox")
    await harness.slack.wait_for("files.completeUploadExternal", timeout=10)
    await harness.slack.wait_shared()
    assert len(harness.slack.messages("C1")) >= 2
    [(job, _)] = await harness.jobs()
    assert job.status_ts == harness.slack.messages("C1")[0]["ts"]
