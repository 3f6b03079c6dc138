"""The one-process lock on a SQLite file (bot/store/database_lock.py), against a real second process."""

from __future__ import annotations

import asyncio
import fcntl
import os
import sys
from pathlib import Path

import pytest

from bot.store.database_lock import DatabaseLock, lock_path
from bot.store.errors import StoreOpenError

HOLD = """
import sys
from pathlib import Path
from bot.store.database_lock import DatabaseLock
DatabaseLock.acquire(Path(sys.argv[1]))
print("held", flush=True)
sys.stdin.read()
"""


async def test_another_process_holding_the_file_is_named_and_its_exit_frees_the_lock(tmp_path: Path) -> None:
    database = tmp_path / "dreamboard.sqlite3"
    holder = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLD,
        str(database),
        cwd=Path(__file__).parents[2],
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert holder.stdout is not None
    try:
        assert await asyncio.wait_for(holder.stdout.readline(), 20) == b"held\n"
        refused = rf"in use by another Dreamboard process \(pid {holder.pid}\)"
        with pytest.raises(StoreOpenError, match=refused):
            DatabaseLock.acquire(database)
    finally:
        await holder.communicate(b"")
    lock = DatabaseLock.acquire(database)
    lock.release()


def locked_elsewhere(database: Path) -> bool:
    """Whether another open file (as another process would have) is refused the lock."""
    fd = os.open(lock_path(database), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_holds_within_one_process_are_counted_and_the_last_release_frees_the_file(tmp_path: Path) -> None:
    database = tmp_path / "dreamboard.sqlite3"
    first, second = DatabaseLock.acquire(database), DatabaseLock.acquire(database)
    assert lock_path(database).read_text() == str(os.getpid())
    first.release()
    first.release()  # a second release of one hold changes nothing
    assert locked_elsewhere(database)
    second.release()
    assert not locked_elsewhere(database)
