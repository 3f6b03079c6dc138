"""Drive a real Dreamboard (HTTP server, Bolt app, runner, SQLite file) against the loopback fakes."""

from __future__ import annotations

import asyncio
import errno
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

import handlers
from bot.app import runtime
from bot.app.config import Settings, load_settings
from bot.backends.oxen import RetryPolicy
from bot.features.votes import Clock
from bot.jobs.uploads import ShareTiming
from bot.store.model import Job, JobImage
from bot.store.store import Store
from tests.fakes.oxen import FakeOxen
from tests.fakes.recorder import Call
from tests.fakes.slack import FakeSlack, SignedResponse

FAST_RETRIES = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05)


StoredJob = tuple[Job, list[JobImage]]


async def stored_jobs(database: Path | str) -> list[StoredJob]:
    """Every job stored in `database` (a SQLite file or a DATABASE_URL) with its images, oldest first,
    read through a connection of its own (the bot's may be in another process)."""
    store = await Store.open(database)
    try:
        rows = await store.db.fetchall("SELECT id FROM generations ORDER BY created_at, rowid")
        ids = [str(row[0]) for row in rows]
        result = []
        for job_id in ids:
            job = await store.get_job(job_id)
            if job is not None:  # else discarded since (never announced): not a job any more
                result.append((job, await store.images(job_id)))
        return result
    finally:
        await store.close()


def is_card(call: Call) -> bool:
    """Whether a recorded chat.update turns a status message into its result card (the last step of a
    job), or a chat.postMessage reposts a card (`/imagine show`)."""
    return str(call.params.get("text", "")).startswith("Result of job")


def card_of(job: Job) -> Callable[[Call], bool]:
    """Matches the chat.update that turns `job`'s status message into its result card."""
    return lambda call: call.params.get("ts") == job.status_ts and is_card(call)


def answers(calls: list[Call]) -> list[Call]:
    """Calls that answer someone (leaving out background App Home refreshes and the reads they make)."""
    return [call for call in calls if call.method not in ("views.publish", "auth.test", "users.info")]


DEFAULT_REFERENCE_REPO = "team/dreamboard-refs"
"""The Oxen repository a harness bot hosts references in, unless a test passes oxen_reference_repo=None."""

OWN_PORTS = range(10_000, 32_000)
"""Where a bot that must know its own URL before it binds takes its port: below Linux's ephemeral range
(32768-60999), so no outgoing connection of a parallel test run can be holding it."""


