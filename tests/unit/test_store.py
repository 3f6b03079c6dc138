"""Store: migrations, job lifecycle, dedupe keys and the per-user index."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from bot.domain.kits import Kit
from bot.store.errors import DuplicateRequestError
from bot.store.migrations import MIGRATIONS
from bot.store.model import ImageState, JobState, Line, MessageKind, NewJob, PermutationSet, SheetTile
from bot.store.store import Store

INTEGRITY_ERRORS = (sqlite3.IntegrityError, psycopg.IntegrityError)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    opened = await Store.open(database_url)
    yield opened
    await opened.close()


def waiting(line: Line) -> list[str]:
    """The ids of the jobs waiting in line."""
    return [job_id for job_id, _, _ in line.waiting]


def new_job(job_id: str = "j1", *, user: str = "U1", n: int = 2) -> NewJob:
    return NewJob(
        id=job_id,
        team_id="T1",
        channel_id="C1",
        user_id=user,
        prompt="fox",
        model="bytedance-seedream-4-5",
        size="2K",
        aspect_ratio="16:9",
        seed=41,
        seed_given=False,
        n=n,
    )


async def test_schema_is_versioned_and_reopening_keeps_data(database_url: str) -> None:
    first = await Store.open(database_url)
    await first.insert_job(new_job())
    assert await first.schema_version() == len(MIGRATIONS)
    await first.close()
    second = await Store.open(database_url)
    assert waiting(await second.line(0.0)) == ["j1"]
    await second.close()


async def test_a_version_1_database_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(MIGRATIONS[0] + "; PRAGMA user_version = 1;")
        db.execute(
            "INSERT INTO generations (id, team_id, channel_id, user_id, prompt, model, size, seed,"
            " seed_given, n, state, created_at)"
            " VALUES ('old', 'T1', 'C1', 'U1', 'fox', 'm', '2K', 1, 0, 1, 'uploaded', 0)"
        )
    store = await Store.open(path)
    try:
        assert await store.schema_version() == len(MIGRATIONS)
        old = await store.get_job("old")
        assert old is not None
        assert old.prompt == "fox"
    finally:
        await store.close()


async def test_thread_jobs_find_a_threads_jobs_newest_first(store: Store) -> None:
    await store.insert_job(new_job("first"))
    await store.insert_job(replace(new_job("second"), thread_ts="5.0"))
    await store.set_status_ts("first", "5.0")
    await store.set_status_ts("second", "5.1")
    assert [job.id for job in await store.thread_jobs("C1", "5.0")] == ["second", "first"]
    assert await store.thread_jobs("C1", "9.9") == []


async def test_job_lifecycle_is_recorded(store: Store) -> None:
    job, images = await store.insert_job(new_job())
    assert job.state is JobState.QUEUED
    assert images == await store.images("j1")
    assert [(image.idx, image.seed, image.state) for image in await store.images("j1")] == [
        (0, 41, ImageState.PENDING),
        (1, 42, ImageState.PENDING),
    ]
    await store.set_status_ts("j1", "1.5")
    await store.mark_running("j1", ["a note"])
    await store.set_generation_id("j1", 0, "gen-0")
    await store.set_image_outcome("j1", 0, error=None, result_url="https://oxen/result.png")
    await store.set_image_outcome("j1", 1, error="blocked")
    await store.set_file_ids("j1", {0: "F1"})
    await store.mark_running("j1", ["a note"])
    assert await store.mark_uploaded("j1", upload_ts="1.7") is not None
    job_after = await store.get_job("j1")
    assert job_after is not None
    assert (job_after.state, job_after.thread_ts, job_after.notes) == (JobState.UPLOADED, "1.5", ["a note"])
    assert job_after.finished_at is not None
    images = await store.images("j1")
    assert (images[0].state, images[0].generation_id, images[0].file_id) == (
        ImageState.SUCCEEDED,
        "gen-0",
        "F1",
    )
    assert images[0].result_url == "https://oxen/result.png"
    assert images[0].result_url_at is not None
    assert (images[0].reference_key, images[0].reference_mimetype) == (None, None)
    await store.set_reference("j1", 0, "abc123", "image/png")
    kept = (await store.images("j1"))[0]
    assert (kept.reference_key, kept.reference_mimetype) == ("abc123", "image/png")
    assert (images[1].state, images[1].error) == (ImageState.FAILED, "blocked")
    assert await store.claim_next("r2", now=1.0, until=2.0, running_cap=3) is not None, "no card yet"
    await store.set_card_ts("j1", "1.6")
    await store.release(["j1"], "r2", at_once=True)
    assert await store.claim_next("r3", now=1.0, until=2.0, running_cap=3) is None, "nothing left to do"


async def test_events_are_claimed_once(store: Store) -> None:
    assert await store.claim_event("event:Ev1")
    assert not await store.claim_event("event:Ev1")
    await store.prune_events(older_than=float("inf"))
    assert await store.claim_event("event:Ev1")


async def test_only_unstarted_jobs_can_be_discarded(store: Store) -> None:
    await store.insert_job(new_job("a"))
    await store.insert_job(new_job("b"))
    await store.mark_running("b", [])
    await store.discard_unstarted("a")
    await store.discard_unstarted("b")
    assert await store.get_job("a") is None
    assert await store.get_job("b") is not None
    assert await store.images("a") == []


async def test_history_is_per_user_newest_first_paged_and_filtered(store: Store) -> None:
    for index in range(3):
        await store.insert_job(replace(new_job(f"mine{index}"), prompt=f"Fox number {index}"))
    await store.insert_job(new_job("theirs", user="U2"))
    assert [job.id for job in await store.history("T1", "U1", limit=2)] == ["mine2", "mine1"]
    assert [job.id for job in await store.history("T1", "U1", limit=2, offset=2)] == ["mine0"]
    assert [job.id for job in await store.history("T1", "U1", text="NUMBER 1")] == ["mine1"]
    assert [job.id for job in await store.history("T1", "U2")] == ["theirs"]
    await store.mark_deleted("mine2", "U1")
    assert [job.id for job in await store.history("T1", "U1")] == ["mine1", "mine0"]
    assert await store.get_job("mine2") is not None


async def test_favourites_toggle(store: Store) -> None:
    await store.insert_job(new_job("a"))
    assert await store.toggle_favourite("T1", "U2", "a")
    assert [job.id for job in await store.favourites("T1", "U2")] == ["a"]
    assert await store.favourites("T1", "U1") == []
    assert not await store.toggle_favourite("T1", "U2", "a")
    assert await store.favourites("T1", "U2") == []


async def test_bad_state_is_refused_by_the_schema(store: Store) -> None:
    await store.insert_job(new_job())
    with pytest.raises(INTEGRITY_ERRORS, match=r"(?i)check constraint"):
        async with store.transaction() as db:
            await db.execute("UPDATE generations SET state = 'exploded' WHERE id = 'j1'")
    job = await store.get_job("j1")
    assert job is not None
    assert job.state is JobState.QUEUED


async def test_concurrent_writers_do_not_share_a_transaction(store: Store) -> None:
    jobs = [store.insert_job(new_job(f"j{index}")) for index in range(20)]
    claims = [store.claim_event(f"event:{index}") for index in range(20)]
    results = await asyncio.gather(*jobs, *claims)
    assert len(results) == 40
    assert len(waiting(await store.line(0.0))) == 20


async def test_a_terminal_state_is_never_overwritten(store: Store) -> None:
    await store.insert_job(new_job())
    await store.mark_running("j1", [])
    uploaded = await store.mark_uploaded("j1", upload_ts=None)
    assert uploaded is not None
    assert await store.finish("j1", JobState.FAILED, error="late failure") is None
    assert await store.finish("j1", JobState.CANCELLED) is None
    assert await store.mark_running("j1", []) is None
    job = await store.get_job("j1")
    assert job is not None
    assert (job.state, job.error) == (JobState.UPLOADED, None)


async def test_the_upload_message_is_recorded_by_file_id_and_the_first_ts_wins(store: Store) -> None:
    await store.insert_job(new_job())
    await store.mark_running("j1", [])
    await store.set_file_ids("j1", {0: "F1"})
    assert await store.set_upload_ts_for_files("C2", ["F1"], "1.5") == []  # another channel
    assert await store.set_upload_ts_for_files("C1", ["F9", "F1"], "1.5") == ["j1"]
    assert await store.set_upload_ts_for_files("C1", ["F1"], "2.5") == []
    await store.set_upload_ts("j1", "3.5")
    uploaded = await store.mark_uploaded("j1", upload_ts="4.5")
    assert uploaded is not None
    assert uploaded.upload_ts == "1.5"
    found = await store.job_for_message("C1", "1.5")
    assert found is not None
    assert found[0].id == "j1"


async def test_a_failed_job_cannot_become_uploaded(store: Store) -> None:
    await store.insert_job(new_job())
    assert await store.finish("j1", JobState.FAILED, error="boom") is not None
    assert await store.mark_uploaded("j1", upload_ts=None) is None


async def test_one_request_makes_one_job(store: Store) -> None:
    await store.insert_job(replace(new_job("a"), request_key="command:T1"))
    with pytest.raises(DuplicateRequestError):
        await store.insert_job(replace(new_job("b"), request_key="command:T1"))
    assert waiting(await store.line(0.0)) == ["a"]
    assert await store.images("b") == []


async def test_the_submission_marker_and_adopted_ids(store: Store) -> None:
    await store.insert_job(new_job())
    at = await store.mark_submitting("j1", 0)
    [first, second] = await store.images("j1")
    assert first.submission_unknown
    assert first.submit_started_at == at
    assert not second.submission_unknown
    await store.set_generation_id("j1", 0, "gen-0")
    assert await store.generation_ids_in_use(["gen-0", "gen-9"]) == {"gen-0"}


async def test_messages_map_back_to_their_job(store: Store) -> None:
    await store.insert_job(new_job())
    await store.set_status_ts("j1", "1.0")
    await store.mark_running("j1", [])
    await store.mark_uploaded("j1", upload_ts="1.2")
    await store.set_card_ts("j1", "1.3")
    await store.add_message("C2", "9.0", "j1", MessageKind.CARD, thread_ts=None)
    kinds = {}
    for channel, ts in (("C1", "1.0"), ("C1", "1.2"), ("C1", "1.3"), ("C2", "9.0")):
        found = await store.job_for_message(channel, ts)
        assert found is not None
        kinds[ts] = (found[0].id, found[1], found[2])
    assert kinds == {
        "1.0": ("j1", MessageKind.STATUS, "1.0"),
        "1.2": ("j1", MessageKind.UPLOAD, "1.0"),
        "1.3": ("j1", MessageKind.CARD, "1.0"),
        "9.0": ("j1", MessageKind.CARD, None),
    }
    assert await store.job_for_message("C1", "7.7") is None


async def test_a_failed_transaction_leaves_nothing(store: Store) -> None:
    await store.insert_job(new_job())

    async def change_then_break() -> None:
        async with store.transaction() as db:
            await db.execute("UPDATE generations SET prompt = 'changed' WHERE id = 'j1'")
            await db.execute("UPDATE generation_images SET state = 'x' WHERE job_id = 'j1'")

    with pytest.raises(INTEGRITY_ERRORS):
        await change_then_break()
    job = await store.get_job("j1")
    assert job is not None
    assert job.prompt == "fox"


async def test_kits_keep_pins_in_order_and_honour_the_newest_pin_reaction(store: Store) -> None:
    await store.save_kit("C1", Kit(aspect_ratio="1:1", style="ink"), user_id="U1")
    for ts in ("3.0", "1.0", "2.0"):
        assert await store.add_pin("C1", ts, {"file": ts}, ready_at=1.0, limit=3)
    assert await store.add_pin("C1", "4.0", {}, ready_at=1.0, limit=3) is None, "the channel is full"
    assert await store.add_pin("C1", "1.0", {}, ready_at=1.0, limit=3) is False
    kit = await store.kit("C1")
    assert (kit.aspect_ratio, kit.style, [pin.message_ts for pin in kit.pins]) == (
        "1:1",
        "ink",
        ["3.0", "1.0", "2.0"],
    )
    assert await store.record_pin_reaction("C1", "1.0", "U2", active=True, event_ts=10.0)
    assert not await store.record_pin_reaction("C1", "1.0", "U2", active=False, event_ts=9.0), "older event"
    assert not await store.drop_pin("C1", "1.0"), "U2's pushpin holds it"
    assert await store.drop_pin("C1", "2.0")
    await store.clear_kit("C1", user_id="U3")
    assert await store.kit("C1") == Kit(updated_by="U3")


async def test_a_permutation_set_stores_its_variants_jobs_and_sheet(store: Store) -> None:
    new_set = PermutationSet(
        "s1", "T1", "C1", "U1", "a {red|blue} fox", "req-s1", None, None, None, None, None, 1.0
    )
    jobs = [replace(new_job(f"v{n}"), request_key=f"req-v{n}") for n in (1, 2)]
    stored = await store.insert_permutation_set(new_set, ["red", "blue"], jobs)
    assert [job.id for job, _ in stored] == ["v1", "v2"]
    with pytest.raises(DuplicateRequestError):
        await store.insert_permutation_set(new_set, ["red", "blue"], jobs)
    assert [job.thread_ts for job in await store.set_permutation_root("s1", "5.0")] == ["5.0", "5.0"]
    assert [v.label for v in await store.set_variants("s1")] == ["red", "blue"]
    tiles = [SheetTile("s1", 1, 1, "v1", 0, "red"), SheetTile("s1", 2, 2, None, None, "blue")]
    await store.set_sheet_file("s1", "F1", tiles)
    assert await store.sheet_tiles("s1") == tiles
    assert await store.set_sheet_ts_for_files("C1", ["F1"], "6.0") == ["s1"]
    assert await store.mark_sheet_posted("s1", None)
    assert not await store.mark_sheet_posted("s1", None)
    found = await store.permutation_set_for_message("C1", "6.0")
    assert found is not None
    assert (found.sheet_ts, found.root_ts) == ("6.0", "5.0")
    assert await store.open_permutation_sets() == []
