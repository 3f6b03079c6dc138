"""One process per SQLite file: `python -m bot` holds an exclusive `flock` on `<database>.lock` while it
runs, so a second process on the same file is refused at start-up instead of resuming (and paying for)
the same unfinished jobs. The kernel drops the lock when the holder exits, however it exits (kill -9
included), so a crash never leaves a stale lock behind. Readers (tests, scripts) open the database
without it; several replicas need PostgreSQL (README "More than one replica").

Within one process the lock is counted, not taken again: `flock` locks belong to an open file, so a
second open in the same process would refuse itself (tests start several runtimes in one process)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from pathlib import Path

from bot.store.errors import StoreOpenError

_held: dict[Path, tuple[int, int]] = {}
"""Lock file → (descriptor, holders in this process)."""
_guard = threading.Lock()


class DatabaseLock:
    """This process's hold on one SQLite database; `release` once, when the store is closed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._released = False

    @classmethod
    def acquire(cls, database: Path) -> DatabaseLock:
        """Hold `database`'s lock; raises StoreOpenError naming the other process when one holds it."""
        path = lock_path(database)
        with _guard:
            if path in _held:
                fd, holders = _held[path]
                _held[path] = (fd, holders + 1)
                return cls(path)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise StoreOpenError(
                    f"DATABASE_PATH={database}: the database cannot be opened for writing (its lock file "
                    f"{path}: {exc.strerror}). Check that the path names a file in a directory "
                    "Dreamboard's user can write, on a disk mounted read-write."
                ) from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                other = os.pread(fd, 32, 0).decode(errors="replace").strip()
                os.close(fd)
                raise StoreOpenError(
                    f"DATABASE_PATH={database}: in use by another Dreamboard process"
                    f"{f' (pid {other})' if other.isdigit() else ''}. SQLite allows one process: stop "
                    "the other one first, or run several replicas on PostgreSQL (DATABASE_URL; README "
                    '"More than one replica").'
                ) from None
            with contextlib.suppress(OSError):  # only for the message above (a full disk refuses it)
                os.ftruncate(fd, 0)
                os.pwrite(fd, str(os.getpid()).encode(), 0)
            _held[path] = (fd, 1)
            return cls(path)

    def release(self) -> None:
        """Give this hold back; the lock itself goes with the last holder in the process."""
        with _guard:
            if self._released:
                return
            self._released = True
            fd, holders = _held[self.path]
            if holders > 1:
                _held[self.path] = (fd, holders - 1)
                return
            del _held[self.path]
            os.close(fd)


def lock_path(database: Path) -> Path:
    """The lock file beside `database`."""
    return database.with_name(database.name + ".lock")
