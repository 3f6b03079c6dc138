"""The SQLite adapter: one aiosqlite connection (WAL), a write lock, and SQLite's own fault handling."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from bot.store.database import PROBE_BYTES, DatabaseAdapter, Dialect, Row, Tx
from bot.store.errors import StoreOpenError, StoreUnavailableError

__all__ = ["SqliteDatabase", "is_write_fault"]

T = TypeVar("T")

BUSY_TIMEOUT_MS = 200
"""SQLite's own wait for another connection's lock, per statement. Short, because aiosqlite runs every
statement on one thread: a long wait there would hold up every other query. Longer waits are
`write_patience`, spent between attempts, off that thread."""

# SQLite primary result codes a write can meet while the database is locked, full or failing; they may
# pass (the lock is released, space returns), so such a write is retried within its patience.
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY, _SQLITE_IOERR = 5, 6, 8, 10
_SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 11, 13, 14, 26
_TRANSIENT = {_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_FULL, _SQLITE_CANTOPEN}


def _code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def is_write_fault(exc: BaseException) -> bool:
    """Whether `exc` is SQLite refusing a write for a reason that may pass (locked, full, I/O)."""
    return isinstance(exc, sqlite3.OperationalError) and _code(exc) in _TRANSIENT


def _reason(exc: BaseException) -> str:
    code = _code(exc)
    if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return "its database is locked by another process"
    if code == _SQLITE_FULL:
        return "its database or disk is full"
    return "its database cannot be written"


class SqliteTx:
    """Statements on the connection inside its open transaction."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def fetchone(self, sql: str, parameters: Sequence[Any] = ()) -> Row | None:
        """The first row of a query (or of a write's RETURNING)."""
        async with self._db.execute(sql, tuple(parameters)) as cursor:
            row: sqlite3.Row | None = await cursor.fetchone()
            return row

    async def fetchall(self, sql: str, parameters: Sequence[Any] = ()) -> list[Row]:
        """Every row of a query (or of a write's RETURNING)."""
        async with self._db.execute(sql, tuple(parameters)) as cursor:
            return list(await cursor.fetchall())

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> int:
        """Run a statement; the number of rows it changed."""
        async with self._db.execute(sql, tuple(parameters)) as cursor:
            return cursor.rowcount

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement once per parameter row."""
        await self._db.executemany(sql, [tuple(row) for row in rows])


class SqliteDatabase(DatabaseAdapter):
    """One connection; aiosqlite runs it on its own thread.

    Writes go through one lock, so a multi-statement transaction never interleaves with another
    coroutine's statements on the shared connection. A write refused because the database is locked,
    full or failing is retried with backoff for the caller's `write_patience` (the lock is released
    between attempts), then raises StoreUnavailableError.
    """

    dialect: Dialect = "sqlite"

    def __init__(
        self,
        db: aiosqlite.Connection,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        super().__init__(clock=clock, sleep=sleep)
        self._db = db
        self._tx = SqliteTx(db)
        self._writing = asyncio.Lock()

    @classmethod
    async def open(
        cls,
        path: Path,
        migrations: Sequence[str],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> SqliteDatabase:
        """Open (creating parents and schema as needed) the database at `path`; raises StoreOpenError
        naming DATABASE_PATH and what to do when it cannot be used (the connection is closed then)."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreOpenError(_open_problem(path, exc)) from exc
        connecting = aiosqlite.connect(path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            db = await connecting
        except sqlite3.Error as exc:
            await _worker_stopped(connecting)
            raise StoreOpenError(_open_problem(path, exc)) from exc
        try:
            db.row_factory = sqlite3.Row
            for pragma in (
                f"busy_timeout={BUSY_TIMEOUT_MS}",
                "journal_mode=WAL",
                "synchronous=NORMAL",
                "foreign_keys=ON",
            ):
                await db.execute(f"PRAGMA {pragma}")
            database = cls(db, clock=clock, sleep=sleep)
            await database._migrate(path, migrations)
            await db.set_trace_callback(database._count)
        except BaseException as exc:
            await db.close()
            if isinstance(exc, sqlite3.Error):
                raise StoreOpenError(_open_problem(path, exc)) from exc
            raise
        return database

    async def close(self) -> None:
        """Close the connection."""
        if self._open:
            self._open = False
            await self._db.close()

    def _is_fault(self, exc: Exception) -> bool:
        return is_write_fault(exc)

    def _fault_reason(self, exc: Exception) -> str:
        return _reason(exc)

    async def _write_probe(self, wait: float) -> None:
        await self._locked(self._probe, wait)

    async def _probe(self) -> None:
        await self._db.execute("BEGIN IMMEDIATE")
        try:
            await self._db.execute("INSERT INTO write_probe (payload) VALUES (zeroblob(?))", (PROBE_BYTES,))
            await self._db.execute("DELETE FROM write_probe")
            await self._db.execute("COMMIT")
        finally:
            if self._db.in_transaction:
                await self._db.execute("ROLLBACK")

    async def _locked(self, operation: Callable[[], Awaitable[T]], wait: float) -> T:
        """Run `operation` under the write lock, waiting at most `wait` seconds for the lock."""
        try:
            async with asyncio.timeout(wait):
                await self._writing.acquire()
        except TimeoutError:
            raise StoreUnavailableError("its database is busy with other writes") from None
        try:
            return await operation()
        finally:
            self._writing.release()

    async def _attempt_locked(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run `operation` under the write lock, retried with backoff (lock released in between) while
        SQLite refuses it as locked, full or failing, for the current `write_patience`."""
        return await self._attempt(lambda left: self._locked(operation, left))

    async def in_transaction(self, body: Callable[[Tx], Awaitable[T]], *, lock: int | None = None) -> T:
        """BEGIN IMMEDIATE … COMMIT around `body` (ROLLBACK when anything fails), retried as a whole;
        every write transaction is serialized already, so `lock` needs nothing more."""

        async def once() -> T:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                result = await body(self._tx)
                await self._db.execute("COMMIT")
            finally:
                if self._db.in_transaction:
                    # A COMMIT interrupted by a cancel may still complete in aiosqlite's thread: then
                    # there is nothing left to roll back, and the cancel is what must propagate.
                    with contextlib.suppress(sqlite3.OperationalError):
                        await self._db.execute("ROLLBACK")
            return result

        return await self._attempt_locked(once)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """BEGIN IMMEDIATE … COMMIT (ROLLBACK on any error) under the write lock (not retried)."""
        async with self._writing:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._tx
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> int:
        """Run one write statement (retried, see `_attempt_locked`); the number of rows it changed."""
        return await self._attempt_locked(lambda: self._tx.execute(sql, parameters))

    async def execute_returning(self, sql: str, parameters: Sequence[Any] = ()) -> list[Row]:
        """Run one `… RETURNING` write (retried); the rows it returned."""
        return await self._attempt_locked(lambda: self._tx.fetchall(sql, parameters))

    async def fetchone(self, sql: str, parameters: Sequence[Any] = ()) -> Row | None:
        """The first row of a read."""
        return await self._tx.fetchone(sql, parameters)

    async def fetchall(self, sql: str, parameters: Sequence[Any] = ()) -> list[Row]:
        """Every row of a read."""
        return await self._tx.fetchall(sql, parameters)

    async def _migrate(self, path: Path, migrations: Sequence[str]) -> None:
        version = await self.schema_version()
        if version > len(migrations):
            raise StoreOpenError(
                f"DATABASE_PATH={path}: the database has schema version {version}, newer than this "
                f"Dreamboard knows ({len(migrations)}). Run the newer Dreamboard that wrote it, or restore "
                "a backup made by this version."
            )
        for number, script in enumerate(migrations[version:], start=version + 1):
            await self._db.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")

    async def schema_version(self) -> int:
        """The applied migration number (PRAGMA user_version)."""
        row = await self.fetchone("PRAGMA user_version")
        return int(row[0]) if row else 0


async def _worker_stopped(connection: aiosqlite.Connection) -> None:
    """Wait for the worker thread of a connection that failed to open: aiosqlite stops it without
    waiting, and a thread still answering after the event loop closed prints a traceback."""
    thread = getattr(connection, "_thread", None)
    if isinstance(thread, threading.Thread) and thread.is_alive():
        await asyncio.to_thread(thread.join, 1.0)


def _open_problem(path: Path, exc: BaseException) -> str:
    """The one message for an operator whose database cannot be opened: what is wrong, what to do."""
    where = f"DATABASE_PATH={path}"
    code = _code(exc) if isinstance(exc, sqlite3.Error) else None
    if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return (
            f"{where}: the file is not a SQLite database or is damaged. Restore it from a backup, or move "
            "it aside (Dreamboard then starts with an empty database; jobs in it are not resumed)."
        )
    if code == _SQLITE_FULL:
        return f"{where}: the disk holding it is full. Free some space and start Dreamboard again."
    return (
        f"{where}: the database cannot be opened for writing ({type(exc).__name__}: {exc}). Check that "
        "the path names a file (not a directory) in a directory Dreamboard's user can write, that "
        "the file is not read-only or immutable, and that the disk is mounted read-write and not full."
    )
