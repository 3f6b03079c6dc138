"""Store: writes refused as locked are retried with backoff for the caller's patience; the /healthz
probe is throttled and follows real write failures. A second real connection holds the lock."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.store import database
from bot.store.database import write_patience
from bot.store.errors import StoreUnavailableError
from bot.store.model import MessageKind
from bot.store.sqlite import is_write_fault
from bot.store.store import Store
from tests.unit.test_store import new_job


class FakeTime:
    """A clock that only moves when the store sleeps (or the test advances it)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.on_sleep: list[object] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep:
            action = self.on_sleep.pop(0)
            assert callable(action)
            action()


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
async def store(tmp_path: Path, fake_time: FakeTime) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "db.sqlite3", clock=fake_time.clock, sleep=fake_time.sleep)
    yield opened
    await opened.close()


class Lock:
    """Another connection that takes and releases the database's write lock."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None)

    def take(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def release(self) -> None:
        self._db.execute("ROLLBACK")

    def close(self) -> None:
        if self._db.in_transaction:
            self.release()
        self._db.close()


@pytest.fixture
def lock(tmp_path: Path, store: Store) -> Iterator[Lock]:
    held = Lock(tmp_path / "db.sqlite3")
    yield held
    held.close()


async def test_a_locked_write_backs_off_and_gives_up_when_its_patience_runs_out(
    store: Store, lock: Lock, fake_time: FakeTime
) -> None:
    lock.take()
    with write_patience(1.0), pytest.raises(StoreUnavailableError) as refused:
        await store.claim_event("event:1")
    assert refused.value.reason == "its database is locked by another process"
    assert fake_time.sleeps == [0.05, 0.1, 0.2, 0.4]  # the next wait would pass the 1 s patience
    assert store.write_faults == 5
    assert isinstance(refused.value.__cause__, sqlite3.OperationalError)
    assert is_write_fault(refused.value.__cause__)


async def test_a_locked_write_succeeds_once_the_lock_is_released(
    store: Store, lock: Lock, fake_time: FakeTime
) -> None:
    lock.take()
    fake_time.on_sleep = [lambda: None, lock.release]
    with write_patience(60.0):
        assert await store.claim_event("event:1")
    assert fake_time.sleeps == [0.05, 0.1]
    assert store.write_faults == 2
    assert not await store.claim_event("event:1")  # it was stored once


async def test_a_transaction_that_cannot_begin_stores_nothing_and_the_next_one_works(
    store: Store, lock: Lock, fake_time: FakeTime
) -> None:
    lock.take()
    with write_patience(0.0), pytest.raises(StoreUnavailableError):
        await store.insert_job(new_job("j1"))
    lock.release()
    assert await store.get_job("j1") is None
    job, images = await store.insert_job(new_job("j1"))
    assert (job.id, len(images)) == ("j1", 2)


async def test_the_probe_is_cached_and_follows_real_write_failures(
    store: Store, lock: Lock, fake_time: FakeTime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "PROBE_PATIENCE", 0.0)
    assert await store.writable()
    lock.take()
    assert await store.writable(), "cached for PROBE_EVERY seconds"
    with write_patience(0.0), pytest.raises(StoreUnavailableError):
        await store.claim_event("event:1")
    assert not await store.writable(), "a real write failed since"
    fake_time.now += database.PROBE_EVERY
    assert not await store.writable()
    lock.release()
    assert not await store.writable(), "cached"
    fake_time.now += database.PROBE_EVERY
    assert await store.writable()


async def test_errors_that_retrying_cannot_mend_are_raised_at_once(store: Store, fake_time: FakeTime) -> None:
    with write_patience(60.0), pytest.raises(sqlite3.IntegrityError):
        await store.add_message("C1", "1.0", "no-such-job", MessageKind.CARD, thread_ts=None)
    assert fake_time.sleeps == []
    assert not is_write_fault(sqlite3.OperationalError("no such table: x"))
