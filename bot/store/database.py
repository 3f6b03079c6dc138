"""The small database interface the Store runs on (`Database`), and `DatabaseAdapter`, the base the
SQLite and the PostgreSQL adapter share.

SQL is written once, with `?` placeholders; an adapter translates what its engine needs. Rows are
indexable by column name and by position on both.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

from bot.store.errors import StoreUnavailableError

T = TypeVar("T")

Dialect = Literal["sqlite", "postgres"]

PRE_ACK_PATIENCE = 0.5
"""How long a write that runs before Slack's ack (the event dedupe claim) may keep retrying."""
INTERACTIVE_PATIENCE = 2.0
"""The default patience: a user's request is answered (with the failure) within a few seconds."""
PROBE_EVERY = 2.0
"""/healthz probes the database at most this often (seconds); answers in between are cached."""
PROBE_PATIENCE = 1.0
"""How long the probe may wait for other writes under way and retry a refused write."""
PROBE_BYTES = 16384
"""The write probe's size: it fails when the database cannot take a write of a few pages."""
MAX_BACKOFF = 2.0
"""The longest wait between two attempts of a refused write."""

_patience: ContextVar[float] = ContextVar("store_write_patience", default=INTERACTIVE_PATIENCE)


@contextlib.contextmanager
def write_patience(seconds: float) -> Iterator[None]:
    """Within this block (and tasks started in it), a failing write is retried for up to `seconds`."""
    token = _patience.set(seconds)
    try:
        yield
    finally:
        _patience.reset(token)


def patience() -> float:
    """The current `write_patience` (seconds)."""
    return _patience.get()


class Row(Protocol):
    """A result row: `row["column"]` or `row[0]`."""

    def __getitem__(self, key: int | str, /) -> Any: ...


class Tx(Protocol):
    """Statements inside one transaction (`Database.transaction`, `Database.in_transaction`)."""

    async def fetchone(self, sql: str, parameters: Sequence[Any] = ()) -> Row | None:
        """The first row of a query (or of a write's RETURNING)."""
        ...

    async def fetchall(self, sql: str, parameters: Sequence[Any] = ()) -> list[Row]:
        """Every row of a query (or of a write's RETURNING)."""
        ...

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> int:
        """Run a statement; the number of rows it changed."""
        ...

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement once per parameter row."""
        ...


class Database(Protocol):
    """A connection (or pool) the Store runs its SQL on.

    Writes (`execute`, `execute_returning`, `in_transaction`) are retried with backoff for the caller's
    `write_patience` while the engine refuses them for a reason that may pass, then raise
    StoreUnavailableError; `statements` and `write_faults` feed the metrics.
    """

    dialect: Dialect
    statements: int
    write_faults: int
    on_write_fault: list[Callable[[], None]]

    @property
    def is_open(self) -> bool:
        """Whether the database is usable (for /healthz)."""
        ...

    async def fetchone(self, sql: str, parameters: Sequence[Any] = ()) -> Row | None:
        """The first row of a read."""
        ...

    async def fetchall(self, sql: str, parameters: Sequence[Any] = ()) -> list[Row]:
        """Every row of a read."""
        ...

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> int:
        """Run one write statement (retried); the number of rows it changed."""
        ...

    async def execute_returning(self, sql: str, parameters: Sequence[Any] = ()) -> list[Row]:
        """Run one `… RETURNING` write (retried); the rows it returned."""
        ...

    def transaction(self) -> AbstractAsyncContextManager[Tx]:
        """One transaction (committed at the end, rolled back on any error); not retried."""
        ...

    async def in_transaction(self, body: Callable[[Tx], Awaitable[T]], *, lock: int | None = None) -> T:
        """Run `body` in one transaction, retried as a whole while the engine refuses it. With `lock`,
        transactions naming the same lock run one at a time, each seeing what the previous committed
        (PostgreSQL: an advisory lock, at READ COMMITTED; SQLite has one writer anyway)."""
        ...

    async def writable(self) -> bool:
        """Whether the database takes a write now (for /healthz), probed at most every PROBE_EVERY s."""
        ...

    async def schema_version(self) -> int:
        """The applied migration number."""
        ...

    async def close(self) -> None:
        """Close the connection(s)."""
        ...


class ProbeCache:
    """The /healthz answer: the last probe's result, kept for PROBE_EVERY seconds, and whether a real
    write failed since (which makes the database unwritable until the next probe succeeds)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._probed: tuple[float, bool] | None = None
        self.write_failed = False

    async def answer(self, probe: Callable[[], Awaitable[bool]]) -> bool:
        """The cached answer, or `probe()`'s when the cache is older than PROBE_EVERY."""
        now = self._clock()
        if self._probed is not None and now - self._probed[0] < PROBE_EVERY:
            return self._probed[1] and not self.write_failed
        ok = await probe()
        if ok:
            self.write_failed = False
        self._probed = (now, ok)
        return ok and not self.write_failed


