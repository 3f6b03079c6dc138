"""The whole bot on PostgreSQL (DATABASE_URL): a command to its card, a thread reply that iterates, a
restart that resumes a job at Oxen without submitting it again."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.store.model import ImageState, JobState
from tests.fakes.oxen import FakeOxen
from tests.fakes.slack import FakeSlack
from tests.postgres import run_sql_async
from tests.scenarios.harness import Harness, is_card


@pytest.fixture
async def harness(
    fake_slack: FakeSlack, fake_oxen: FakeOxen, tmp_path: Path, postgres_url: str
) -> AsyncIterator[Harness]:
    """A harness whose bot keeps its state in a fresh PostgreSQL database (no SQLite file is made)."""
    bot = Harness(fake_slack, fake_oxen, tmp_path / "data" / "dreamboard.sqlite3", database_url=postgres_url)
    yield bot
    await bot.stop(grace=1.0)
    assert not bot.database.exists(), "the bot used the SQLite file instead of PostgreSQL"


async def test_a_command_twice_is_one_job_delivered_to_its_card(harness: Harness, postgres_url: str) -> None:
    await harness.start()
    payload = harness.slack.command_payload("a red fox --n 2 --seed 7", trigger_id="trigger-1")
    await harness.slack.send_command_payload(harness.events_url, payload)
    await harness.slack.send_command_payload(harness.events_url, payload)
    [card] = await harness.slack.wait_for("chat.update", where=is_card)
    assert "`7, 8`" in json.dumps(card.params["blocks"])
    [(job, images)] = await harness.jobs()
    assert (job.state, job.status_ts, job.seed_given) == (JobState.UPLOADED, card.params["ts"], True)
    assert all(image.state is ImageState.SUCCEEDED and image.file_id for image in images)
    assert len(harness.oxen.submissions) == 2
    status, body = await harness.get("/healthz")
    assert (status, json.loads(body)) == (200, {"ok": True, "store": "open"})
    [(version,)] = await run_sql_async(postgres_url, "SELECT version FROM schema_version")
    assert version > 0


async def test_a_thread_reply_iterates_on_the_result(harness: Harness) -> None:
    await harness.start()
    root = await harness.generate("a red fox in snow")
    await harness.send(harness.slack.human_message("C1", "make it night time", thread_ts=root))
    await harness.slack.wait_for("chat.update", where=is_card, count=2)
    [(first, _), (second, _)] = await harness.jobs()
    assert harness.oxen.submissions[-1]["prompt"].startswith("make it night time")
    assert (second.parent_id, second.thread_ts, second.state) == (first.id, root, JobState.UPLOADED)


async def test_a_restart_while_oxen_works_polls_instead_of_resubmitting(harness: Harness) -> None:
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
    await harness.slack.wait_for("chat.update", where=is_card)
    assert len(harness.oxen.submissions) == 2
    assert len(harness.slack.calls_to("files.completeUploadExternal")) == 1
    [(job, _)] = await harness.jobs()
    assert job.state is JobState.UPLOADED
