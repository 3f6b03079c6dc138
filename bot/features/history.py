"""Per-user seed history: `/imagine history`, `/imagine seed`, the App Home gallery and CSV export.

A user only ever sees their own jobs; deleted results drop out of every view (their rows stay).
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime, tzinfo
from typing import Any, Protocol

from bot.domain.controls import PAGE_SIZE, HistoryQuery
from bot.domain.days import start_of_day, user_timezone
from bot.slack.errors import SlackError
from bot.slack.gateway import SlackGateway
from bot.store.model import Job
from bot.store.store import Store
from bot.views import blocks as views

log = logging.getLogger(__name__)

HOME_RECENT = 20
HOME_FAVOURITES = 5
HOME_MIN_INTERVAL = 5.0
ZONE_TTL = 3600.0
"""Seconds a user's time zone (users.info) is reused before it is asked again."""
HOME_VIEWING = 600.0
"""After opening App Home, how long a user counts as looking at it: their finished jobs refresh it."""
EXPORT_COLUMNS = (
    "job_id",
    "created",
    "channel",
    "prompt",
    "seed",
    "model",
    "size",
    "aspect_ratio",
    "references",
    "parent",
    "permalink",
)


class Spawn(Protocol):
    """Starts a tracked background task (the composition root passes `Services.spawn`)."""

    def __call__(self, coro: Coroutine[Any, Any, None], /, *, name: str) -> asyncio.Task[None]: ...


def csv_export(jobs: Sequence[Job], permalink: Callable[[Job], str]) -> str:
    """The CSV text of a user's history (RFC 4180 quoting: commas, quotes and newlines survive)."""
    output = io.StringIO()
    writer = csv.writer(output, lineterminator="\r\n")
    writer.writerow(EXPORT_COLUMNS)
    for job in jobs:
        references = "; ".join(str(item.get("name", "")) for item in job.params.get("references") or [])
        created = datetime.fromtimestamp(job.created_at, UTC).isoformat(timespec="seconds")
        writer.writerow(
            [
                *(job.id, created, job.channel_id, job.prompt, job.seed, job.model, job.size),
                *(job.aspect_ratio or "", references, job.parent_id or "", permalink(job)),
            ]
        )
    return output.getvalue()