class DatabaseAdapter(ABC):
    """What the SQLite and the PostgreSQL adapter share: the counters and hooks the metrics read, the
    /healthz probe and its cache, and the loop that retries a statement the engine refused.

    A subclass says which errors may pass (`_is_fault`), how to word one (`_fault_reason`) and how to
    probe a write (`_write_probe`), and implements the rest of `Database`.
    """

    dialect: Dialect

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._open = True
        self._clock = clock
        self._sleep = sleep
        self._probe_cache = ProbeCache(clock)
        self.statements = 0
        self.write_faults = 0
        """Writes the engine refused for a reason that may pass (each attempt counts)."""
        self.on_write_fault: list[Callable[[], None]] = []
        """Called after each such refusal (metrics, tests)."""

    def _count(self, _sql: str = "") -> None:
        """Count one statement (SQLite's trace callback passes its text, which is not needed)."""
        self.statements += 1

    @property
    def is_open(self) -> bool:
        """Whether the database is usable (for /healthz)."""
        return self._open

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
                await self._attempt(self._write_probe, record=False)
        except StoreUnavailableError:
            return False
        return True

    async def _attempt(self, operation: Callable[[float], Awaitable[T]], *, record: bool = True) -> T:
        """Run `operation(seconds left)`, retried with backoff while the engine refuses it for a reason
        that may pass, for the current `write_patience`; then StoreUnavailableError. With `record`, a
        refusal counts in `write_faults`, calls `on_write_fault` and marks the probe cache failed."""
        deadline = self._clock() + patience()
        delay = 0.05
        while True:
            try:
                result = await operation(max(0.0, deadline - self._clock()))
            except Exception as exc:
                if not self._is_fault(exc):
                    raise
                fault = exc
            else:
                if record:
                    self._probe_cache.write_failed = False
                return result
            if record:
                self._probe_cache.write_failed = True
                self.write_faults += 1
                for hook in self.on_write_fault:
                    hook()
            if self._clock() + delay > deadline:
                raise StoreUnavailableError(self._fault_reason(fault)) from fault
            await self._sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)

    @abstractmethod
    def _is_fault(self, exc: Exception) -> bool:
        """Whether `exc` is the engine refusing a statement for a reason that may pass."""

    @abstractmethod
    def _fault_reason(self, exc: Exception) -> str:
        """Why the database is unavailable, as StoreUnavailableError words it, after the fault `exc`."""

    @abstractmethod
    async def _write_probe(self, wait: float) -> None:
        """One committed transaction writing PROBE_BYTES and deleting them, starting within `wait` s."""


def redacted_url(url: str) -> str:
    """`url` with its password (if any) replaced by `***`, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


def database_target(url: str) -> Path | str:
    """Where DATABASE_URL points: a SQLite file's Path (`sqlite:///relative/path`,
    `sqlite:////absolute/path`) or a PostgreSQL URL (`postgresql://…`, `postgres://…`, kept as given).
    Raises ValueError saying what a valid URL looks like."""
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme == "sqlite":
        if not rest.startswith("/") or len(rest) < 2:
            raise ValueError(
                "a SQLite URL is sqlite:///relative/path or sqlite:////absolute/path (three slashes, then "
                "the path)"
            )
        return Path(rest[1:])
    if scheme in ("postgresql", "postgres"):
        parts = urlsplit(url)
        if not (parts.hostname or "host=" in parts.query) or not parts.path.strip("/"):
            raise ValueError(
                "a PostgreSQL URL names a host and a database: postgresql://user:password@host:5432/dbname "
                "(or postgresql:///dbname?host=/socket/dir)"
            )
        return url
    raise ValueError("DATABASE_URL must start with sqlite:/// or postgresql:// (postgres:// also works)")
