"""The PostgreSQL adapter: psycopg 3 (async) on a connection pool, with PostgreSQL's fault handling.

The Store's SQL uses `?` placeholders; they become psycopg's `%s` here (a literal `%` becomes `%%`),
never inside a quoted literal. Python booleans are stored as 0/1, as SQLite stores them. Single
statements run in autocommit; transactions are SERIALIZABLE, so a read-then-write body keeps the
guarantee SQLite's BEGIN IMMEDIATE gives it, and a serialization failure is retried as a whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg.rows import RowMaker
from psycopg_pool import AsyncConnectionPool

from bot.store.database import PROBE_BYTES, DatabaseAdapter, Dialect, Row, Tx, patience, redacted_url
from bot.store.errors import StoreOpenError
from bot.store.migrations import for_postgres

T = TypeVar("T")

POOL_SIZE = 10
"""Connections one process keeps at most."""
CONNECT_TIMEOUT = 5
"""Seconds to wait for the server at start-up (and for a pooled connection later)."""
MIGRATION_LOCK = 0x6472_6561_6D62
"""The advisory lock key held while migrating, so two replicas starting together migrate once."""

_TOKENS = re.compile(r"'(?:[^']|'')*'|\?|%")


@functools.lru_cache(maxsize=1024)
def placeholders(sql: str) -> str:
    """`sql` with `?` placeholders as psycopg's `%s` and `%` as `%%`, leaving quoted literals alone."""

    def swap(match: re.Match[str]) -> str:
        found = match.group(0)
        if found == "?":
            return "%s"
        return found.replace("%", "%%")

    return _TOKENS.sub(swap, sql)


def _values(parameters: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(int(value) if isinstance(value, bool) else value for value in parameters)


class PgRow:
    """A row indexable by column name (the first column of that name) and by position."""

    __slots__ = ("_index", "_values")

    def __init__(self, values: Sequence[Any], index: dict[str, int]) -> None:
        self._values = tuple(values)
        self._index = index

    def __getitem__(self, key: int | str, /) -> Any:
        return self._values[self._index[key] if isinstance(key, str) else key]

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"PgRow({self._values!r})"


def pg_row(cursor: psycopg.AsyncCursor[Any]) -> RowMaker[PgRow]:
    """psycopg row factory making PgRow."""
    index: dict[str, int] = {}
    for number, column in enumerate(cursor.description or ()):
        index.setdefault(column.name, number)
    return lambda values: PgRow(values, index)


Connection = psycopg.AsyncConnection[PgRow]


def is_fault(exc: BaseException) -> bool:
    """Whether `exc` is PostgreSQL refusing a statement for a reason that may pass: the server out of
    reach or restarting (connection errors), a serialization failure or deadlock, a full disk."""
    return isinstance(exc, psycopg.OperationalError)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, pg_errors.SerializationFailure | pg_errors.DeadlockDetected):
        return "its database is busy with conflicting writes"
    if isinstance(exc, pg_errors.DiskFull | pg_errors.OutOfMemory):
        return "its database server is out of space"
    return "its database server cannot be reached"