class History:
    """Builds history views, publishes App Home (throttled per user) and sends exports.

    Publishes run as background tasks started with `spawn` (asyncio.create_task by default)."""

    def __init__(
        self,
        *,
        store: Store,
        slack: SlackGateway,
        min_interval: float = HOME_MIN_INTERVAL,
        spawn: Spawn | None = None,
        file_grace: float = views.FILE_PROCESSING_GRACE,
    ) -> None:
        self._store = store
        self._slack = slack
        self._min_interval = min_interval
        self._file_grace = file_grace
        self._zones: dict[str, tuple[float, tzinfo]] = {}
        self._spawn: Spawn = spawn or asyncio.create_task
        self._last_publish: dict[tuple[str, str], float] = {}
        self._opened: dict[tuple[str, str], float] = {}
        self._pending: dict[tuple[str, str], tuple[asyncio.Task[None], float]] = {}
        """Refreshes not yet publishing, one per user, with when they are due (time.monotonic)."""
        self._tasks: set[asyncio.Task[None]] = set()
        """Every refresh task not yet finished: waiting, or publishing."""
        self._closed = False

    async def permalinker(self) -> Callable[[Job], str]:
        """A function from job to the permalink of its thread (no API call per job)."""
        try:
            base = (await self._slack.workspace_url()).rstrip("/")
        except SlackError as exc:
            log.warning("auth.test failed: %s", exc)
            return lambda job: ""

        def permalink(job: Job) -> str:
            root = job.root_ts
            if root is None:
                return ""
            return f"{base}/archives/{job.channel_id}/p{root.replace('.', '')}"

        return permalink

    async def page(self, team_id: str, user_id: str, query: HistoryQuery) -> views.Message:
        """One page of the user's history, with Replay buttons and paging."""
        size = min(PAGE_SIZE, query.total - query.offset)
        jobs = await self._store.history(
            team_id, user_id, limit=size + 1, offset=query.offset, text=query.text
        )
        more = len(jobs) > size and query.offset + size < query.total
        jobs = jobs[:size]
        images = await self._store.images_of([job.id for job in jobs])
        return views.history_page(
            jobs,
            images,
            query,
            has_more=more,
            permalink=await self.permalinker(),
            files_ready_before=time.time() - self._file_grace,
        )

    async def export(self, team_id: str, user_id: str) -> int:
        """DM the user a CSV of their whole history; returns the number of rows."""
        jobs = await self._store.history(team_id, user_id, limit=1_000_000)
        content = csv_export(jobs, await self.permalinker())
        channel, _ = await self._slack.post(
            user_id, {"text": f"Your Dreamboard history: {len(jobs)} generations, as CSV."}
        )
        await self._slack.upload_text(
            channel,
            content=content,
            filename=f"dreamboard-history-{datetime.now(UTC):%Y-%m-%d}.csv",
            title="Dreamboard history",
        )
        return len(jobs)

    async def publish_home(self, team_id: str, user_id: str) -> None:
        """Publish the App Home tab now; if Slack refuses its images (a file still processing), publish it
        without them. Other failures are logged."""
        self._last_publish[(team_id, user_id)] = time.monotonic()
        recent = await self._store.history(team_id, user_id, limit=HOME_RECENT)
        favourites = await self._store.favourites(team_id, user_id, limit=HOME_FAVOURITES)
        images = await self._store.images_of([job.id for job in [*recent, *favourites]])
        now = time.time()
        midnight = start_of_day(now, await self._timezone(user_id))
        today = await self._store.images_since(team_id, user_id, midnight)
        view = views.home(
            recent,
            favourites,
            images,
            today=today,
            permalink=await self.permalinker(),
            files_ready_before=now - self._file_grace,
        )
        try:
            await self._slack.publish_home_or_raise(user_id, view)
        except SlackError as exc:
            if not (exc.invalid_payload and views.has_images(view)):
                log.warning("views.publish for %s failed: %s", user_id, exc)
                return
            log.warning("views.publish for %s refused its images (%s); publishing without them", user_id, exc)
            await self._slack.publish_home(user_id, views.without_images(view))

    async def _timezone(self, user_id: str) -> tzinfo:
        """The user's time zone, asked of users.info at most once per ZONE_TTL."""
        cached = self._zones.get(user_id)
        if cached is not None and time.monotonic() - cached[0] < ZONE_TTL:
            return cached[1]
        name, offset = await self._slack.user_zone(user_id)
        zone = user_timezone(name, offset)
        if name is not None:
            self._zones[user_id] = (time.monotonic(), zone)
        return zone

    def opened_home(self, team_id: str, user_id: str) -> None:
        """The user opened App Home: publish it (throttled), and refresh it after their jobs for a while."""
        self._opened[(team_id, user_id)] = time.monotonic()
        self.refresh_home(team_id, user_id)

    def refresh_after_job(self, team_id: str, user_id: str) -> None:
        """One of the user's jobs ended: refresh App Home only if they opened it in the last HOME_VIEWING
        seconds. Opening the tab publishes it anyway, so a publish nobody looks at would only spend a
        Web API call per job."""
        opened = self._opened.get((team_id, user_id))
        if opened is not None and time.monotonic() - opened <= HOME_VIEWING:
            self.refresh_home(team_id, user_id)

    def refresh_home(self, team_id: str, user_id: str) -> None:
        """Publish App Home soon, at most once per `min_interval` seconds per user (not after `close`)."""
        key = (team_id, user_id)
        if self._closed or key in self._pending:
            return
        now = time.monotonic()
        wait = max(self._last_publish.get(key, float("-inf")) + self._min_interval - now, 0.0)
        task = self._spawn(self._publish_later(key, wait), name=f"app-home-{team_id}-{user_id}")
        self._pending[key] = (task, now + wait)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish_later(self, key: tuple[str, str], wait: float) -> None:
        try:
            await asyncio.sleep(wait)
        finally:
            # Leave the waiting set before publishing: a job finishing meanwhile schedules a new refresh.
            self._pending.pop(key, None)
        await self.publish_home(*key)

    async def close(self, grace: float = 5.0) -> None:
        """Stop refreshing App Home: cancel refreshes still waiting out the throttle, give the others
        (publishing, or due now, such as one for a job that finished during shutdown) up to `grace`
        seconds, then cancel them. When this returns no refresh task is left, so none can touch the
        store after it closes; later `refresh_home` calls do nothing."""
        self._closed = True
        now = time.monotonic()
        for task, due in self._pending.values():
            if due > now:
                task.cancel()
        tasks = list(self._tasks)
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=grace)
        for task in late:
            log.warning("App Home publish %s cancelled at shutdown after %.1fs", task.get_name(), grace)
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
