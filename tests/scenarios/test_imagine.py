"""`/imagine` end to end: signed command in, status message, Oxen queue, upload into the thread."""

from __future__ import annotations

import json

import pytest

from bot.store.model import ImageState, JobState
from tests.scenarios.harness import Harness, is_card

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("schema", ["april", "current"])
async def test_two_images_land_in_the_thread_of_the_status_message(harness: Harness, schema: str) -> None:
    harness.oxen.schema = schema  # type: ignore[assignment]
    await harness.start()

    response = await harness.command(
        "a red fox in snow --n 2 --seed 7 --ar 16:9", user_id="U1", channel_id="C1"
    )

    assert response.status == 200
    assert response.text == ""
    [complete] = await harness.slack.wait_for("files.completeUploadExternal")
    [status] = harness.slack.calls_to("chat.postMessage")[:1]
    assert status.params["channel"] == "C1"
    assert "thread_ts" not in status.params or not status.params["thread_ts"]
    assert "Generating" in status.params["text"]  # a free slot: posted as generating, never edited so
    root_ts = harness.slack.messages("C1")[0]["ts"]
    assert complete.params["channel_id"] == "C1"
    assert complete.params["thread_ts"] == root_ts
    uploaded = json.loads(complete.params["files"])
    assert len(uploaded) == 2
    for entry in uploaded:
        assert harness.slack.uploaded_files[entry["id"]].content.startswith(PNG_MAGIC)

    submissions = harness.oxen.submissions
    assert len(submissions) == 2
    for body in submissions:
        assert body["model"] == "bytedance-seedream-4-5"
        assert body["size"] == "2K"
        assert body["num_generations"] == 1
    if schema == "april":
        assert sorted(body["seed"] for body in submissions) == [7, 8]
        assert {body["aspect_ratio"] for body in submissions} == {"16:9"}
        assert {body["prompt"] for body in submissions} == {"a red fox in snow"}
    else:
        assert all("seed" not in body and "aspect_ratio" not in body for body in submissions)
        assert {body["prompt"] for body in submissions} == {"a red fox in snow. Aspect ratio 16:9."}
        assert {body["watermark"] for body in submissions} == {False}

    [card] = await harness.slack.wait_for("chat.update", where=is_card)
    assert card.params["ts"] == root_ts  # the status message became the result card
    assert [call.params["ts"] for call in harness.slack.calls_to("chat.update")] == [root_ts]
    card_text = json.dumps(card.params["blocks"], ensure_ascii=False)
    assert "`7, 8`" in card_text
    assert "a red fox in snow" in card_text
    assert ("does not take a seed" in card_text) is (schema == "current")
    assert ("was added to the prompt" in card_text) is (schema == "current")

    [(job, images)] = await harness.jobs()
    assert job.state is JobState.UPLOADED
    assert (job.seed, job.n, job.size, job.aspect_ratio, job.user_id, job.status_ts) == (
        7,
        2,
        "2K",
        "16:9",
        "U1",
        root_ts,
    )
    assert [image.seed for image in images] == [7, 8]
    assert all(image.state is ImageState.SUCCEEDED and image.file_id for image in images)
    assert all(image.generation_id for image in images)


async def test_a_prompt_may_start_with_the_word_help(harness: Harness) -> None:
    await harness.start()
    response = await harness.command("help wanted poster, retro style")
    assert response.text == ""
    await harness.slack.wait_for("files.completeUploadExternal")
    [(job, _)] = await harness.jobs()
    assert job.prompt == "help wanted poster, retro style"


