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

from bot.store.database import (
    MAX_BACKOFF,
    PROBE_BYTES,
    PROBE_EVERY,
    PROBE_PATIENCE,
    Dialect,
    ProbeCache,
    Row,
    Tx,
    patience,
    write_patience,
)
from bot.store.errors import StoreOpenError, StoreUnavailableError

__all__ = ["PROBE_EVERY", "PROBE_PATIENCE", "SqliteDatabase", "is_write_fault"]

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


def _code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def is_write_fault(exc: BaseException) -> bool:
    """Whether `exc` is SQLite refusing a write for a reason that may pass (locked, full, I/O)."""
    return isinstance(exc, sqlite3.OperationalError) and _code(exc) in _TRANSIENT


def _reason(exc: sqlite3.Error) -> str:
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


class SqliteDatabase:
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
        self._db = db
        self._tx = SqliteTx(db)
        self._open = True
        self._writing = asyncio.Lock()
        self._clock = clock
        self._sleep = sleep
        self._probe_cache = ProbeCache(clock)
        self.statements = 0
        self.write_faults = 0
        """Writes SQLite refused as locked, full or failing (each attempt counts)."""
        self.on_write_fault: list[Callable[[], None]] = []
        """Called after each such refusal (metrics, tests)."""

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

    def _count(self, _: str) -> None:
        self.statements += 1

    @property
    def is_open(self) -> bool:
        """Whether the connection is usable (for /healthz)."""
        return self._open

    async def close(self) -> None:
        """Close the connection."""
        if self._open:
            self._open = False
            await self._db.close()

    async def writable(self) -> bool:
        """Whether the database takes a write now (for /healthz): a committed transaction that writes
        PROBE_BYTES and deletes them again, at most every PROBE_EVERY seconds (cached in between). A
        real write that failed makes it False until the next probe succeeds."""
        if not self._open:
            return False
        return await self._probe_cache.answer(self._probe_once)

    async def _probe_once(self) -> bool:
        try:
            with write_patience(PROBE_PATIENCE):
                await self._attempt(self._probe, record=False)
        except StoreUnavailableError:
            return False
        return True

    async def _probe(self) -> None:
        await self._db.execute("BEGIN IMMEDIATE")
        try:
            await self._db.execute("INSERT INTO write_probe (payload) VALUES (zeroblob(?))", (PROBE_BYTES,))
            await self._db.execute("DELETE FROM write_probe")
            await self._db.execute("COMMIT")
        finally:
            if self._db.in_transaction:
                await self._db.execute("ROLLBACK")

    async def _attempt(self, operation: Callable[[], Awaitable[T]], *, record: bool = True) -> T:
        """Run `operation` under the write lock, retried with backoff (lock released in between) while
        SQLite refuses it as locked, full or failing, for the current `write_patience`."""
        deadline = self._clock() + patience()
        delay = 0.05
        while True:
            try:
                async with asyncio.timeout(max(0.0, deadline - self._clock())):
                    await self._writing.acquire()
            except TimeoutError:
                raise StoreUnavailableError("its database is busy with other writes") from None
            try:
                result = await operation()
            except sqlite3.Error as exc:
                if not is_write_fault(exc):
                    raise
                fault = exc
            else:
                if record:
                    self._probe_cache.write_failed = False
                return result
            finally:
                self._writing.release()
            if record:
                self._probe_cache.write_failed = True
                self.write_faults += 1
                for hook in self.on_write_fault:
                    hook()
            if self._clock() + delay > deadline:
                raise StoreUnavailableError(_reason(fault)) from fault
            await self._sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)

    async def in_transaction(self, body: Callable[[Tx], Awaitable[T]]) -> T:
        """BEGIN IMMEDIATE … COMMIT around `body` (ROLLBACK when anything fails), retried as a whole."""

        async def once() -> T:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                result = await body(self._tx)
                await self._db.execute("COMMIT")
            finally:
                if self._db.in_transaction:
                    await self._db.execute("ROLLBACK")
            return result

        return await self._attempt(once)

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
        """Run one write statement (retried, see `_attempt`); the number of rows it changed."""
        return await self._attempt(lambda: self._tx.execute(sql, parameters))

    async def execute_returning(self, sql: str, parameters: Sequence[Any] = ()) -> list[Row]:
        """Run one `… RETURNING` write (retried); the rows it returned."""
        return await self._attempt(lambda: self._tx.fetchall(sql, parameters))

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