class PostgresTx:
    """Statements on one connection inside its open transaction."""

    def __init__(self, conn: Connection, counter: Callable[[], None]) -> None:
        self._conn = conn
        self._counted = counter

    async def fetchone(self, sql: str, parameters: Sequence[Any] = ()) -> Row | None:
        """The first row of a query (or of a write's RETURNING)."""
        self._counted()
        cursor = await self._conn.execute(placeholders(sql), _values(parameters))
        return await cursor.fetchone()

    async def fetchall(self, sql: str, parameters: Sequence[Any] = ()) -> list[Row]:
        """Every row of a query (or of a write's RETURNING)."""
        self._counted()
        cursor = await self._conn.execute(placeholders(sql), _values(parameters))
        return list(await cursor.fetchall())

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> int:
        """Run a statement; the number of rows it changed."""
        self._counted()
        cursor = await self._conn.execute(placeholders(sql), _values(parameters))
        return cursor.rowcount

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement once per parameter row."""
        batch = [_values(row) for row in rows]
        for _ in batch:
            self._counted()
        async with self._conn.cursor() as cursor:
            await cursor.executemany(placeholders(sql), batch)


class PostgresDatabase(DatabaseAdapter):
    """A pool of connections to one PostgreSQL database.

    A statement or transaction refused for a reason that may pass (`is_fault`) is retried with backoff
    for the caller's `write_patience`, then raises StoreUnavailableError; reads too, since a read also
    needs the server.
    """

    dialect: Dialect = "postgres"

    def __init__(
        self,
        pool: AsyncConnectionPool[Connection],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        super().__init__(clock=clock, sleep=sleep)
        self._pool = pool

    @classmethod
    async def open(
        cls,
        url: str,
        migrations: Sequence[str],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> PostgresDatabase:
        """Connect to the database at `url` and migrate it (once, whichever replica gets there first);
        raises StoreOpenError naming DATABASE_URL (password hidden) and what to do."""
        where = f"DATABASE_URL={redacted_url(url)}"
        try:
            conn = await psycopg.AsyncConnection.connect(
                url, autocommit=True, connect_timeout=CONNECT_TIMEOUT, row_factory=pg_row
            )
        except psycopg.Error as exc:
            raise StoreOpenError(
                f"{where}: cannot connect to the PostgreSQL server ({_hidden(exc, url)}). Check the host, "
                "port, user, password and database name, and that the server is running and reachable."
            ) from exc
        try:
            await _migrate(conn, for_postgres(migrations), where)
        except psycopg.Error as exc:
            raise StoreOpenError(
                f"{where}: the schema could not be brought up to date ({_hidden(exc, url)}). Check that "
                "the user may create tables in the database."
            ) from exc
        finally:
            await conn.close()
        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            url,
            connection_class=psycopg.AsyncConnection[PgRow],
            kwargs={"autocommit": True, "row_factory": pg_row, "connect_timeout": CONNECT_TIMEOUT},
            min_size=1,
            max_size=POOL_SIZE,
            timeout=CONNECT_TIMEOUT,
            open=False,
        )
        try:
            await pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        except psycopg.Error as exc:
            await pool.close()
            raise StoreOpenError(f"{where}: cannot connect to the PostgreSQL server ({exc}).") from exc
        return cls(pool, clock=clock, sleep=sleep)

    async def close(self) -> None:
        """Close the pool."""
        if self._open:
            self._open = False
            await self._pool.close()

    def _is_fault(self, exc: Exception) -> bool:
        return is_fault(exc)

    def _fault_reason(self, exc: Exception) -> str:
        return _reason(exc)

    async def _write_probe(self, wait: float) -> None:
        async with self._transaction(wait) as tx:
            await tx.execute("INSERT INTO write_probe (payload) VALUES (?)", (bytes(PROBE_BYTES),))
            await tx.execute("DELETE FROM write_probe")

    async def _run_transaction(
        self, body: Callable[[Tx], Awaitable[T]], wait: float, lock: int | None = None
    ) -> T:
        async with self._transaction(wait, lock) as tx:
            return await body(tx)

    async def in_transaction(self, body: Callable[[Tx], Awaitable[T]], *, lock: int | None = None) -> T:
        """A SERIALIZABLE transaction around `body` (rolled back when anything fails), retried as a
        whole while PostgreSQL refuses it for a reason that may pass. With `lock`, a READ COMMITTED one
        holding that advisory lock from its first statement instead: transactions on one hot set of
        rows (the job line) then queue for it rather than abort each other as SERIALIZABLE would."""
        return await self._attempt(lambda left: self._run_transaction(body, left, lock))

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Tx]:
        """A SERIALIZABLE transaction on one pooled connection (rolled back on any error), not retried."""
        return self._transaction(patience())

    @contextlib.asynccontextmanager
    async def _transaction(self, wait: float, lock: int | None = None) -> AsyncIterator[Tx]:
        """A transaction on a connection the pool hands out within `wait` seconds (SERIALIZABLE, or
        READ COMMITTED under the advisory `lock`)."""
        async with self._pool.connection(timeout=wait) as conn, conn.transaction():
            self._count()
            if lock is None:
                await conn.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
            else:
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
            yield PostgresTx(conn, self._count)

    async def _on_connection(self, work: Callable[[PostgresTx], Awaitable[T]], wait: float) -> T:
        async with self._pool.connection(timeout=wait) as conn:
            return await work(PostgresTx(conn, self._count))

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> int:
        """Run one write statement (retried); the number of rows it changed."""
        return await self._attempt(
            lambda left: self._on_connection(lambda tx: tx.execute(sql, parameters), left)
        )

    async def execute_returning(self, sql: str, parameters: Sequence[Any] = ()) -> list[Row]:
        """Run one `… RETURNING` write (retried); the rows it returned."""
        return await self._attempt(
            lambda left: self._on_connection(lambda tx: tx.fetchall(sql, parameters), left)
        )

    async def fetchone(self, sql: str, parameters: Sequence[Any] = ()) -> Row | None:
        """The first row of a read (retried while the server is out of reach)."""
        return await self._attempt(
            lambda left: self._on_connection(lambda tx: tx.fetchone(sql, parameters), left), record=False
        )

    async def fetchall(self, sql: str, parameters: Sequence[Any] = ()) -> list[Row]:
        """Every row of a read (retried while the server is out of reach)."""
        return await self._attempt(
            lambda left: self._on_connection(lambda tx: tx.fetchall(sql, parameters), left), record=False
        )

    async def schema_version(self) -> int:
        """The applied migration number (the `schema_version` table)."""
        row = await self.fetchone("SELECT version FROM schema_version")
        return int(row[0]) if row else 0


async def _migrate(conn: Connection, migrations: Sequence[str], where: str) -> None:
    """Apply the migrations not applied yet, each in its own transaction holding MIGRATION_LOCK, so a
    replica starting at the same time waits and then finds them applied."""
    while True:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            cursor = await conn.execute("SELECT version FROM schema_version")
            row = await cursor.fetchone()
            if row is None:
                await conn.execute("INSERT INTO schema_version (version) VALUES (0)")
            version = int(row[0]) if row else 0
            if version > len(migrations):
                raise StoreOpenError(
                    f"{where}: the database has schema version {version}, newer than this Dreamboard "
                    f"knows ({len(migrations)}). Run the newer Dreamboard that wrote it, or restore a "
                    "backup made by this version."
                )
            if version == len(migrations):
                return
            await conn.execute(migrations[version])
            await conn.execute("UPDATE schema_version SET version = %s", (version + 1,))


def _hidden(exc: BaseException, url: str) -> str:
    """The error's text with the URL's password (should the driver echo it) hidden."""
    text = str(exc).strip().replace("\n", " ")
    password = psycopg.conninfo.conninfo_to_dict(url).get("password")
    return text.replace(str(password), "***") if password else text