@dataclass
class Harness:
    """A bot wired to FakeSlack and FakeOxen, restartable on the same database file."""

    slack: FakeSlack
    oxen: FakeOxen
    database: Path
    running: runtime.Runtime | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    share_timing: ShareTiming = field(default_factory=lambda: ShareTiming(event_wait=5.0, polls=(0.5, 2.0)))
    """How long the bot waits for its file_share event before polling files.info."""
    upload_ts: dict[str, str] = field(default_factory=dict)
    """Upload message ts by job id, as the bot recorded them (see `wait_upload_ts`)."""
    finished: set[str] = field(default_factory=set)
    """Ids of the jobs the running bot has taken to their end (its pipeline's on_finished hook)."""
    vote_clock: Clock | None = None
    """The clock vote deadlines run on (None: the wall clock)."""
    database_url: str | None = None
    """A PostgreSQL DATABASE_URL to run on instead of the SQLite file `database`."""
    _notifying: set[asyncio.Task[None]] = field(default_factory=set)

    def settings(self, **overrides: Any) -> Settings:
        """Settings pointing at the fakes; `overrides` use field names (e.g. max_concurrent_jobs=1)."""
        values: dict[str, Any] = {
            "slack_bot_token": self.slack.bot_token,
            "slack_signing_secret": self.slack.signing_secret,
            "slack_api_url": self.slack.api_url,
            "slack_file_hosts": self.slack.file_host,
            # The bot paces its posts on the fake's (faster) clock: tests/fakes/ratelimits.py.
            "slack_post_interval": 1.0 / self.slack.rate_limits.speed,
            "oxen_api_key": self.oxen.api_key,
            "oxen_api_url": self.oxen.url,
            "oxen_poll_interval": 0.02,
            "database_path": self.database,
            "host": "127.0.0.1",
            "port": 0,
            # Results become references only through hosting (Oxen fetches references anonymously and its
            # result URLs need the key), so every bot has one unless a test says otherwise: the fake's
            # public repository, which needs no port of the bot's own (see `start_at_own_url` for that).
            "oxen_reference_repo": DEFAULT_REFERENCE_REPO,
            "database_url": self.database_url,
        }
        values.update(self.overrides)
        values.update(overrides)
        return load_settings(**values)

    async def start(self, **overrides: Any) -> runtime.Runtime:
        """Start the whole bot (as `python -m bot` does, minus signals)."""
        self.overrides.update(overrides)
        self.running = await runtime.start(
            self.settings(),
            register=handlers.register,
            oxen_retry=FAST_RETRIES,
            share_timing=self.share_timing,
            vote_clock=self.vote_clock,
        )
        self.running.services.uploads.on_recorded.append(self._recorded)
        self.finished.clear()
        self.running.services.runner.pipeline.on_finished.append(self._finished)
        self.slack.events_url = self.events_url  # where Slack delivers events in HTTP mode
        return self.running

    def _recorded(self, job_id: str, ts: str) -> None:
        self.upload_ts[job_id] = ts
        self._notify()

    def _finished(self, job: Job) -> None:
        self.finished.add(job.id)
        self._notify()

    def _notify(self) -> None:
        task = asyncio.get_running_loop().create_task(self.slack.recorder.notify())
        self._notifying.add(task)
        task.add_done_callback(self._notifying.discard)

    async def wait_finished(self, job_id: str, timeout: float = 15.0) -> None:
        """Wait until the running bot has taken the job to its end (after its card's ts is stored)."""
        await self.slack.recorder.wait_until(lambda: job_id in self.finished, timeout=timeout)

    async def wait_upload_ts(self, job_id: str, timeout: float = 15.0) -> str:
        """Wait until the bot has recorded the job's upload message (from its file_share event or
        files.info); its ts."""
        await self.slack.recorder.wait_until(lambda: job_id in self.upload_ts, timeout=timeout)
        return self.upload_ts[job_id]

    async def start_at_own_url(self, **overrides: Any) -> runtime.Runtime:
        """Start with PUBLIC_BASE_URL naming the bot's own loopback port (bot-hosted reference URLs).
        The port must be chosen before the bot binds it, so another test run may take it first: then
        the (cleanly failed) start is retried on another port."""
        for _ in range(20):
            port = random.choice(OWN_PORTS)
            try:
                return await self.start(port=port, public_base_url=f"http://127.0.0.1:{port}", **overrides)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
        raise AssertionError("no free loopback port for the bot's own URL")

    async def stop(self, grace: float = 5.0) -> None:
        """Shut down as on SIGTERM."""
        if self.running is not None:
            self.slack.events_url = None
            await self.running.close(grace)
            self.running = None

    @property
    def url(self) -> str:
        """Base URL of the bot's HTTP server."""
        assert self.running is not None, "start() the bot first"
        return f"http://127.0.0.1:{self.running.port}"

    @property
    def events_url(self) -> str:
        """Where Slack would POST commands, events and actions."""
        return self.url + "/slack/events"

    async def command(self, text: str, **fields: Any) -> SignedResponse:
        """Send a signed `/imagine` as Slack does."""
        return await self.slack.send_command(self.events_url, text, **fields)

    async def generate(self, text: str, **fields: Any) -> str:
        """Run `/imagine <text>` to completion: its status message became the result card (the last step)
        and Slack has shared its images. Returns its thread's root."""
        cards = len([call for call in self.slack.calls_to("chat.update") if is_card(call)])
        await self.command(text, **fields)
        await self.slack.wait_for("chat.update", where=is_card, count=cards + 1)
        job, _ = (await self.jobs())[-1]
        assert job.thread_ts is not None
        await self.slack.wait_for("chat.update", where=card_of(job))
        await self.wait_finished(job.id)
        await self.slack.wait_shared()
        return job.thread_ts

    async def send(self, event: dict[str, Any], **options: Any) -> SignedResponse:
        """Deliver a message/mention event to the bot."""
        return await self.slack.send_event(self.events_url, event, **options)

    async def get(self, path: str) -> tuple[int, str]:
        """GET one of the bot's own routes."""
        async with aiohttp.ClientSession() as session, session.get(self.url + path) as response:
            return response.status, await response.text()

    async def jobs(self) -> list[StoredJob]:
        """Every stored job with its images (see `stored_jobs`)."""
        return await stored_jobs(self.database_url or self.database)

    async def announced_jobs(self, count: int, timeout: float = 5.0) -> list[StoredJob]:
        """The stored jobs, once `count` of them hold their status message's ts. The bot writes it after
        Slack's answer, so the fake can have posted a status the store does not hold yet; that write has
        no hook to await, so the store is read again every 10 ms until it does."""
        async with asyncio.timeout(timeout):
            while True:
                jobs = await self.jobs()
                if sum(job.status_ts is not None for job, _ in jobs) >= count:
                    return jobs
                await asyncio.sleep(0.01)
