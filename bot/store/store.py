"""Store: Dreamboard's durable state; every SQL statement lives here, written once for SQLite and
PostgreSQL (bot/store/database.py is the interface both adapters provide)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any, Literal, TypeVar

from bot.domain.errors import CapReachedError
from bot.domain.kits import Kit, Pin
from bot.domain.votes import Tally, VoteRound
from bot.store.database import Database, Dialect, Row, Tx, database_target
from bot.store.errors import DuplicateRequestError
from bot.store.migrations import MIGRATIONS
from bot.store.model import (
    Hold,
    ImageState,
    Job,
    JobImage,
    JobState,
    Line,
    MessageKind,
    NewJob,
    PermutationSet,
    QuotaGate,
    SetVariant,
    SheetTile,
)
from bot.store.postgres import PostgresDatabase
from bot.store.sqlite import SqliteDatabase

T = TypeVar("T")

_COUNTED_IMAGE = (
    "(g.state IN ('queued', 'running') OR i.state = 'succeeded'"
    " OR i.generation_id IS NOT NULL OR i.submit_started_at IS NOT NULL)"
)
"""The images that count against quotas and in the usage report (paid, or being paid), as a condition
on `generation_images AS i JOIN generations AS g`."""
_BY_TIME = {"sqlite": "INDEXED BY generations_by_time", "postgres": ""}
"""The usage report reads a team's last days: a range of creation times (migration 9). Named on SQLite,
because without statistics it would rather walk a team's whole history in a (team_id, …) index;
PostgreSQL plans from its statistics."""
_CONTAINS = {"sqlite": "instr(lower(prompt), ?) > 0", "postgres": "strpos(lower(prompt), ?) > 0"}
"""A prompt contains the (lowercased) text."""

_UNFINISHED = "(state IN ('queued', 'running') OR (state = 'uploaded' AND card_ts IS NULL))"
"""Jobs with a step left (a card, for an uploaded one), as a condition on `generations`."""
_WAITING = "state = 'queued' AND claimed_at IS NULL"
"""Jobs in line that no replica has started yet (the ones MAX_QUEUED_PER_USER counts)."""
_CLAIMABLE = (
    f"{_UNFINISHED} AND (lease_expires_at IS NULL OR lease_expires_at < ?)"
    " AND (claimed_at IS NULL OR lease_owner IS NOT NULL)"
)
"""Jobs a replica may take to run at time `?`: unfinished and not held, and either still waiting in
line or left by a holder that stopped renewing (a job whose run ended normally, released with no
owner, is resumed only by a start-up: `reopen_released`)."""
_RUNNING_OF = (
    "SELECT COUNT(*) FROM generations AS r WHERE r.team_id = g.team_id AND r.user_id = g.user_id"
    " AND r.lease_owner IS NOT NULL AND r.claimed_at IS NOT NULL AND r.lease_expires_at >= ?"
)
"""The running jobs (held and claimed at time `?`) of the user of `generations AS g`."""
_SERVED_OF = (
    "SELECT COALESCE(MAX(s.claimed_at), 0) FROM generations AS s"
    " WHERE s.team_id = g.team_id AND s.user_id = g.user_id"
)
"""When a job of the user of `generations AS g` was last claimed (0: never)."""
_UNANCHORED_SET_OF = (
    "SELECT 1 FROM permutation_variants AS v JOIN permutation_sets AS p ON p.id = v.set_id"
    " WHERE v.job_id = g.id AND p.root_ts IS NULL"
)
"""The job `generations AS g` belongs to a permutation set whose status message is not posted (its
jobs wait for it; a start-up gives such a set up: bot/features/permutations.py)."""
_LINE_LOCK = 0x4C494E45
"""The lock the job line's transactions hold (claims, and storing jobs with the caps they count): on
PostgreSQL they run one at a time instead of aborting each other (Database.in_transaction)."""
_SKIP_LOCKED = {"sqlite": "", "postgres": "FOR UPDATE SKIP LOCKED"}
"""On PostgreSQL a claim passes over a row another transaction is writing (a job being finished or its
lease renewed) instead of waiting for it; claims themselves take turns under _LINE_LOCK. SQLite has one
writer at a time."""

_JOB_FIELDS = tuple(f.name for f in fields(Job))
_IMAGE_FIELDS = tuple(f.name for f in fields(JobImage))
_ROUND_FIELDS = tuple(f.name for f in fields(VoteRound))
_SET_FIELDS = tuple(f.name for f in fields(PermutationSet))


class VoteOpenError(Exception):
    """The thread already has an open vote (`round` is that vote)."""

    def __init__(self, round: VoteRound) -> None:
        super().__init__(round.id)
        self.round = round


class Store:
    """All SQL lives here, run on a Database (SQLite or PostgreSQL).

    Writes are retried by the database for the caller's `write_patience`, then raise
    StoreUnavailableError. Terminal job states are guarded in SQL: once a job is uploaded, failed or
    cancelled, no later write changes its state.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self._by_time = _BY_TIME[db.dialect]

    @classmethod
    async def open(
        cls,
        target: Path | str,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> Store:
        """Open the database at `target`, a SQLite file's path or a DATABASE_URL (`sqlite:///…`,
        `postgresql://…`), creating the schema as needed; raises StoreOpenError with the one message for
        the operator when it cannot be used. `clock` and `sleep` time the retries of refused writes and
        the /healthz probe (tests fake them)."""
        where = database_target(target) if isinstance(target, str) else target
        if isinstance(where, Path):
            return cls(await SqliteDatabase.open(where, MIGRATIONS, clock=clock, sleep=sleep))
        return cls(await PostgresDatabase.open(where, MIGRATIONS, clock=clock, sleep=sleep))

    @property
    def dialect(self) -> Dialect:
        """ "sqlite" or "postgres"."""
        return self.db.dialect

    @property
    def statements(self) -> int:
        """SQL statements run so far (metrics)."""
        return self.db.statements

    @property
    def write_faults(self) -> int:
        """Writes the database refused for a reason that may pass (each attempt counts)."""
        return self.db.write_faults

    @property
    def on_write_fault(self) -> list[Callable[[], None]]:
        """Called after each such refusal (metrics, tests)."""
        return self.db.on_write_fault

    @property
    def is_open(self) -> bool:
        """Whether the database is usable (for /healthz)."""
        return self.db.is_open

    async def close(self) -> None:
        """Close the database."""
        await self.db.close()

    async def writable(self) -> bool:
        """Whether the database takes a write now (for /healthz; probed at most every few seconds)."""
        return await self.db.writable()

    async def _in_transaction(self, body: Callable[[Tx], Awaitable[T]]) -> T:
        """One transaction around `body` (rolled back when anything fails), retried as a whole."""
        return await self.db.in_transaction(body)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        """One transaction (rolled back on any error), not retried."""
        async with self.db.transaction() as tx:
            yield tx

    async def _write(self, sql: str, parameters: Sequence[Any]) -> int:
        """Run one write statement (retried); the number of rows it changed."""
        return await self.db.execute(sql, parameters)

    async def _write_returning(self, sql: str, parameters: Sequence[Any]) -> Row | None:
        """Run one `… RETURNING *` write (retried); the row it returned, if any."""
        rows = await self._write_returning_all(sql, parameters)
        return rows[0] if rows else None

    async def _write_returning_all(self, sql: str, parameters: Sequence[Any]) -> list[Row]:
        return await self.db.execute_returning(sql, parameters)

    async def _one(self, sql: str, parameters: Sequence[Any]) -> Row | None:
        return await self.db.fetchone(sql, parameters)

    async def _all(self, sql: str, parameters: Sequence[Any]) -> list[Row]:
        return await self.db.fetchall(sql, parameters)

    async def schema_version(self) -> int:
        """The applied migration number."""
        return await self.db.schema_version()

    # -- dedupe ----------------------------------------------------------------------------------

    async def claim_event(self, key: str) -> bool:
        """Record that `key` was handled; False when it already was (a duplicate delivery)."""
        changed = await self._write(
            "INSERT INTO processed_events (key, created_at) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
            (key, time.time()),
        )
        return changed == 1

    async def claim_recent(self, key: str, window: float) -> bool:
        """Like claim_event, but the same key may be claimed again once `window` seconds have passed."""
        now = time.time()
        changed = await self._write(
            "INSERT INTO processed_events (key, created_at) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET created_at = excluded.created_at"
            " WHERE processed_events.created_at < ?",
            (key, now, now - window),
        )
        return changed == 1

    async def prune_events(self, older_than: float) -> None:
        """Forget dedupe keys older than `older_than` (Unix time)."""
        await self._write("DELETE FROM processed_events WHERE created_at < ?", (older_than,))

    # -- creating and reading jobs ---------------------------------------------------------------

    async def insert_job(
        self, job: NewJob, hold: Hold | None = None, quota: QuotaGate | None = None
    ) -> tuple[Job, list[JobImage]]:
        """Store a queued job and its images (seeds seed, seed+1, …) in one transaction, held by
        `hold`'s owner; raises DuplicateRequestError when a job for the same `request_key` exists,
        CapReachedError when the user already has `hold.max_waiting` jobs waiting (on any replica), and
        whatever `quota` raises when today's images are used up."""

        async def insert(db: Tx) -> tuple[Job, list[JobImage]]:
            if quota is not None:
                if job.request_key is not None and await db.fetchone(
                    "SELECT 1 FROM generations WHERE request_key = ?", (job.request_key,)
                ):
                    raise DuplicateRequestError(job.request_key)
                used = await _quota_usage(
                    db, job.team_id, job.user_id, job.channel_id, quota.since, quota.weight_4k
                )
                quota.admit(*used)
            await _check_room(db, job.team_id, job.user_id, hold, 1)
            return await _insert_job(db, job, hold)

        return await self.db.in_transaction(insert, lock=_LINE_LOCK)

    async def discard_unstarted(self, job_id: str) -> None:
        """Delete a job that never left `queued` and produced nothing (e.g. its channel refused us)."""
        await self._write("DELETE FROM generations WHERE id = ? AND state = 'queued'", (job_id,))

    async def get_job(self, job_id: str) -> Job | None:
        """One job by id."""
        row = await self._one("SELECT * FROM generations WHERE id = ?", (job_id,))
        return _job(row) if row else None

    async def images(self, job_id: str) -> list[JobImage]:
        """A job's images in order."""
        rows = await self._all("SELECT * FROM generation_images WHERE job_id = ? ORDER BY idx", (job_id,))
        return [_image(row) for row in rows]

    async def claim_next(self, owner: str, *, now: float, until: float, running_cap: int) -> Job | None:
        """Take the next job to run for `owner` until `until`, atomically (one replica gets each job):
        jobs a stopped holder left go first, then the waiting job of the user with the fewest running
        jobs (under `running_cap`), least recently served, oldest first. None: nothing to take."""
        sql = (
            "UPDATE generations SET lease_owner = ?, lease_expires_at = ?, claimed_at = ?"  # noqa: S608
            f" WHERE id = (SELECT g.id FROM generations AS g WHERE {_CLAIMABLE}"
            f" AND ({_RUNNING_OF}) < ? AND NOT EXISTS ({_UNANCHORED_SET_OF})"
            f" ORDER BY g.claimed_at IS NULL, ({_RUNNING_OF}), ({_SERVED_OF}), g.created_at, g.rowid"
            f" LIMIT 1 {_SKIP_LOCKED[self.dialect]})"
            f" AND {_CLAIMABLE} RETURNING *"
        )
        parameters = (owner, until, now, now, now, running_cap, now, now)
        row = await self.db.in_transaction(lambda db: db.fetchone(sql, parameters), lock=_LINE_LOCK)
        return _job(row) if row else None

    async def claim_held(
        self, job_id: str, owner: str, *, now: float, until: float, running_cap: int
    ) -> Job | None:
        """Start running a job `owner` holds (it announced it) when its user is under `running_cap`;
        None: the user is at the cap, or the job is no longer `owner`'s."""
        sql = (
            "UPDATE generations SET lease_expires_at = ?, claimed_at = ?"  # noqa: S608
            " WHERE id = (SELECT g.id FROM generations AS g WHERE g.id = ? AND g.lease_owner = ?"
            f" AND g.state = 'queued' AND ({_RUNNING_OF}) < ?) RETURNING *"
        )
        parameters = (until, now, job_id, owner, now, running_cap)
        row = await self.db.in_transaction(lambda db: db.fetchone(sql, parameters), lock=_LINE_LOCK)
        return _job(row) if row else None

    async def release(self, job_ids: Sequence[str], owner: str, *, at_once: bool = False) -> None:
        """Give up `owner`'s hold on jobs: a job announced but not started joins the line; one whose run
        ended is left to the next start-up if unfinished; `at_once` (a run interrupted by shutdown) lets
        any replica take it now."""
        if not job_ids:
            return
        marks = ", ".join("?" for _ in job_ids)
        if at_once:
            sql = f"UPDATE generations SET lease_expires_at = 0 WHERE lease_owner = ? AND id IN ({marks})"  # noqa: S608
        else:
            sql = (
                "UPDATE generations SET lease_owner = NULL, lease_expires_at = NULL"  # noqa: S608
                f" WHERE lease_owner = ? AND id IN ({marks})"
            )
        await self._write(sql, (owner, *job_ids))

    async def renew(self, job_ids: Sequence[str], owner: str, until: float) -> dict[str, bool]:
        """Extend `owner`'s hold on jobs to `until`: for each job still held, whether a cancel was asked
        for it elsewhere (a job missing from the answer is no longer `owner`'s)."""
        if not job_ids:
            return {}
        marks = ", ".join("?" for _ in job_ids)
        rows = await self._write_returning_all(
            f"UPDATE generations SET lease_expires_at = ? WHERE lease_owner = ? AND id IN ({marks})"  # noqa: S608
            " RETURNING id, cancel_requested_at",
            (until, owner, *job_ids),
        )
        return {row["id"]: row["cancel_requested_at"] is not None for row in rows}

    async def reopen_released(self, owner: str, *, everyone: bool = False) -> int:
        """At start-up: unfinished jobs whose run ended with no one to finish them, and those `owner`
        held in an earlier life (REPLICA_ID names one live replica), become takeable at once; with
        `everyone`, every held job too (one process per SQLite file: the holders are gone). How many."""
        held = "lease_owner IS NOT NULL" if everyone else "lease_owner = ?"
        return await self._write(
            "UPDATE generations SET lease_owner = ?, lease_expires_at = 0"  # noqa: S608
            f" WHERE {_UNFINISHED} AND ((claimed_at IS NOT NULL AND lease_owner IS NULL) OR {held})",
            (owner,) if everyone else (owner, owner),
        )

    async def line(self, now: float) -> Line:
        """The waiting jobs, running counts and last claims, for queue positions."""
        waiting = await self._all(
            f"SELECT id, team_id, user_id FROM generations WHERE {_WAITING} ORDER BY created_at, rowid",  # noqa: S608
            (),
        )
        running = await self._all(
            "SELECT team_id, user_id, COUNT(*) AS n FROM generations WHERE lease_owner IS NOT NULL"
            " AND claimed_at IS NOT NULL AND lease_expires_at >= ? GROUP BY team_id, user_id",
            (now,),
        )
        served = await self._all(
            "SELECT w.team_id, w.user_id, MAX(s.claimed_at) AS at FROM (SELECT DISTINCT team_id, user_id"  # noqa: S608
            f" FROM generations WHERE {_WAITING}) AS w JOIN generations AS s"
            " ON s.team_id = w.team_id AND s.user_id = w.user_id"
            " WHERE s.claimed_at IS NOT NULL GROUP BY w.team_id, w.user_id",
            (),
        )
        return Line(
            waiting=[(row["id"], row["team_id"], row["user_id"]) for row in waiting],
            running={(row["team_id"], row["user_id"]): int(row["n"]) for row in running},
            served={(row["team_id"], row["user_id"]): float(row["at"]) for row in served},
        )

    async def holder(self, job_id: str, now: float) -> str | None:
        """The replica holding a job at time `now` (None: nobody)."""
        row = await self._one(
            "SELECT lease_owner FROM generations WHERE id = ? AND lease_expires_at >= ?", (job_id, now)
        )
        return row["lease_owner"] if row else None

    async def request_cancel(self, job_id: str) -> bool:
        """Ask the replica holding an unfinished job to cancel it; False when the job has ended."""
        changed = await self._write(
            f"UPDATE generations SET cancel_requested_at = ? WHERE id = ? AND {_UNFINISHED}",  # noqa: S608
            (time.time(), job_id),
        )
        return changed > 0

    async def generation_ids_in_use(self, generation_ids: Sequence[str]) -> set[str]:
        """Which of these backend generation ids some stored image already holds."""
        if not generation_ids:
            return set()
        marks = ",".join("?" * len(generation_ids))
        rows = await self._all(
            f"SELECT generation_id FROM generation_images WHERE generation_id IN ({marks})",  # noqa: S608
            generation_ids,
        )
        return {str(row[0]) for row in rows}

    async def thread_jobs(self, channel_id: str, thread_ts: str, limit: int = 50) -> list[Job]:
        """Jobs that live in a thread, newest first (empty: not a Dreamboard thread)."""
        rows = await self._all(
            "SELECT * FROM generations WHERE channel_id = ? AND thread_ts = ?"
            " ORDER BY created_at DESC, rowid DESC LIMIT ?",
            (channel_id, thread_ts, limit),
        )
        return [_job(row) for row in rows]

    async def history(
        self, team_id: str, user_id: str, *, limit: int = 10, offset: int = 0, text: str = ""
    ) -> list[Job]:
        """A user's jobs, newest first, without deleted results; `text` filters prompts (case-insensitive)."""
        query = "SELECT * FROM generations WHERE team_id = ? AND user_id = ? AND deleted_at IS NULL"
        parameters: list[Any] = [team_id, user_id]
        if text:
            query += f" AND {_CONTAINS[self.db.dialect]}"
            parameters.append(text.lower())
        query += " ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?"
        return [_job(row) for row in await self._all(query, (*parameters, limit, offset))]

    async def jobs_since(self, team_id: str, user_id: str, since: float) -> int:
        """How many jobs a user started since `since` (Unix time)."""
        row = await self._one(
            "SELECT COUNT(*) FROM generations WHERE team_id = ? AND user_id = ? AND created_at >= ?",
            (team_id, user_id, since),
        )
        return int(row[0]) if row else 0

    async def images_since(self, team_id: str, user_id: str, since: float) -> int:
        """How many images a user's jobs started since `since` (Unix time) have made."""
        row = await self._one(
            "SELECT COUNT(*) FROM generation_images AS i JOIN generations AS g ON g.id = i.job_id"
            " WHERE g.team_id = ? AND g.user_id = ? AND g.created_at >= ? AND i.state = 'succeeded'",
            (team_id, user_id, since),
        )
        return int(row[0]) if row else 0

    async def quota_usage(
        self, team_id: str, user_id: str, channel_id: str, since: float, *, weight_4k: int
    ) -> tuple[int, int]:
        """Weighted images (a 4K image counts `weight_4k`) of the user's and of the channel's jobs
        created since `since`: those paid or being paid, i.e. every image of a queued or running job,
        and any image that was submitted to Oxen (even if it then failed) or succeeded. Images of jobs
        that failed or were cancelled before submitting them do not count."""
        return await _quota_usage(self.db, team_id, user_id, channel_id, since, weight_4k)

    async def images_of(self, job_ids: Sequence[str]) -> dict[str, list[JobImage]]:
        """The images of several jobs at once, by job id."""
        found: dict[str, list[JobImage]] = {job_id: [] for job_id in job_ids}
        if not job_ids:
            return found
        marks = ",".join("?" * len(job_ids))
        for row in await self._all(
            f"SELECT * FROM generation_images WHERE job_id IN ({marks}) ORDER BY job_id, idx",  # noqa: S608
            job_ids,
        ):
            found[row["job_id"]].append(_image(row))
        return found

    async def toggle_favourite(self, team_id: str, user_id: str, job_id: str) -> bool:
        """Add the job to the user's favourites, or remove it; True when it is now a favourite."""

        async def toggle(db: Tx) -> bool:
            changed = await db.execute(
                "DELETE FROM favourites WHERE team_id = ? AND user_id = ? AND job_id = ?",
                (team_id, user_id, job_id),
            )
            if changed:
                return False
            await db.execute(
                "INSERT INTO favourites (team_id, user_id, job_id, created_at) VALUES (?, ?, ?, ?)",
                (team_id, user_id, job_id, time.time()),
            )
            return True

        return await self._in_transaction(toggle)

    async def favourites(self, team_id: str, user_id: str, limit: int = 5) -> list[Job]:
        """A user's favourite jobs, most recently starred first (deleted results left out)."""
        rows = await self._all(
            "SELECT g.* FROM favourites f JOIN generations g ON g.id = f.job_id"
            " WHERE f.team_id = ? AND f.user_id = ? AND g.deleted_at IS NULL"
            " ORDER BY f.created_at DESC LIMIT ?",
            (team_id, user_id, limit),
        )
        return [_job(row) for row in rows]

    # -- the bot's messages ----------------------------------------------------------------------

    async def add_message(
        self, channel_id: str, ts: str, job_id: str, kind: MessageKind, *, thread_ts: str | None
    ) -> None:
        """Remember another of the bot's messages about a job (a reposted card), for reactions on it."""
        await self._write(
            "INSERT INTO job_messages (channel_id, ts, job_id, kind, thread_ts) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (channel_id, ts) DO UPDATE SET job_id = excluded.job_id, kind = excluded.kind,"
            " thread_ts = excluded.thread_ts",
            (channel_id, ts, job_id, kind, thread_ts),
        )

    async def job_for_message(self, channel_id: str, ts: str) -> tuple[Job, MessageKind, str | None] | None:
        """The job one of the bot's messages belongs to, that message's kind and its thread."""
        row = await self._one(
            "SELECT *, CASE ? WHEN status_ts THEN 'status' WHEN card_ts THEN 'card' ELSE 'upload' END"
            " AS message_kind FROM generations"
            " WHERE channel_id = ? AND ? IN (status_ts, card_ts, upload_ts) LIMIT 1",
            (ts, channel_id, ts),
        )
        if row is not None:
            job = _job(row)
            return job, MessageKind(row["message_kind"]), job.thread_ts
        row = await self._one(
            "SELECT g.*, m.kind AS message_kind, m.thread_ts AS message_thread FROM job_messages m"
            " JOIN generations g ON g.id = m.job_id WHERE m.channel_id = ? AND m.ts = ?",
            (channel_id, ts),
        )
        if row is None:
            return None
        return _job(row), MessageKind(row["message_kind"]), row["message_thread"]

    async def mark_deleted(self, job_id: str, user_id: str) -> Job | None:
        """Record that a result was deleted (the row stays, for the audit trail)."""
        row = await self._write_returning(
            "UPDATE generations SET deleted_at = ?, deleted_by = ? WHERE id = ? RETURNING *",
            (time.time(), user_id, job_id),
        )
        return _job(row) if row else None

    # -- the step log ----------------------------------------------------------------------------

    async def set_status_ts(self, job_id: str, ts: str) -> Job | None:
        """Remember the status message; a job without a thread is anchored on it."""
        row = await self._write_returning(
            "UPDATE generations SET status_ts = ?, thread_ts = COALESCE(thread_ts, ?)"
            " WHERE id = ? RETURNING *",
            (ts, ts, job_id),
        )
        return _job(row) if row else None

    async def mark_running(self, job_id: str, notes: Sequence[str]) -> Job | None:
        """queued → running, with the notes about flags the model's schema could not honour; None when
        the job already ended (cancelled meanwhile)."""
        row = await self._write_returning(
            "UPDATE generations SET state = 'running', notes = ?, started_at = COALESCE(started_at, ?)"
            " WHERE id = ? AND state IN ('queued', 'running') RETURNING *",
            (json.dumps(list(notes)), time.time(), job_id),
        )
        return _job(row) if row else None

    async def mark_submitting(self, job_id: str, idx: int) -> float:
        """The durable marker before a submission: from now on a restart asks the backend whether the
        generation exists before submitting again. Returns the marker's time."""
        now = time.time()
        await self._write(
            "UPDATE generation_images SET submit_started_at = COALESCE(submit_started_at, ?)"
            " WHERE job_id = ? AND idx = ?",
            (now, job_id, idx),
        )
        return now

    async def set_generation_id(self, job_id: str, idx: int, generation_id: str) -> None:
        """Record a backend generation id: from now on the image is polled, never re-submitted."""
        await self._write(
            "UPDATE generation_images SET generation_id = ?, state = 'submitted'"
            " WHERE job_id = ? AND idx = ?",
            (generation_id, job_id, idx),
        )

    async def set_image_outcome(
        self, job_id: str, idx: int, *, error: str | None, result_url: str | None = None
    ) -> None:
        """Mark an image succeeded (with the result URL, remembered for reuse as a reference) or failed."""
        state = ImageState.FAILED if error else ImageState.SUCCEEDED
        await self._write(
            "UPDATE generation_images SET state = ?, error = ?, result_url = ?, result_url_at = ?"
            " WHERE job_id = ? AND idx = ?",
            (state, error, result_url, time.time() if result_url else None, job_id, idx),
        )

    async def set_reference(self, job_id: str, idx: int, key: str, mimetype: str) -> None:
        """Record where an image's bytes are kept as a reference (the cache's content key)."""
        await self._write(
            "UPDATE generation_images SET reference_key = ?, reference_mimetype = ?"
            " WHERE job_id = ? AND idx = ?",
            (key, mimetype, job_id, idx),
        )

    async def set_file_ids(self, job_id: str, file_ids: dict[int, str | None]) -> None:
        """Record (None: forget) the Slack file ids of a job's images, before completing the upload."""
        cases = " ".join("WHEN ? THEN ?" for _ in file_ids)
        parameters = [value for idx, file_id in file_ids.items() for value in (idx, file_id)]
        marks = ",".join("?" * len(file_ids))
        await self._write(
            f"UPDATE generation_images SET file_id = CASE idx {cases} END"  # noqa: S608
            f" WHERE job_id = ? AND idx IN ({marks})",
            (*parameters, job_id, *file_ids),
        )

    async def mark_uploaded(self, job_id: str, *, upload_ts: str | None) -> Job | None:
        """running → uploaded (the status message is then rewritten into the result card, which a
        restart repeats until card_ts is stored); an upload ts already learned is kept. None when the job
        was no longer running."""
        row = await self._write_returning(
            "UPDATE generations SET state = 'uploaded', error = NULL, finished_at = ?,"
            " upload_ts = COALESCE(upload_ts, ?) WHERE id = ? AND state = 'running' RETURNING *",
            (time.time(), upload_ts, job_id),
        )
        return _job(row) if row else None

    async def set_upload_ts(self, job_id: str, ts: str) -> None:
        """Remember the upload message (reactions on the image act on the job); the first ts learned wins."""
        await self._write(
            "UPDATE generations SET upload_ts = COALESCE(upload_ts, ?) WHERE id = ?", (ts, job_id)
        )

    async def set_upload_ts_for_files(self, channel_id: str, file_ids: Sequence[str], ts: str) -> list[str]:
        """Record `ts` as the upload message of the jobs in `channel_id` holding any of these files (the
        bot's own file_share event names only files); the ids of the jobs it was recorded on."""
        if not file_ids:
            return []
        marks = ",".join("?" * len(file_ids))
        rows = await self._write_returning_all(
            "UPDATE generations SET upload_ts = ? WHERE channel_id = ? AND upload_ts IS NULL AND id IN"  # noqa: S608
            f" (SELECT job_id FROM generation_images WHERE file_id IN ({marks})) RETURNING id",
            (ts, channel_id, *file_ids),
        )
        return [str(row[0]) for row in rows]

    async def other_messages(self, job_id: str) -> list[tuple[str, str]]:
        """(channel, ts) of the job's reposted cards (`/imagine show`); the rows migration 3 copied from
        the job's own status and card messages are left out."""
        rows = await self._all(
            "SELECT m.channel_id, m.ts FROM job_messages m JOIN generations g ON g.id = m.job_id"
            " WHERE m.job_id = ? AND m.kind = 'card'"
            " AND m.ts NOT IN (COALESCE(g.status_ts, ''), COALESCE(g.card_ts, ''))",
            (job_id,),
        )
        return [(str(row[0]), str(row[1])) for row in rows]

    async def finish(self, job_id: str, state: JobState, *, error: str | None = None) -> Job | None:
        """queued/running → failed or cancelled; None (and nothing written) when the job already ended."""
        assert state in (JobState.FAILED, JobState.CANCELLED)
        row = await self._write_returning(
            "UPDATE generations SET state = ?, error = ?, finished_at = ?"
            " WHERE id = ? AND state IN ('queued', 'running') RETURNING *",
            (state, error, time.time(), job_id),
        )
        return _job(row) if row else None

    async def set_card_ts(self, job_id: str, ts: str) -> Job | None:
        """Remember the result card message."""
        row = await self._write_returning(
            "UPDATE generations SET card_ts = ? WHERE id = ? RETURNING *", (ts, job_id)
        )
        return _job(row) if row else None

    # -- usage --

    async def usage_tallies(
        self,
        team_id: str,
        column: Literal["user_id", "channel_id"],
        *,
        today: float,
        since: float,
        user_id: str | None = None,
    ) -> list[tuple[str, int, int]]:
        """Counted images (_COUNTED_IMAGE, one each) per user or channel of jobs created since `since`:
        (key, images since `today`, images since `since`). Only `user_id`'s jobs when given."""
        assert column in ("user_id", "channel_id")
        mine = " AND g.user_id = ?" if user_id is not None else ""
        rows = await self._all(
            f"SELECT g.{column}, SUM(CASE WHEN g.created_at >= ? THEN 1 ELSE 0 END), COUNT(*)"  # noqa: S608
            f" FROM generation_images AS i JOIN generations AS g {self._by_time} ON g.id = i.job_id"
            f" WHERE g.team_id = ? AND g.created_at >= ?{mine} AND {_COUNTED_IMAGE} GROUP BY g.{column}",
            (today, team_id, since, *([user_id] if user_id is not None else [])),
        )
        return [(str(row[0]), int(row[1]), int(row[2])) for row in rows]

    async def usage_per_day(
        self, team_id: str, starts: Sequence[float], end: float, *, user_id: str | None = None
    ) -> dict[float, int]:
        """Counted images of jobs created on each day: `starts` are the days' starts in order, the last
        day ends at `end`. Days without images are left out. Only `user_id`'s jobs when given."""
        if not starts:
            return {}
        bounds = list(zip(starts, [*starts[1:], end], strict=True))
        values = ", ".join("(?, ?)" for _ in bounds)
        mine = " AND g.user_id = ?" if user_id is not None else ""
        rows = await self._all(
            f"WITH days (start, stop) AS (VALUES {values})"  # noqa: S608
            f" SELECT d.start, COUNT(*) FROM days AS d JOIN generations AS g {self._by_time}"
            " ON g.team_id = ? AND g.created_at >= d.start AND g.created_at < d.stop"
            f" JOIN generation_images AS i ON i.job_id = g.id WHERE {_COUNTED_IMAGE}{mine} GROUP BY d.start",
            (*(v for bound in bounds for v in bound), team_id, *([user_id] if user_id is not None else [])),
        )
        return {float(row[0]): int(row[1]) for row in rows}

    async def image_outcomes(
        self, team_id: str, since: float, *, user_id: str | None = None
    ) -> tuple[int, int]:
        """(finished, failed) counted images of jobs created since `since` that ended uploaded or failed;
        an image failed unless its job was uploaded and it succeeded (domain/usage_stats.py)."""
        mine = " AND g.user_id = ?" if user_id is not None else ""
        row = await self._one(
            "SELECT COUNT(*),"  # noqa: S608
            " COALESCE(SUM(CASE WHEN g.state = 'uploaded' AND i.state = 'succeeded' THEN 0 ELSE 1 END), 0)"
            f" FROM generation_images AS i JOIN generations AS g {self._by_time} ON g.id = i.job_id"
            f" WHERE g.team_id = ? AND g.created_at >= ? AND g.state IN ('uploaded', 'failed')"
            f" AND {_COUNTED_IMAGE}{mine}",
            (team_id, since, *([user_id] if user_id is not None else [])),
        )
        return (int(row[0]), int(row[1])) if row else (0, 0)

    async def delivery_seconds(
        self, team_id: str, since: float, *, user_id: str | None = None
    ) -> list[float]:
        """Seconds from `created_at` to `finished_at` of the uploaded jobs created since `since`, in
        order (one number per job: the percentiles need them all)."""
        mine = " AND user_id = ?" if user_id is not None else ""
        rows = await self._all(
            f"SELECT finished_at - created_at FROM generations {self._by_time}"  # noqa: S608
            " WHERE team_id = ? AND created_at >= ? AND state = 'uploaded' AND finished_at IS NOT NULL"
            f"{mine} ORDER BY 1",
            (team_id, since, *([user_id] if user_id is not None else [])),
        )
        return [float(row[0]) for row in rows]

    # -- kits ------------------------------------------------------------------------------------

    async def kit(self, channel_id: str) -> Kit:
        """The channel's kit (the empty kit when none was set), pins in the order they were pinned."""
        row = await self._one("SELECT * FROM channel_kits WHERE channel_id = ?", (channel_id,))
        pins = await self._all(
            "SELECT message_ts, source, ready_at FROM kit_pins WHERE channel_id = ?"
            " ORDER BY pinned_at, rowid",
            (channel_id,),
        )
        found = tuple(Pin(row["message_ts"], json.loads(row["source"]), row["ready_at"]) for row in pins)
        if row is None:
            return Kit(pins=found)
        return Kit(row["aspect_ratio"], row["size"], row["style"], found, row["updated_by"])

    async def save_kit(self, channel_id: str, kit: Kit, *, user_id: str) -> None:
        """Store the channel's flags and style (its pins are kept by add_pin and drop_pin)."""
        await self._write(
            "INSERT INTO channel_kits (channel_id, aspect_ratio, size, style, updated_by, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (channel_id) DO UPDATE SET"
            " aspect_ratio = excluded.aspect_ratio, size = excluded.size, style = excluded.style,"
            " updated_by = excluded.updated_by, updated_at = excluded.updated_at",
            (channel_id, kit.aspect_ratio, kit.size, kit.style, user_id, time.time()),
        )

    async def clear_kit(self, channel_id: str, *, user_id: str) -> None:
        """Remove the channel's flags, style and pins (who cleared it is kept)."""

        async def clear(db: Tx) -> None:
            await db.execute("DELETE FROM kit_pins WHERE channel_id = ?", (channel_id,))
            await db.execute(
                "INSERT INTO channel_kits (channel_id, updated_by, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (channel_id) DO UPDATE SET aspect_ratio = NULL, size = NULL, style = NULL,"
                " updated_by = excluded.updated_by, updated_at = excluded.updated_at",
                (channel_id, user_id, time.time()),
            )

        await self._in_transaction(clear)

    async def record_pin_reaction(
        self, channel_id: str, message_ts: str, user_id: str, *, active: bool, event_ts: float
    ) -> bool:
        """Record a person's :pushpin: added (`active`) or removed; False when the event changes nothing:
        a repeated delivery, one older than the last applied, or the state the reaction already has."""

        async def record(db: Tx) -> bool:
            row = await db.fetchone(
                "SELECT active, event_ts FROM kit_pin_reactions"
                " WHERE channel_id = ? AND message_ts = ? AND user_id = ?",
                (channel_id, message_ts, user_id),
            )
            if row is not None and row["event_ts"] >= event_ts:
                return False
            await db.execute(
                "INSERT INTO kit_pin_reactions (channel_id, message_ts, user_id, active, event_ts)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (channel_id, message_ts, user_id) DO UPDATE SET"
                " active = excluded.active, event_ts = excluded.event_ts",
                (channel_id, message_ts, user_id, int(active), event_ts),
            )
            before = bool(row["active"]) if row is not None else False
            return before != active

        return await self._in_transaction(record)

    async def add_pin(
        self, channel_id: str, message_ts: str, source: dict[str, Any], *, ready_at: float, limit: int
    ) -> bool | None:
        """Pin a reference from a message: True when pinned now, False when it already was, None when the
        channel already holds `limit` pins (nothing written)."""

        async def add(db: Tx) -> bool | None:
            rows = await db.fetchall("SELECT message_ts FROM kit_pins WHERE channel_id = ?", (channel_id,))
            pinned = [row["message_ts"] for row in rows]
            if message_ts in pinned:
                return False
            if len(pinned) >= limit:
                return None
            await db.execute(
                "INSERT INTO kit_pins (channel_id, message_ts, source, ready_at, pinned_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (channel_id, message_ts, json.dumps(source), ready_at, time.time()),
            )
            return True

        return await self._in_transaction(add)

    async def drop_pin(self, channel_id: str, message_ts: str) -> bool:
        """Unpin a message's reference unless someone's :pushpin: still holds it; whether it was dropped."""
        changed = await self._write(
            "DELETE FROM kit_pins WHERE channel_id = ? AND message_ts = ? AND NOT EXISTS ("
            " SELECT 1 FROM kit_pin_reactions r WHERE r.channel_id = kit_pins.channel_id"
            " AND r.message_ts = kit_pins.message_ts AND r.active = 1)",
            (channel_id, message_ts),
        )
        return changed == 1

    async def unpin(self, channel_id: str, message_ts: str) -> bool:
        """Unpin a message's reference whatever holds it; whether it was pinned."""
        changed = await self._write(
            "DELETE FROM kit_pins WHERE channel_id = ? AND message_ts = ?", (channel_id, message_ts)
        )
        return changed == 1

    async def is_pinned(self, channel_id: str, message_ts: str) -> bool:
        """Whether a message's reference is pinned to the channel's kit."""
        row = await self._one(
            "SELECT 1 FROM kit_pins WHERE channel_id = ? AND message_ts = ?", (channel_id, message_ts)
        )
        return row is not None

    # -- votes --

    async def record_vote_reaction(
        self,
        *,
        channel_id: str,
        message_ts: str,
        user_id: str,
        reaction: str,
        job_id: str,
        idx: int,
        present: bool,
        event_ts: str,
    ) -> None:
        """Record what a reaction event says about one voting reaction, unless a newer event for it was
        recorded already (so a redelivery, however late, changes nothing)."""
        await self._write(
            "INSERT INTO vote_reactions (channel_id, message_ts, user_id, reaction, job_id, idx, present,"
            " event_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (channel_id, message_ts, user_id, reaction)"
            " DO UPDATE SET present = excluded.present, event_ts = excluded.event_ts"
            " WHERE excluded.event_ts > vote_reactions.event_ts",
            (channel_id, message_ts, user_id, reaction, job_id, idx, int(present), event_ts),
        )

    async def image_tallies(self, team_id: str, channel_id: str, since: float) -> list[Tally]:
        """Votes per image of the channel's results made since `since` (deleted results left out)."""
        return await self._tallies(
            "g.team_id = ? AND g.channel_id = ? AND g.created_at >= ?", (team_id, channel_id, since)
        )

    async def thread_tallies(self, channel_id: str, thread_ts: str) -> list[Tally]:
        """Votes per image of a thread's results (deleted results left out)."""
        return await self._tallies("g.channel_id = ? AND g.thread_ts = ?", (channel_id, thread_ts))

    async def _tallies(self, where: str, parameters: Sequence[Any]) -> list[Tally]:
        rows = await self._all(
            "SELECT r.job_id, r.idx, COUNT(DISTINCT r.user_id) AS votes, MIN(g.created_at)"  # noqa: S608
            " FROM vote_reactions r JOIN generations g ON g.id = r.job_id"
            " JOIN generation_images i ON i.job_id = r.job_id AND i.idx = r.idx"
            " WHERE r.present = 1 AND g.deleted_at IS NULL AND g.state = 'uploaded'"
            f" AND i.state = 'succeeded' AND i.file_id IS NOT NULL AND {where}"
            " GROUP BY r.job_id, r.idx",
            parameters,
        )
        return [Tally(str(row[0]), int(row[1]), int(row[2]), float(row[3])) for row in rows]

    async def latest_thread(self, channel_id: str) -> str | None:
        """The root of the channel's most recent Dreamboard thread (by its newest job), if any."""
        row = await self._one(
            "SELECT thread_ts FROM generations WHERE channel_id = ? AND thread_ts IS NOT NULL"
            " ORDER BY created_at DESC, rowid DESC LIMIT 1",
            (channel_id,),
        )
        return str(row[0]) if row else None

    async def open_vote_round(
        self,
        *,
        team_id: str,
        channel_id: str,
        thread_ts: str,
        opened_by: str,
        request_key: str,
        deadline: float,
        now: float,
    ) -> VoteRound:
        """Store an open vote on a thread; raises VoteOpenError when the thread has one open already,
        DuplicateRequestError when this Slack request opened one before."""

        async def insert(db: Tx) -> VoteRound:
            if (
                await db.fetchone("SELECT 1 FROM vote_rounds WHERE request_key = ?", (request_key,))
                is not None
            ):
                raise DuplicateRequestError(request_key)
            existing = await db.fetchone(
                "SELECT * FROM vote_rounds WHERE channel_id = ? AND thread_ts = ? AND closed_at IS NULL",
                (channel_id, thread_ts),
            )
            if existing is not None:
                raise VoteOpenError(_round(existing))
            row = await db.fetchone(
                "INSERT INTO vote_rounds (team_id, channel_id, thread_ts, opened_by, request_key, opened_at,"
                " deadline) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING *",
                (team_id, channel_id, thread_ts, opened_by, request_key, now, deadline),
            )
            assert row is not None
            return _round(row)

        return await self._in_transaction(insert)

    async def discard_vote_round(self, round_id: int) -> None:
        """Forget a vote that was never announced (Slack refused the announcement)."""
        await self._write("DELETE FROM vote_rounds WHERE id = ? AND announce_ts IS NULL", (round_id,))

    async def set_vote_announcement(self, round_id: int, ts: str) -> None:
        """Remember the message that announced a vote."""
        await self._write("UPDATE vote_rounds SET announce_ts = ? WHERE id = ?", (ts, round_id))

    async def next_vote_deadline(self) -> float | None:
        """The earliest deadline of the open votes, if any."""
        row = await self._one("SELECT MIN(deadline) FROM vote_rounds WHERE closed_at IS NULL", ())
        return float(row[0]) if row and row[0] is not None else None

    async def due_vote_rounds(self, now: float) -> list[VoteRound]:
        """Open votes whose deadline is at or before `now`, earliest first."""
        rows = await self._all(
            "SELECT * FROM vote_rounds WHERE closed_at IS NULL AND deadline <= ? ORDER BY deadline, id",
            (now,),
        )
        return [_round(row) for row in rows]

    async def close_vote_round(self, round_id: int, now: float) -> VoteRound | None:
        """Record that a vote closed (before its winner is posted); None when it was closed already."""
        row = await self._write_returning(
            "UPDATE vote_rounds SET closed_at = ? WHERE id = ? AND closed_at IS NULL RETURNING *",
            (now, round_id),
        )
        return _round(row) if row else None

    async def unposted_vote_rounds(self) -> list[VoteRound]:
        """Closed votes whose winner message is not recorded (the post may or may not exist)."""
        rows = await self._all(
            "SELECT * FROM vote_rounds WHERE closed_at IS NOT NULL AND result_ts IS NULL ORDER BY closed_at",
            (),
        )
        return [_round(row) for row in rows]

    async def set_vote_result(self, round_id: int, ts: str) -> None:
        """Remember the message that announced a vote's winner."""
        await self._write("UPDATE vote_rounds SET result_ts = ? WHERE id = ?", (ts, round_id))

    # -- permutation sets --

    async def insert_permutation_set(
        self,
        new_set: PermutationSet,
        labels: Sequence[str],
        jobs: Sequence[NewJob],
        hold: Hold | None = None,
        quota: QuotaGate | None = None,
    ) -> list[tuple[Job, list[JobImage]]]:
        """Store a set, its variants (`labels[i]` is variant i + 1, made by `jobs[i]`) and their queued
        jobs (held as `insert_job` holds one) in one transaction; raises DuplicateRequestError when the
        set's request_key is stored, CapReachedError when not all its jobs fit in the user's line, and
        whatever `quota` raises (checked first, as `insert_job` checks it)."""

        async def insert(db: Tx) -> list[tuple[Job, list[JobImage]]]:
            if quota is not None:
                if await db.fetchone(
                    "SELECT 1 FROM permutation_sets WHERE request_key = ?", (new_set.request_key,)
                ):
                    raise DuplicateRequestError(new_set.request_key)
                used = await _quota_usage(
                    db, new_set.team_id, new_set.user_id, new_set.channel_id, quota.since, quota.weight_4k
                )
                quota.admit(*used)
            await _check_room(db, new_set.team_id, new_set.user_id, hold, len(jobs))
            changed = await db.execute(
                "INSERT INTO permutation_sets (id, team_id, channel_id, user_id, template, request_key,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (request_key) DO NOTHING",
                (
                    new_set.id, new_set.team_id, new_set.channel_id, new_set.user_id, new_set.template,
                    new_set.request_key, new_set.created_at,
                ),
            )  # fmt: skip
            if changed != 1:
                raise DuplicateRequestError(new_set.request_key)
            stored = [await _insert_job(db, job, hold) for job in jobs]
            await db.executemany(
                "INSERT INTO permutation_variants (set_id, number, label, job_id) VALUES (?, ?, ?, ?)",
                [(new_set.id, number, label, job.id) for number, (label, job) in
                 enumerate(zip(labels, jobs, strict=True), start=1)],
            )  # fmt: skip
            return stored

        return await self.db.in_transaction(insert, lock=_LINE_LOCK)

    async def permutation_set(self, set_id: str) -> PermutationSet | None:
        """One set by id."""
        row = await self._one("SELECT * FROM permutation_sets WHERE id = ?", (set_id,))
        return _permutation_set(row) if row else None

    async def permutation_set_for_message(self, channel_id: str, ts: str) -> PermutationSet | None:
        """The set whose contact sheet (or status message) is the message `ts` in `channel_id`."""
        row = await self._one(
            "SELECT * FROM permutation_sets WHERE channel_id = ? AND ? IN (sheet_ts, root_ts)",
            (channel_id, ts),
        )
        return _permutation_set(row) if row else None

    async def open_permutation_sets(self) -> list[PermutationSet]:
        """Sets whose contact sheet is not posted yet (and that were not abandoned), oldest first."""
        rows = await self._all(
            "SELECT * FROM permutation_sets WHERE sheet_posted_at IS NULL AND abandoned_at IS NULL"
            " ORDER BY created_at",
            (),
        )
        return [_permutation_set(row) for row in rows]

    async def set_variants(self, set_id: str) -> list[SetVariant]:
        """A set's variants in order."""
        rows = await self._all(
            "SELECT * FROM permutation_variants WHERE set_id = ? ORDER BY number", (set_id,)
        )
        return [SetVariant(str(r["set_id"]), int(r["number"]), str(r["label"]), r["job_id"]) for r in rows]

    async def set_permutation_root(self, set_id: str, ts: str) -> list[Job]:
        """Record the set's status message and make it the thread of its jobs not announced yet; the
        set's jobs, in variant order."""

        async def anchor(db: Tx) -> list[Job]:
            await db.execute("UPDATE permutation_sets SET root_ts = ? WHERE id = ?", (ts, set_id))
            await db.execute(
                "UPDATE generations SET thread_ts = ? WHERE status_ts IS NULL AND id IN"
                " (SELECT job_id FROM permutation_variants WHERE set_id = ?)",
                (ts, set_id),
            )
            rows = await db.fetchall(
                "SELECT g.* FROM permutation_variants v JOIN generations g ON g.id = v.job_id"
                " WHERE v.set_id = ? ORDER BY v.number",
                (set_id,),
            )
            return [_job(row) for row in rows]

        return await self._in_transaction(anchor)

    async def abandon_permutation_set(self, set_id: str) -> None:
        """Give up a set that never got its status message: its jobs, never announced, are deleted."""

        async def abandon(db: Tx) -> None:
            await db.execute(
                "DELETE FROM generations WHERE state = 'queued' AND status_ts IS NULL AND id IN"
                " (SELECT job_id FROM permutation_variants WHERE set_id = ?)",
                (set_id,),
            )
            await db.execute(
                "UPDATE permutation_sets SET abandoned_at = COALESCE(abandoned_at, ?) WHERE id = ?",
                (time.time(), set_id),
            )

        await self._in_transaction(abandon)

    async def set_sheet_file(self, set_id: str, file_id: str | None, tiles: Sequence[SheetTile]) -> None:
        """Record the sheet's reserved Slack file and its tiles (before completing the upload), or
        forget them (None) when the file was never shared and must be made again."""

        async def record(db: Tx) -> None:
            await db.execute("UPDATE permutation_sets SET sheet_file_id = ? WHERE id = ?", (file_id, set_id))
            await db.execute("DELETE FROM permutation_tiles WHERE set_id = ?", (set_id,))
            await db.executemany(
                "INSERT INTO permutation_tiles (set_id, tile, number, job_id, image_idx, label)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(set_id, t.tile, t.number, t.job_id, t.image_idx, t.label) for t in tiles],
            )

        await self._in_transaction(record)

    async def sheet_tiles(self, set_id: str) -> list[SheetTile]:
        """The tiles of a set's contact sheet, in order."""
        rows = await self._all("SELECT * FROM permutation_tiles WHERE set_id = ? ORDER BY tile", (set_id,))
        return [
            SheetTile(str(r["set_id"]), int(r["tile"]), int(r["number"]), r["job_id"], r["image_idx"],
                      str(r["label"]))
            for r in rows
        ]  # fmt: skip

    async def mark_sheet_posted(self, set_id: str, ts: str | None) -> bool:
        """Record that the sheet's upload was completed (and its message ts when known); False when it
        already was."""
        changed = await self._write(
            "UPDATE permutation_sets SET sheet_posted_at = ?, sheet_ts = COALESCE(sheet_ts, ?)"
            " WHERE id = ? AND sheet_posted_at IS NULL",
            (time.time(), ts, set_id),
        )
        return changed == 1

    async def set_sheet_ts_for_files(self, channel_id: str, file_ids: Sequence[str], ts: str) -> list[str]:
        """Record `ts` as the sheet message of the sets in `channel_id` whose sheet is one of these files
        (the bot's own file_share event); the ids of those sets."""
        if not file_ids:
            return []
        marks = ",".join("?" * len(file_ids))
        rows = await self._write_returning_all(
            "UPDATE permutation_sets SET sheet_ts = ? WHERE channel_id = ? AND sheet_ts IS NULL"  # noqa: S608
            f" AND sheet_file_id IN ({marks}) RETURNING id",
            (ts, channel_id, *file_ids),
        )
        return [str(row[0]) for row in rows]

    # -- blobs --

    async def publish_reference_blob(self, key: str, mimetype: str, data: bytes) -> None:
        """Record that a URL was just signed for the reference `key`; its bytes are written only when no
        row holds them yet (the first replica to publish them wins, the others change nothing)."""
        now = time.time()
        updated = await self._write("UPDATE reference_blobs SET published_at = ? WHERE key = ?", (now, key))
        if updated == 0:
            await self._write(
                "INSERT INTO reference_blobs (key, mimetype, bytes, created_at, published_at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
                (key, mimetype, data, now, now),
            )

    async def reference_blob(self, key: str) -> tuple[str, bytes] | None:
        """The mimetype and bytes stored for the reference `key`, if any."""
        row = await self._one("SELECT mimetype, bytes FROM reference_blobs WHERE key = ?", (key,))
        return (str(row["mimetype"]), bytes(row["bytes"])) if row else None

    async def prune_reference_blobs(self, older_than: float) -> int:
        """Delete the references no URL was signed for since `older_than` (Unix time); how many."""
        return await self._write("DELETE FROM reference_blobs WHERE published_at < ?", (older_than,))


async def _quota_usage(
    db: Tx | Database, team_id: str, user_id: str, channel_id: str, since: float, weight_4k: int
) -> tuple[int, int]:
    """See Store.quota_usage (on the database, or inside a transaction)."""
    row = await db.fetchone(
        "SELECT COALESCE(SUM(CASE WHEN user_id = ? THEN w END), 0),"  # noqa: S608
        " COALESCE(SUM(CASE WHEN channel_id = ? THEN w END), 0) FROM ("
        " SELECT g.user_id, g.channel_id, CASE WHEN g.size = '4K' THEN ? ELSE 1 END AS w"
        " FROM generation_images AS i JOIN generations AS g ON g.id = i.job_id"
        " WHERE g.team_id = ? AND (g.user_id = ? OR g.channel_id = ?) AND g.created_at >= ?"
        f" AND {_COUNTED_IMAGE}) AS counted",
        (user_id, channel_id, weight_4k, team_id, user_id, channel_id, since),
    )
    return (int(row[0]), int(row[1])) if row else (0, 0)


async def _check_room(db: Tx, team_id: str, user_id: str, hold: Hold | None, needed: int) -> None:
    """Raise CapReachedError (with the user's waiting count) when `needed` more jobs would pass the
    hold's cap on waiting jobs."""
    if hold is None or hold.max_waiting is None:
        return
    row = await db.fetchone(
        f"SELECT COUNT(*) AS n FROM generations WHERE team_id = ? AND user_id = ? AND {_WAITING}",  # noqa: S608
        (team_id, user_id),
    )
    waiting = int(row["n"]) if row else 0
    if waiting + needed > hold.max_waiting:
        raise CapReachedError(waiting)


async def _insert_job(db: Tx, job: NewJob, hold: Hold | None = None) -> tuple[Job, list[JobImage]]:
    """Insert a queued job (held by `hold`'s owner) and its images inside the caller's transaction."""
    marks = ", ".join("(?, ?, ?, 'pending')" for _ in range(job.n))
    seeds = [value for idx in range(job.n) for value in (job.id, idx, job.seed + idx)]
    row = await db.fetchone(
        "INSERT INTO generations (id, team_id, channel_id, thread_ts, user_id, prompt, model, size,"
        " aspect_ratio, seed, seed_given, n, params, state, parent_id, created_at, request_key,"
        " lease_owner, lease_expires_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?)"
        " ON CONFLICT (request_key) DO NOTHING RETURNING *",
        (
            job.id, job.team_id, job.channel_id, job.thread_ts, job.user_id, job.prompt, job.model,
            job.size, job.aspect_ratio, job.seed, job.seed_given, job.n, json.dumps(job.params),
            job.parent_id, time.time(), job.request_key, hold.owner if hold else None,
            hold.until if hold else None,
        ),
    )  # fmt: skip
    if row is None:
        raise DuplicateRequestError(job.request_key)
    inserted = await db.fetchall(
        f"INSERT INTO generation_images (job_id, idx, seed, state) VALUES {marks} RETURNING *",  # noqa: S608
        seeds,
    )
    images = sorted((_image(r) for r in inserted), key=lambda i: i.idx)
    return _job(row), images


def _job(row: Row) -> Job:
    values = {name: row[name] for name in _JOB_FIELDS}
    values.update(
        seed_given=bool(values["seed_given"]),
        params=json.loads(values["params"]),
        notes=json.loads(values["notes"]),
        state=JobState(values["state"]),
    )
    return Job(**values)


def _round(row: Row) -> VoteRound:
    return VoteRound(**{name: row[name] for name in _ROUND_FIELDS})


def _permutation_set(row: Row) -> PermutationSet:
    return PermutationSet(**{name: row[name] for name in _SET_FIELDS})


def _image(row: Row) -> JobImage:
    values = {name: row[name] for name in _IMAGE_FIELDS}
    values["state"] = ImageState(values["state"])
    return JobImage(**values)
