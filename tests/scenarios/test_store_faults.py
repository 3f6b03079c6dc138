"""Store faults: a database that cannot be used at start-up ends the process with one message; a
database that is locked, full or failing mid-run is answered to the user, reported by /healthz, and the
jobs in flight finish once it recovers.

Faults are real: a corrupt file, a newer `user_version`, a path that cannot be a database file, a
second connection holding the write lock, and (where this user may mount) a tiny tmpfs that is filled
up or remounted read-only. As root, `chmod` does not stop writes, so the read-only-file case runs only
for other users."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.fakes.oxen import FakeOxen
from tests.fakes.slack import ACK_DEADLINE, FakeSlack
from tests.scenarios.harness import Harness, is_card
from tests.scenarios.test_shutdown import BotProcess, bot_env, exit_within, spawn

EXIT_STORE = 3
"""`python -m bot`'s exit code when the database cannot be used (bot/__main__.py)."""


# -- start-up ------------------------------------------------------------------------------------


def corrupt(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a database; " * 200)


def newer_schema(path: Path) -> None:
    path.parent.mkdir(parents=True)
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA user_version = 999")


def parent_is_a_file(path: Path) -> None:
    path.parent.write_text("a file where the database's directory should be")


def a_directory(path: Path) -> None:
    path.mkdir(parents=True)


def read_only(path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes to a 0444 file in a 0555 directory anyway: see the tmpfs cases")
    path.parent.mkdir(parents=True)
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE t (x)")
    path.chmod(0o444)
    path.parent.chmod(0o555)


START_UP_FAULTS = {
    "corrupt": (corrupt, "Restore it from a backup, or move it aside"),
    "newer schema": (newer_schema, "Run the newer Dreamboard that wrote it, or restore a backup"),
    "parent is a file": (parent_is_a_file, "cannot be opened for writing"),
    "a directory": (a_directory, "cannot be opened for writing"),
    "read-only file": (read_only, "cannot be opened for writing"),
}


async def assert_refused_at_start(env: dict[str, str], advice: str) -> None:
    """The process prints one line naming DATABASE_PATH and `advice` on stderr and exits 3 within a second
    of printing it (not kept alive by aiosqlite's thread)."""
    process = await spawn(env)
    assert process.stderr is not None
    line = (await asyncio.wait_for(process.stderr.readline(), 20)).decode()
    code, rest = await exit_within(process, 1.0)
    assert code == EXIT_STORE, line + rest
    assert line.startswith(f"dreamboard cannot start: DATABASE_PATH={env['DATABASE_PATH']}: "), line
    assert advice in line
    assert "Traceback" not in rest
    assert rest.strip() == "", "more than one message"


@pytest.mark.parametrize("fault", list(START_UP_FAULTS))
async def test_a_database_that_cannot_be_used_at_start_up_ends_the_process_with_one_message(
    fake_slack: FakeSlack, fake_oxen: FakeOxen, tmp_path: Path, fault: str
) -> None:
    make, advice = START_UP_FAULTS[fault]
    database = tmp_path / "data" / "dreamboard.sqlite3"
    make(database)
    try:
        await assert_refused_at_start(bot_env(fake_slack, fake_oxen, database), advice)
    finally:
        if database.parent.is_dir():
            database.parent.chmod(0o755)  # so pytest can remove it


async def test_a_second_process_on_one_sqlite_file_is_refused_until_the_first_is_gone(
    fake_slack: FakeSlack, fake_oxen: FakeOxen, tmp_path: Path
) -> None:
    # Two processes on one file would both resume (and pay for) the same unfinished jobs.
    database = tmp_path / "data" / "dreamboard.sqlite3"
    first = await BotProcess.start(fake_slack, fake_oxen, database)
    try:
        env = bot_env(fake_slack, fake_oxen, database)
        await assert_refused_at_start(env, f"in use by another Dreamboard process (pid {first.process.pid})")
    finally:
        first.process.kill()
        await first.process.wait()
    # kill -9 leaves no stale lock: the kernel dropped it with the process.
    again = await BotProcess.start(fake_slack, fake_oxen, database)
    assert (await again.sigterm()).count("dreamboard ready") == 1


# -- a tiny disk ---------------------------------------------------------------------------------


class TinyDisk:
    """A 4 MiB tmpfs of this test's own: filled up, freed, or remounted read-only."""

    def __init__(self, mount: Path) -> None:
        self.mount = mount
        self._filler = mount / "filler"

    def fill(self) -> None:
        """Write until the filesystem has no block left (ENOSPC)."""
        fd = os.open(self._filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            for chunk in (65536, 4096, 1):  # down to the last partial block
                with contextlib.suppress(OSError):
                    while os.write(fd, b"\0" * chunk):
                        pass
            with pytest.raises(OSError, match="No space left") as full:
                os.write(fd, b"\0")
            assert full.value.errno == errno.ENOSPC
        finally:
            os.close(fd)

    def free(self) -> None:
        self._filler.unlink(missing_ok=True)

    def remount(self, mode: str) -> None:
        assert run("mount", "-o", f"remount,{mode}", str(self.mount)).returncode == 0


def run(tool: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run mount/umount (found on PATH) with fixed arguments; skips the test when the tool is missing."""
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"no {tool} here")
    return subprocess.run([path, *args], capture_output=True, check=False)  # noqa: S603 (fixed arguments)


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[TinyDisk]:
    """Skipped where this user may not mount (CI without root): see docs/reliability.md."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    mounted = run("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount))
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield TinyDisk(mount)
    finally:
        run("umount", "-l", str(mount))


async def test_a_full_disk_at_start_up_ends_the_process_with_one_message(
    fake_slack: FakeSlack, fake_oxen: FakeOxen, tiny_disk: TinyDisk
) -> None:
    database = tiny_disk.mount / "dreamboard.sqlite3"
    tiny_disk.fill()
    await assert_refused_at_start(bot_env(fake_slack, fake_oxen, database), "Free some space")


async def test_a_read_only_mount_at_start_up_ends_the_process_with_one_message(
    fake_slack: FakeSlack, fake_oxen: FakeOxen, tiny_disk: TinyDisk
) -> None:
    database = tiny_disk.mount / "dreamboard.sqlite3"
    with contextlib.closing(sqlite3.connect(database)) as db:
        db.execute("CREATE TABLE t (x)")
    tiny_disk.remount("ro")
    await assert_refused_at_start(bot_env(fake_slack, fake_oxen, database), "mounted read-write")


# -- mid-run -------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def write_lock(database: Path) -> AsyncIterator[None]:
    """Another process's connection holding the database's write lock (BEGIN IMMEDIATE) until the end.
    It waits for the lock on a worker thread: the bot shares this event loop and may be mid-transaction."""
    with contextlib.closing(
        sqlite3.connect(database, isolation_level=None, timeout=30, check_same_thread=False)
    ) as other:
        await asyncio.to_thread(other.execute, "BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")


@pytest.fixture(autouse=True)
def probe_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """/healthz probes on every request here (its few seconds of caching are a unit test's)."""
    monkeypatch.setattr("bot.store.database.PROBE_EVERY", 0.0)


async def health(harness: Harness) -> tuple[int, dict[str, object]]:
    status, body = await harness.get("/healthz")
    return status, json.loads(body)


def write_fault_seen(harness: Harness) -> asyncio.Event:
    """Set once the bot's store has had a write refused (locked, full or failing)."""
    assert harness.running is not None
    seen = asyncio.Event()
    harness.running.services.store.on_write_fault.append(seen.set)
    return seen


async def test_a_command_while_another_process_holds_the_lock_is_acked_at_once_and_answered(
    harness: Harness,
) -> None:
    await harness.start()
    async with write_lock(harness.database):
        response = await harness.command("a fox at dusk")
        assert response.status == 200
        assert response.elapsed < 1.0
        [told] = await harness.slack.wait_for("response_url", timeout=10)
        assert await health(harness) == (503, {"ok": False, "store": "unwritable"})
    text = str(told.params["text"])
    assert "could not save `/imagine a fox at dusk` (its database is locked by another process)" in text
    assert "Try again in a few minutes" in text
    assert await harness.jobs() == []
    assert await health(harness) == (200, {"ok": True, "store": "open"})
    await harness.generate("a fox at dusk")  # and it works again


async def test_an_event_while_another_process_holds_the_lock_is_acked_within_slacks_deadline(
    harness: Harness,
) -> None:
    await harness.start()
    root = await harness.generate("a red fox")
    async with write_lock(harness.database):
        response = await harness.send(harness.slack.human_message("C1", "now at night", thread_ts=root))
        assert response.status == 200
        assert response.elapsed < ACK_DEADLINE / 2
        [told] = await harness.slack.wait_for("chat.postEphemeral", timeout=10)
    assert "could not save your message (its database is locked by another process)" in told.params["text"]
    assert told.params["thread_ts"] == root
    assert len(await harness.jobs()) == 1


async def test_a_job_in_flight_when_the_lock_is_taken_finishes_once_it_is_released(harness: Harness) -> None:
    await harness.start()
    harness.oxen.hold()
    await harness.command("a fox at dusk")
    await harness.oxen.recorder.wait_for("POST /ai/queue")
    faulted = write_fault_seen(harness)
    async with write_lock(harness.database):
        harness.oxen.release()  # the job's next write (the image's outcome) meets the lock
        await asyncio.wait_for(faulted.wait(), 10)
        assert harness.slack.calls_to("files.getUploadURLExternal") == []
    [card] = await harness.slack.wait_for("chat.update", where=is_card, timeout=15)
    [(job, _)] = await harness.jobs()
    assert job.state.value == "uploaded"
    assert card.params["ts"] == job.status_ts
    assert harness.slack.calls_to("response_url") == []


async def test_a_full_disk_mid_run_is_answered_reported_and_the_job_in_flight_finishes_after(
    fake_slack: FakeSlack, fake_oxen: FakeOxen, tiny_disk: TinyDisk
) -> None:
    harness = Harness(fake_slack, fake_oxen, tiny_disk.mount / "dreamboard.sqlite3")
    await harness.start()
    try:
        assert await health(harness) == (200, {"ok": True, "store": "open"})
        fake_oxen.hold()
        await harness.command("a fox at dusk")
        await fake_oxen.recorder.wait_for("POST /ai/queue")
        faulted = write_fault_seen(harness)
        tiny_disk.fill()
        assert await health(harness) == (503, {"ok": False, "store": "unwritable"})

        await harness.command("an owl at noon")
        [told] = await fake_slack.wait_for("response_url", timeout=10)
        assert "(its database or disk is full)" in str(told.params["text"])
        fake_oxen.release()
        await asyncio.wait_for(faulted.wait(), 10)

        tiny_disk.free()
        await fake_slack.wait_for("chat.update", where=is_card, timeout=15)
        assert await health(harness) == (200, {"ok": True, "store": "open"})
        [(job, _)] = await harness.jobs()
        assert (job.prompt, job.state.value) == ("a fox at dusk", "uploaded")
    finally:
        await harness.stop(grace=1.0)
