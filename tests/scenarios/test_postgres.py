"""The whole bot on PostgreSQL (DATABASE_URL): a command to its card, a thread reply that iterates.
The restart scenario runs on both backends in test_durability.py."""

from __future__ import annotations

import json

import pytest

from bot.store.model import ImageState, JobState
from tests.postgres import run_sql_async
from tests.scenarios.backends import POSTGRES
from tests.scenarios.harness import Harness, is_card

pytestmark = pytest.mark.parametrize("harness", [POSTGRES], indirect=True)


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
