"""Store: Dreamboard's durable state in SQLite (aiosqlite, WAL); every SQL statement lives here."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import aiosqlite

from bot.store.migrations import MIGRATIONS
from bot.store.model import ImageState, Job, JobImage, JobState, MessageKind, NewJob


class DuplicateRequestError(Exception):
    """A job for this Slack request already exists (Slack delivered the request twice)."""


_JOB_FIELDS = tuple(f.name for f in fields(Job))
_IMAGE_FIELDS = tuple(f.name for f in fields(JobImage))


class Store:
    """All SQL lives here. One connection; aiosqlite runs it on its own thread.

    Writes go through one lock, so a multi-statement `transaction()` never interleaves with another
    coroutine's statements on the shared connection. Terminal job states are guarded in SQL: once a
    job is uploaded, failed or cancelled, no later write changes its state.
    """

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._open = True
        self._writing = asyncio.Lock()
        self.statements = 0

    @classmethod
    async def open(cls, path: Path) -> Store:
        """Open (creating parents and schema as needed) the database at `path`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
        db.row_factory = sqlite3.Row
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=5000"):
            await db.execute(f"PRAGMA {pragma}")
        store = cls(db)
        await store._migrate()
        await db.set_trace_callback(store._count)
        return store

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

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """BEGIN IMMEDIATE … COMMIT (ROLLBACK on any error) under the write lock."""
        async with self._writing:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

    async def _write(self, sql: str, parameters: Sequence[Any]) -> aiosqlite.Cursor:
        """Run one write statement under the lock."""
        async with self._writing:
            return await self._db.execute(sql, tuple(parameters))

    async def _write_returning(self, sql: str, parameters: Sequence[Any]) -> sqlite3.Row | None:
        """Run one `… RETURNING *` write under the lock; the row it returned, if any."""
        async with self._writing, self._db.execute(sql, tuple(parameters)) as cursor:
            row: sqlite3.Row | None = await cursor.fetchone()
            return row

    async def _one(self, sql: str, parameters: Sequence[Any]) -> sqlite3.Row | None:
        async with self._db.execute(sql, tuple(parameters)) as cursor:
            row: sqlite3.Row | None = await cursor.fetchone()
            return row

    async def _all(self, sql: str, parameters: Sequence[Any]) -> list[sqlite3.Row]:
        async with self._db.execute(sql, tuple(parameters)) as cursor:
            return list(await cursor.fetchall())

    async def _migrate(self) -> None:
        version = await self.schema_version()
        if version > len(MIGRATIONS):
            raise RuntimeError(f"database schema {version} is newer than this Dreamboard ({len(MIGRATIONS)})")
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            await self._db.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")

    async def schema_version(self) -> int:
        """The applied migration number."""
        row = await self._one("PRAGMA user_version", ())
        return int(row[0]) if row else 0

    # -- dedupe ----------------------------------------------------------------------------------

    async def claim_event(self, key: str) -> bool:
        """Record that `key` was handled; False when it already was (a duplicate delivery)."""
        cursor = await self._write(
            "INSERT INTO processed_events (key, created_at) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
            (key, time.time()),
        )
        return cursor.rowcount == 1

    async def claim_recent(self, key: str, window: float) -> bool:
        """Like claim_event, but the same key may be claimed again once `window` seconds have passed."""
        now = time.time()
        cursor = await self._write(
            "INSERT INTO processed_events (key, created_at) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET created_at = excluded.created_at"
            " WHERE processed_events.created_at < ?",
            (key, now, now - window),
        )
        return cursor.rowcount == 1

    async def prune_events(self, older_than: float) -> None:
        """Forget dedupe keys older than `older_than` (Unix time)."""
        await self._write("DELETE FROM processed_events WHERE created_at < ?", (older_than,))

    # -- creating and reading jobs ---------------------------------------------------------------

    async def insert_job(self, job: NewJob) -> tuple[Job, list[JobImage]]:
        """Store a queued job and its images (seeds seed, seed+1, …) in one transaction; raises
        DuplicateRequestError when a job for the same `request_key` exists."""
        marks = ", ".join("(?, ?, ?, 'pending')" for _ in range(job.n))
        seeds = [value for idx in range(job.n) for value in (job.id, idx, job.seed + idx)]
        async with self.transaction() as db:
            async with db.execute(
                "INSERT INTO generations (id, team_id, channel_id, thread_ts, user_id, prompt, model, size,"
                " aspect_ratio, seed, seed_given, n, params, state, parent_id, created_at, request_key)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?)"
                " ON CONFLICT (request_key) DO NOTHING RETURNING *",
                (
                    job.id, job.team_id, job.channel_id, job.thread_ts, job.user_id, job.prompt, job.model,
                    job.size, job.aspect_ratio, job.seed, job.seed_given, job.n, json.dumps(job.params),
                    job.parent_id, time.time(), job.request_key,
                ),
            ) as cursor:  # fmt: skip
                row = await cursor.fetchone()
            if row is None:
                raise DuplicateRequestError(job.request_key)
            async with db.execute(
                f"INSERT INTO generation_images (job_id, idx, seed, state) VALUES {marks} RETURNING *",  # noqa: S608
                seeds,
            ) as cursor:
                images = sorted((_image(r) for r in await cursor.fetchall()), key=lambda i: i.idx)
        return _job(row), images

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

    async def unfinished_jobs(self) -> list[Job]:
        """Jobs to resume at start-up, oldest first: queued, running, or uploaded without a result card."""
        rows = await self._all(
            "SELECT * FROM generations WHERE state IN ('queued', 'running')"
            " OR (state = 'uploaded' AND card_ts IS NULL)"
            " ORDER BY created_at",
            (),
        )
        return [_job(row) for row in rows]

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
            query += " AND instr(lower(prompt), ?) > 0"
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
        async with self.transaction() as db:
            cursor = await db.execute(
                "DELETE FROM favourites WHERE team_id = ? AND user_id = ? AND job_id = ?",
                (team_id, user_id, job_id),
            )
            if cursor.rowcount:
                return False
            await db.execute(
                "INSERT INTO favourites (team_id, user_id, job_id, created_at) VALUES (?, ?, ?, ?)",
                (team_id, user_id, job_id, time.time()),
            )
            return True

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
        async with (
            self._writing,
            self._db.execute(
                "UPDATE generations SET upload_ts = ? WHERE channel_id = ? AND upload_ts IS NULL AND id IN"  # noqa: S608
                f" (SELECT job_id FROM generation_images WHERE file_id IN ({marks})) RETURNING id",
                (ts, channel_id, *file_ids),
            ) as cursor,
        ):
            return [str(row[0]) for row in await cursor.fetchall()]

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


def _job(row: sqlite3.Row) -> Job:
    values = {name: row[name] for name in _JOB_FIELDS}
    values.update(
        seed_given=bool(values["seed_given"]),
        params=json.loads(values["params"]),
        notes=json.loads(values["notes"]),
        state=JobState(values["state"]),
    )
    return Job(**values)


def _image(row: sqlite3.Row) -> JobImage:
    values = {name: row[name] for name in _IMAGE_FIELDS}
    values["state"] = ImageState(values["state"])
    return JobImage(**values)
