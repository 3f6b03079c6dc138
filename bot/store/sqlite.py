"""Store: Dreamboard's durable state in SQLite (aiosqlite, WAL); every SQL statement lives here."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from bot.store.migrations import MIGRATIONS
from bot.store.model import ImageState, Job, JobImage, JobState, MessageKind, NewJob


class Store:
    """All SQL lives here. One connection; aiosqlite runs it on its own thread."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        self._open = True
        self._writing = asyncio.Lock()

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
        return store

    @property
    def is_open(self) -> bool:
        """Whether the connection is usable (for /healthz)."""
        return self._open

    async def close(self) -> None:
        """Close the connection."""
        if self._open:
            self._open = False
            await self._db.close()

    async def _write(self, sql: str, parameters: tuple[Any, ...]) -> aiosqlite.Cursor:
        """Run one write; the lock keeps it out of another coroutine's open transaction."""
        async with self._writing:
            return await self._db.execute(sql, parameters)

    async def _migrate(self) -> None:
        async with self._db.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        version = int(row[0]) if row else 0
        if version > len(MIGRATIONS):
            raise RuntimeError(f"database schema {version} is newer than this Dreamboard ({len(MIGRATIONS)})")
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            await self._db.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")

    async def schema_version(self) -> int:
        """The applied migration number."""
        async with self._db.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def claim_event(self, key: str) -> bool:
        """Record that `key` was handled; False when it already was (a duplicate delivery)."""
        cursor = await self._write(
            "INSERT OR IGNORE INTO processed_events (key, created_at) VALUES (?, ?)", (key, time.time())
        )
        return cursor.rowcount == 1

    async def prune_events(self, older_than: float) -> None:
        """Forget dedupe keys older than `older_than` (Unix time)."""
        await self._write("DELETE FROM processed_events WHERE created_at < ?", (older_than,))

    async def insert_job(self, job: NewJob) -> Job:
        """Store a queued job and its images (seeds seed, seed+1, …)."""
        now = time.time()
        async with self._writing:
            await self._transaction_insert(job, now)
        stored = await self.get_job(job.id)
        assert stored is not None
        return stored

    async def _transaction_insert(self, job: NewJob, now: float) -> None:
        await self._db.execute("BEGIN")
        try:
            await self._db.execute(
                "INSERT INTO generations (id, team_id, channel_id, thread_ts, user_id, prompt, model, size,"
                " aspect_ratio, seed, seed_given, n, params, state, parent_id, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?)",
                (
                    job.id, job.team_id, job.channel_id, job.thread_ts, job.user_id, job.prompt, job.model,
                    job.size, job.aspect_ratio, job.seed, job.seed_given, job.n, json.dumps(job.params),
                    job.parent_id, now,
                ),
            )  # fmt: skip
            await self._db.executemany(
                "INSERT INTO generation_images (job_id, idx, seed, state) VALUES (?, ?, ?, 'pending')",
                [(job.id, idx, job.seed + idx) for idx in range(job.n)],
            )
            await self._db.execute("COMMIT")
        except BaseException:
            await self._db.execute("ROLLBACK")
            raise

    async def discard_unstarted(self, job_id: str) -> None:
        """Delete a job that never left `queued` and produced nothing (e.g. its channel refused us)."""
        await self._write("DELETE FROM generations WHERE id = ? AND state = 'queued'", (job_id,))

    async def get_job(self, job_id: str) -> Job | None:
        """One job by id."""
        async with self._db.execute("SELECT * FROM generations WHERE id = ?", (job_id,)) as cursor:
            row = await cursor.fetchone()
        return _job(row) if row else None

    async def images(self, job_id: str) -> list[JobImage]:
        """A job's images in order."""
        async with self._db.execute(
            "SELECT * FROM generation_images WHERE job_id = ? ORDER BY idx", (job_id,)
        ) as cursor:
            rows = await cursor.fetchall()
        return [_image(row) for row in rows]

    async def unfinished_jobs(self) -> list[Job]:
        """Jobs to resume at start-up, oldest first: queued, running, or uploaded without a result card."""
        async with self._db.execute(
            "SELECT * FROM generations"
            " WHERE state IN ('queued', 'running') OR (state = 'uploaded' AND card_ts IS NULL)"
            " ORDER BY created_at"
        ) as cursor:
            rows = await cursor.fetchall()
        return [_job(row) for row in rows]

    async def thread_jobs(self, channel_id: str, thread_ts: str, limit: int = 50) -> list[Job]:
        """Jobs that live in a thread, newest first (empty: not a Dreamboard thread)."""
        async with self._db.execute(
            "SELECT * FROM generations WHERE channel_id = ? AND thread_ts = ?"
            " ORDER BY created_at DESC, rowid DESC LIMIT ?",
            (channel_id, thread_ts, limit),
        ) as cursor:
            rows = await cursor.fetchall()
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
        async with self._db.execute(query, (*parameters, limit, offset)) as cursor:
            rows = await cursor.fetchall()
        return [_job(row) for row in rows]

    async def jobs_since(self, team_id: str, user_id: str, since: float) -> int:
        """How many jobs a user started since `since` (Unix time)."""
        async with self._db.execute(
            "SELECT COUNT(*) FROM generations WHERE team_id = ? AND user_id = ? AND created_at >= ?",
            (team_id, user_id, since),
        ) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def images_of(self, job_ids: Sequence[str]) -> dict[str, list[JobImage]]:
        """The images of several jobs at once, by job id."""
        found: dict[str, list[JobImage]] = {job_id: [] for job_id in job_ids}
        if not job_ids:
            return found
        marks = ",".join("?" * len(job_ids))
        async with self._db.execute(
            f"SELECT * FROM generation_images WHERE job_id IN ({marks}) ORDER BY job_id, idx",  # noqa: S608
            tuple(job_ids),
        ) as cursor:
            for row in await cursor.fetchall():
                found[row["job_id"]].append(_image(row))
        return found

    async def toggle_favourite(self, team_id: str, user_id: str, job_id: str) -> bool:
        """Add the job to the user's favourites, or remove it; True when it is now a favourite."""
        async with self._writing:
            cursor = await self._db.execute(
                "DELETE FROM favourites WHERE team_id = ? AND user_id = ? AND job_id = ?",
                (team_id, user_id, job_id),
            )
            if cursor.rowcount:
                return False
            await self._db.execute(
                "INSERT INTO favourites (team_id, user_id, job_id, created_at) VALUES (?, ?, ?, ?)",
                (team_id, user_id, job_id, time.time()),
            )
            return True

    async def favourites(self, team_id: str, user_id: str, limit: int = 5) -> list[Job]:
        """A user's favourite jobs, most recently starred first (deleted results left out)."""
        async with self._db.execute(
            "SELECT g.* FROM favourites f JOIN generations g ON g.id = f.job_id"
            " WHERE f.team_id = ? AND f.user_id = ? AND g.deleted_at IS NULL"
            " ORDER BY f.created_at DESC LIMIT ?",
            (team_id, user_id, limit),
        ) as cursor:
            rows = await cursor.fetchall()
        return [_job(row) for row in rows]

    async def set_status_ts(self, job_id: str, ts: str, *, thread_ts: str) -> None:
        """Remember the status message (and the thread it anchors)."""
        await self._write(
            "UPDATE generations SET status_ts = ?, thread_ts = COALESCE(thread_ts, ?) WHERE id = ?",
            (ts, thread_ts, job_id),
        )
        job = await self.get_job(job_id)
        if job is not None:
            await self.add_message(job.channel_id, ts, job_id, MessageKind.STATUS, thread_ts=job.thread_ts)

    async def add_message(
        self, channel_id: str, ts: str, job_id: str, kind: MessageKind, *, thread_ts: str | None
    ) -> None:
        """Remember one of the bot's messages about a job (so reactions on it can be mapped back)."""
        await self._write(
            "INSERT OR REPLACE INTO job_messages (channel_id, ts, job_id, kind, thread_ts)"
            " VALUES (?, ?, ?, ?, ?)",
            (channel_id, ts, job_id, kind, thread_ts),
        )

    async def job_for_message(self, channel_id: str, ts: str) -> tuple[Job, MessageKind, str | None] | None:
        """The job one of the bot's messages belongs to, that message's kind and its thread."""
        async with self._db.execute(
            "SELECT job_id, kind, thread_ts FROM job_messages WHERE channel_id = ? AND ts = ?",
            (channel_id, ts),
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return None
        job = await self.get_job(str(row["job_id"]))
        return (job, MessageKind(row["kind"]), row["thread_ts"]) if job else None

    async def mark_deleted(self, job_id: str, user_id: str) -> None:
        """Record that a result was deleted (the row stays, for the audit trail)."""
        await self._write(
            "UPDATE generations SET deleted_at = ?, deleted_by = ? WHERE id = ?",
            (time.time(), user_id, job_id),
        )

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

    async def mark_running(self, job_id: str, notes: Sequence[str]) -> None:
        """queued → running, with the notes about flags the model's schema could not honour."""
        await self._write(
            "UPDATE generations SET state = 'running', notes = ?, started_at = COALESCE(started_at, ?)"
            " WHERE id = ? AND state IN ('queued', 'running')",
            (json.dumps(list(notes)), time.time(), job_id),
        )

    async def set_generation_id(self, job_id: str, idx: int, generation_id: str) -> None:
        """Record an Oxen generation id: from now on the image is polled, never re-submitted."""
        await self._write(
            "UPDATE generation_images SET oxen_generation_id = ?, state = 'submitted'"
            " WHERE job_id = ? AND idx = ?",
            (generation_id, job_id, idx),
        )

    async def set_image_outcome(
        self, job_id: str, idx: int, *, error: str | None, result_url: str | None = None
    ) -> None:
        """Mark an image succeeded (with the URL Oxen gave, remembered for reuse as a reference) or failed."""
        state = ImageState.FAILED if error else ImageState.SUCCEEDED
        await self._write(
            "UPDATE generation_images SET state = ?, error = ?, result_url = ?, result_url_at = ?"
            " WHERE job_id = ? AND idx = ?",
            (state, error, result_url, time.time() if result_url else None, job_id, idx),
        )

    async def set_file_ids(self, job_id: str, file_ids: dict[int, str]) -> None:
        """Record the Slack file ids of uploaded images (before the upload is completed)."""
        async with self._writing:
            await self._db.executemany(
                "UPDATE generation_images SET file_id = ? WHERE job_id = ? AND idx = ?",
                [(file_id, job_id, idx) for idx, file_id in file_ids.items()],
            )

    async def finish(self, job_id: str, state: JobState, *, error: str | None = None) -> None:
        """running → uploaded, failed or cancelled."""
        await self._write(
            "UPDATE generations SET state = ?, error = ?, finished_at = ? WHERE id = ?",
            (state, error, time.time(), job_id),
        )

    async def set_card_ts(self, job_id: str, ts: str) -> None:
        """Remember the result card message."""
        await self._write("UPDATE generations SET card_ts = ? WHERE id = ?", (ts, job_id))
        job = await self.get_job(job_id)
        if job is not None:
            await self.add_message(job.channel_id, ts, job_id, MessageKind.CARD, thread_ts=job.thread_ts)


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        team_id=row["team_id"],
        channel_id=row["channel_id"],
        thread_ts=row["thread_ts"],
        status_ts=row["status_ts"],
        card_ts=row["card_ts"],
        user_id=row["user_id"],
        prompt=row["prompt"],
        model=row["model"],
        size=row["size"],
        aspect_ratio=row["aspect_ratio"],
        seed=row["seed"],
        seed_given=bool(row["seed_given"]),
        n=row["n"],
        params=json.loads(row["params"]),
        notes=json.loads(row["notes"]),
        state=JobState(row["state"]),
        error=row["error"],
        parent_id=row["parent_id"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        deleted_at=row["deleted_at"],
        deleted_by=row["deleted_by"],
    )


def _image(row: sqlite3.Row) -> JobImage:
    return JobImage(
        job_id=row["job_id"],
        idx=row["idx"],
        seed=row["seed"],
        state=ImageState(row["state"]),
        oxen_generation_id=row["oxen_generation_id"],
        error=row["error"],
        file_id=row["file_id"],
        result_url=row["result_url"],
        result_url_at=row["result_url_at"],
    )