async def test_without_seed_a_seed_is_drawn_sent_and_stored(harness: Harness) -> None:
    harness.oxen.schema = "april"
    await harness.start()
    await harness.command("a lighthouse")
    await harness.slack.wait_for("files.completeUploadExternal")
    [(job, _)] = await harness.jobs()
    [body] = harness.oxen.submissions
    assert body["seed"] == job.seed
    assert not job.seed_given


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("--ar 16:9", "prompt is empty"),
        ("fox --style raw", "Unknown flag `--style`"),
        ("fox --seed", "`--seed` needs a value"),
        ("fox --ar 5:7", "`--ar 5:7` is not supported"),
        ("fox --size 8K", "`--size 8K` is not supported"),
        ("fox --seed twelve", "must be a whole number"),
        ("fox --seed 99999999999", "out of range"),
        ("fox --n 5", "ask for 1 to 4 images"),
        ("x" * 4001, "this model accepts at most 4,000"),
    ],
)
async def test_bad_input_gets_an_ephemeral_explanation_and_no_job(
    harness: Harness, text: str, fragment: str
) -> None:
    await harness.start()
    response = await harness.command(text)
    assert response.status == 200
    answer = json.loads(response.text)
    assert answer["response_type"] == "ephemeral"
    assert fragment in answer["text"]
    assert "Usage: `/imagine <prompt>" in json.dumps(answer["blocks"])
    assert harness.slack.calls_to("chat.postMessage") == []
    assert await harness.jobs() == []
    assert harness.oxen.submissions == []


@pytest.mark.parametrize("text", ["", "help", "  HELP  ", "--help"])
async def test_help_is_ephemeral_usage_with_examples(harness: Harness, text: str) -> None:
    await harness.start()
    answer = json.loads((await harness.command(text)).text)
    assert answer["response_type"] == "ephemeral"
    assert "/imagine" in answer["text"]
    assert "Examples" in json.dumps(answer["blocks"])
    assert await harness.jobs() == []


@pytest.mark.parametrize("error", ["not_in_channel", "channel_not_found"])
async def test_bot_outside_the_channel_asks_to_be_invited(harness: Harness, error: str) -> None:
    await harness.start()
    harness.slack.set_channel_error("C9", error)
    response = await harness.command("a fox", channel_id="C9")
    assert response.status == 200
    [reply] = await harness.slack.wait_for("response_url")
    assert reply.params["response_type"] == "ephemeral"
    assert "/invite" in reply.params["text"]
    assert await harness.jobs() == []
    assert harness.oxen.submissions == []


async def test_the_same_command_delivered_twice_makes_one_job(harness: Harness) -> None:
    await harness.start()
    payload = harness.slack.command_payload("a fox", trigger_id="trigger-1")
    first = await harness.slack.send_command_payload(harness.events_url, payload)
    second = await harness.slack.send_command_payload(harness.events_url, payload)
    assert (first.status, second.status) == (200, 200)
    await harness.slack.wait_for("files.completeUploadExternal")
    assert len(await harness.jobs()) == 1
    assert len(harness.oxen.submissions) == 1


async def test_unsigned_requests_are_refused(harness: Harness) -> None:
    await harness.start()
    body = "command=%2Fimagine&text=fox"
    response = await harness.slack.post_signed(
        harness.events_url, body, content_type="application/x-www-form-urlencoded", bad_signature=True
    )
    assert response.status == 401
    assert await harness.jobs() == []


async def test_health_and_metrics(harness: Harness) -> None:
    await harness.start()
    await harness.generate("a fox")
    status, body = await harness.get("/healthz")
    assert (status, json.loads(body)) == (200, {"ok": True, "store": "open"})
    status, text = await harness.get("/metrics")
    assert status == 200
    assert 'dreamboard_acks_total{kind="command"} 1' in text
    assert 'dreamboard_oxen_requests_total{outcome="200",route="queue"} 1' in text
    assert "dreamboard_oxen_request_seconds_bucket" in text
    assert 'dreamboard_jobs{state="uploaded"} 1' in text
    assert "dreamboard_generation_seconds_count 1.0" in text
    [statements] = [line for line in text.splitlines() if line.startswith("dreamboard_sql_statements_total ")]
    assert float(statements.split()[1]) > 0


async def test_completion_events_wake_the_poller_long_before_the_next_poll(harness: Harness) -> None:
    await harness.start(oxen_poll_interval=30)
    await harness.oxen.recorder.wait_until(lambda: harness.oxen.subscriber_count() == 1)
    await harness.generate("a fox")
    assert len(harness.oxen.recorder.calls_to("GET /ai/queue/{id}")) <= 2


async def test_without_completion_events_polling_still_finishes_jobs(harness: Harness) -> None:
    harness.oxen.events_enabled = False
    await harness.start()
    await harness.generate("a fox")
    assert harness.oxen.subscriber_count() == 0
    assert len(harness.oxen.recorder.calls_to("GET /events")) == 1
