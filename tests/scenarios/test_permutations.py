"""Prompt permutations end to end: one thread per set, one seed for all, quotas counting every
combination, the contact sheet's tiles decoded from what Slack received, and exactly one sheet when the
jobs finish together and across restarts mid-set and mid-upload."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
from contextlib import closing
from typing import Any

from PIL import Image, ImageStat

from bot.store.model import Job, JobState
from bot.views.contact_sheet import MISSING_FILL, geometry
from tests.fakes.slack import FakeFile
from tests.scenarios.harness import Harness
from tests.scenarios.test_quotas import zone_at_noon


def sheets(harness: Harness) -> list[FakeFile]:
    """Contact sheets Slack holds as shared (completed) files."""
    return [
        file
        for file in harness.slack.uploaded_files.values()
        if file.filename.startswith("contact-sheet-") and file.completed
    ]


def set_rows(harness: Harness) -> list[sqlite3.Row]:
    with closing(sqlite3.connect(harness.database)) as db:
        db.row_factory = sqlite3.Row
        return list(db.execute("SELECT * FROM permutation_sets ORDER BY created_at"))


def tile_rows(harness: Harness) -> list[tuple[int, int, str | None, int | None, str]]:
    with closing(sqlite3.connect(harness.database)) as db:
        return list(
            db.execute("SELECT tile, number, job_id, image_idx, label FROM permutation_tiles ORDER BY tile")
        )


async def sheet_posted(harness: Harness, count: int = 1, timeout: float = 15.0) -> None:
    """Wait until `count` contact sheets were completed."""
    await harness.slack.recorder.wait_until(lambda: len(sheets(harness)) >= count, timeout=timeout)


async def test_a_set_runs_in_one_thread_with_one_seed_and_its_sheet_shows_each_variant(
    harness: Harness,
) -> None:
    running = await harness.start()
    sheet_messages: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    running.services.permutations.on_sheet_message.append(lambda *seen: sheet_messages.put_nowait(seen))
    payload = harness.slack.command_payload("a {red|blue} fox in {snow|rain} --ar 1:1")
    await harness.slack.send_command_payload(harness.events_url, payload)
    await harness.slack.send_command_payload(harness.events_url, payload)  # delivered twice: one set
    await sheet_posted(harness)
    await harness.slack.wait_shared()

    [root] = [
        m
        for m in harness.slack.messages("C1")
        if (m.get("metadata") or {}).get("event_type") == "dreamboard_set"
    ]
    assert "4 variants" in root["text"]
    jobs: list[Job] = [job for job, _ in await harness.jobs()]
    assert len(jobs) == 4
    assert {job.thread_ts for job in jobs} == {root["ts"]}, "every variant lives in the set's thread"
    assert len({job.seed for job in jobs}) == 1, "one drawn seed makes the variants comparable"
    assert not any(job.seed_given for job in jobs)
    prompts = [call.params["prompt"] for call in harness.oxen.recorder.calls_to("POST /ai/queue")]
    assert sorted(prompts) == sorted(
        ["a red fox in snow", "a red fox in rain", "a blue fox in snow", "a blue fox in rain"]
    )

    [sheet] = sheets(harness)
    assert sheet.thread_ts == root["ts"]
    [share] = [
        call
        for call in harness.slack.calls_to("files.completeUploadExternal")
        if json.loads(call.params["files"])[0]["id"] == sheet.id
    ]
    assert "Vote with the tile's number on this message (:one:–:four:)" in share.params["initial_comment"]
    picture = Image.open(io.BytesIO(sheet.content))
    grid = geometry(4)
    assert picture.size == grid.size
    by_prompt = {job.prompt: job for job in jobs}
    order = ["a red fox in snow", "a red fox in rain", "a blue fox in snow", "a blue fox in rain"]
    rows = tile_rows(harness)
    assert [(tile, number, label) for tile, number, _, _, label in rows] == [
        (1, 1, "1 · red, snow"), (2, 2, "2 · red, rain"), (3, 3, "3 · blue, snow"), (4, 4, "4 · blue, rain")
    ]  # fmt: skip
    for index, prompt in enumerate(order):
        job = by_prompt[prompt]
        assert rows[index][2:4] == (job.id, 0)
        [image] = [i for j, images in await harness.jobs() if j.id == job.id for i in images]
        result = Image.open(io.BytesIO(harness.oxen.result_bytes(str(image.generation_id)))).convert("RGB")
        left, top, right, bottom = grid.image_box(index)
        tile = picture.crop((left + 8, top + 8, right - 8, bottom - 8))
        expected = ImageStat.Stat(result.resize(tile.size)).mean
        found = ImageStat.Stat(tile).mean
        assert all(abs(a - b) < 16 for a, b in zip(found, expected, strict=True)), (prompt, found, expected)

    set_id, sheet_ts = await asyncio.wait_for(sheet_messages.get(), timeout=10)
    [stored] = set_rows(harness)
    assert (stored["id"], stored["sheet_ts"]) == (set_id, sheet_ts)
    [shared] = [m for m in harness.slack.messages("C1") if m.get("files") == [sheet.id]]
    assert shared["ts"] == sheet_ts, "the sheet's message is recorded, for votes on it"
    assert stored["sheet_file_id"] == sheet.id
    assert stored["sheet_posted_at"] is not None
    updates = [c for c in harness.slack.calls_to("chat.update") if c.params.get("ts") == root["ts"]]
    assert "contact sheet is in the thread" in str(updates[-1].params["blocks"])


async def test_quotas_count_every_combination_and_too_many_are_refused_in_the_ack(harness: Harness) -> None:
    await harness.start(daily_images_per_user=5, quota_timezone=zone_at_noon())
    refused = await harness.command("a {red|blue|green} {fox|owl|cat|dog} at dusk")
    body = json.loads(refused.text)
    assert body["response_type"] == "ephemeral"
    assert "makes 12 combinations (3 × 4); Dreamboard runs at most 8" in body["text"]

    await harness.command("a {red|blue|green} fox --n 2")
    [over] = await harness.slack.wait_for("response_url")
    assert (
        "These 3 combinations need 6 images but you have 5 images left today; the first 2 would fit"
        in (over.params["text"])
    )
    assert not await harness.jobs()
    assert not set_rows(harness)
    assert not harness.slack.calls_to("chat.postMessage"), "no status message for a refused set"

    await harness.command("a {red|blue} owl --n 2")
    await sheet_posted(harness)
    await harness.command("a {red|blue} cat")
    [*_, boundary] = await harness.slack.wait_for("response_url", count=2)
    assert (
        "need 2 images but you have 1 image left today; only the first would fit" in boundary.params["text"]
    )
    sent = {call.params["prompt"] for call in harness.oxen.recorder.calls_to("POST /ai/queue")}
    assert sent == {"a red owl", "a blue owl"}, "nothing refused reached Oxen"
    assert len(await harness.jobs()) == 2


async def test_one_sheet_when_the_jobs_finish_together_and_when_settled_again(harness: Harness) -> None:
    await harness.start(max_concurrent_jobs=8, max_active_per_user=8)
    harness.oxen.hold()
    await harness.command("a {red|blue|green|gold} kite")
    await harness.oxen.recorder.wait_for("POST /ai/queue", count=4)
    harness.oxen.release()
    await sheet_posted(harness)
    running = harness.running
    assert running is not None
    [stored] = set_rows(harness)
    await asyncio.gather(*(running.services.permutations.settle(stored["id"]) for _ in range(3)))
    await harness.slack.wait_shared()
    assert len(sheets(harness)) == 1
    assert len(harness.slack.calls_to("files.completeUploadExternal")) == 5


async def test_restarts_mid_set_and_mid_sheet_post_exactly_one_sheet(harness: Harness) -> None:
    await harness.start()
    harness.oxen.hold()
    await harness.command("a {red|blue} lantern")
    await harness.oxen.recorder.wait_for("POST /ai/queue", count=2)
    await harness.stop()
    assert {job.state for job, _ in await harness.jobs()} == {JobState.RUNNING}

    running = await harness.start()
    finished: list[str] = []

    def hold_the_sheet(job: Job) -> None:
        finished.append(job.id)
        if len(finished) == 2:  # the sheet's upload is the next one completed: it hangs, then we stop
            harness.slack.fault("files.completeUploadExternal", delay=30.0)

    running.services.runner.pipeline.on_finished.append(hold_the_sheet)
    harness.oxen.release()
    await harness.slack.wait_for("files.completeUploadExternal", count=3)
    await harness.stop(grace=0.05)
    [stored] = set_rows(harness)
    assert stored["sheet_file_id"] is not None
    assert stored["sheet_posted_at"] is None
    assert not sheets(harness)

    await harness.start()
    await sheet_posted(harness)
    await harness.slack.wait_shared()
    [sheet] = sheets(harness)
    assert sheet.id == stored["sheet_file_id"], "the recorded upload was completed, not made again"
    assert len(harness.oxen.submissions) == 2
    assert set_rows(harness)[0]["sheet_posted_at"] is not None
    assert [label for *_, label in tile_rows(harness)] == ["1 · red", "2 · blue"]


def set_roots(harness: Harness) -> list[dict[str, Any]]:
    """The set status messages Slack holds in C1."""
    return [
        message
        for message in harness.slack.messages("C1")
        if (message.get("metadata") or {}).get("event_type") == "dreamboard_set"
    ]


async def test_a_lost_answer_to_the_set_status_is_found_by_its_metadata_not_posted_twice(
    harness: Harness,
) -> None:
    await harness.start()
    harness.slack.fault("chat.postMessage", status=500, after=True)
    await harness.command("a {red|blue} boat")
    await sheet_posted(harness)
    [root] = set_roots(harness)
    assert {job.thread_ts for job, _ in await harness.jobs()} == {root["ts"]}


async def test_a_refused_set_status_runs_nothing_and_says_so(harness: Harness) -> None:
    await harness.start()
    harness.slack.fault("chat.postMessage", error="msg_too_long")
    await harness.command("a {red|blue} boat")
    [told] = await harness.slack.wait_for("response_url")
    assert "so the job was not started and nothing was sent to Oxen.ai" in told.params["text"]
    assert not await harness.jobs()
    [stored] = set_rows(harness)
    assert stored["abandoned_at"] is not None
    assert not harness.oxen.submissions


async def test_a_set_whose_status_was_never_posted_is_abandoned_at_restart_and_its_user_told(
    harness: Harness,
) -> None:
    await harness.start()
    harness.slack.fault("chat.postMessage", delay=30.0)
    await harness.command("a {red|blue} boat")
    await harness.slack.wait_for("chat.postMessage")
    await harness.stop(grace=0.05)
    assert len(await harness.jobs()) == 2, "stored, never announced"

    await harness.start()
    [ephemeral] = await harness.slack.wait_for("chat.postEphemeral")
    assert ephemeral.params["user"] == "U1"
    assert "restarted before your permutations could start" in ephemeral.params["text"]
    assert "a {red|blue} boat" in ephemeral.params["text"]
    assert not await harness.jobs()
    assert set_rows(harness)[0]["abandoned_at"] is not None
    assert not harness.oxen.submissions
    assert not set_roots(harness)


async def test_a_failed_variant_is_a_grey_tile_and_a_set_without_any_image_posts_no_sheet(
    harness: Harness,
) -> None:
    await harness.start()
    harness.oxen.fail_generations("Content policy violation", times=1)
    await harness.command("a {red|blue} bird")
    await sheet_posted(harness)
    [failed] = [job for job, _ in await harness.jobs() if job.state is JobState.FAILED]
    [grey] = [tile for tile, _, job_id, _, _ in tile_rows(harness) if job_id == failed.id]
    [sheet] = sheets(harness)
    picture = Image.open(io.BytesIO(sheet.content))
    left, top, right, _bottom = geometry(2).image_box(grey - 1)
    found = ImageStat.Stat(picture.crop((left + 4, top + 4, right - 4, top + 100))).mean
    assert all(abs(a - b) < 20 for a, b in zip(found, MISSING_FILL, strict=True)), found

    harness.oxen.fail_generations("Content policy violation", times=2)
    await harness.command("a {green|gold} bird")
    await harness.slack.wait_for(
        "chat.update", where=lambda call: "none of them made an image" in str(call.params.get("blocks"))
    )
    assert len(sheets(harness)) == 1, "no sheet of grey tiles"
    assert all(row["sheet_posted_at"] is not None for row in set_rows(harness)), "both sets are closed"


async def test_a_set_that_does_not_fit_the_queue_cap_queues_none_of_its_jobs(harness: Harness) -> None:
    await harness.start(max_queued_per_user=3)
    await harness.command("a {red|blue|green|gold} kite")
    [told] = await harness.slack.wait_for("response_url")
    assert "These 4 combinations are 4 jobs, and your queue has room for 3 more" in told.params["text"]
    assert "> a {red|blue|green|gold} kite" in told.params["text"]
    assert not await harness.jobs()
    assert not set_rows(harness)
    await harness.command("a {red|blue|green} kite")
    await sheet_posted(harness)
    assert len(await harness.jobs()) == 3, "the places the refused set held were given back"


async def test_the_channel_kit_applies_to_every_combination(harness: Harness) -> None:
    await harness.start()
    await harness.command('kit set --style "ink wash"')
    await harness.slack.wait_for("response_url")
    await harness.command("a {red|blue} heron")
    await sheet_posted(harness)
    prompts = sorted(call.params["prompt"] for call in harness.oxen.recorder.calls_to("POST /ai/queue"))
    assert prompts == ["a blue heron, ink wash", "a red heron, ink wash"]
    assert [label for *_, label in tile_rows(harness)] == ["1 · red", "2 · blue"], "labels name the options"
