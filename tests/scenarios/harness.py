"""Drive a real Dreamboard (HTTP server, Bolt app, runner, SQLite file) against the loopback fakes."""

from __future__ import annotations

import contextlib
import errno
import random
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

import handlers
from bot.app import runtime
from bot.app.config import Settings, load_settings
from bot.backends.oxen import RetryPolicy
from bot.store.model import Job, JobImage
from bot.store.sqlite import Store
from tests.fakes.oxen import FakeOxen
from tests.fakes.recorder import Call
from tests.fakes.slack import FakeSlack, SignedResponse

FAST_RETRIES = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05)


StoredJob = tuple[Job, list[JobImage]]


async def stored_jobs(database: Path) -> list[StoredJob]:
    """Every job stored in `database` with its images, oldest first, read through a connection of its
    own (the bot's may be in another process)."""
    with contextlib.closing(sqlite3.connect(database)) as db:
        ids = [str(row[0]) for row in db.execute("SELECT id FROM generations ORDER BY created_at, rowid")]
    store = await Store.open(database)
    try:
        result = []
        for job_id in ids:
            job = await store.get_job(job_id)
            assert job is not None
            result.append((job, await store.images(job_id)))
        return result
    finally:
        await store.close()


def is_card(call: Call) -> bool:
    """Whether a recorded chat.postMessage is a result card."""
    return "Result of job" in str(call.params.get("text"))


def is_done(call: Call) -> bool:
    """Whether a recorded chat.update marks a status message Done (the last step of a job)."""
    return "*Done*" in str(call.params.get("text"))


def answers(calls: list[Call]) -> list[Call]:
    """Calls that answer someone (leaving out background App Home refreshes and the reads they make)."""
    return [call for call in calls if call.method not in ("views.publish", "auth.test", "users.info")]


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
        }
        values.update(self.overrides)
        values.update(overrides)
        return load_settings(**values)

    async def start(self, **overrides: Any) -> runtime.Runtime:
        """Start the whole bot (as `python -m bot` does, minus signals)."""
        self.overrides.update(overrides)
        self.running = await runtime.start(
            self.settings(), register=handlers.register, oxen_retry=FAST_RETRIES
        )
        return self.running

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
        """Run `/imagine <text>` to completion (its status message says Done); returns its thread's root."""
        cards = len([call for call in self.slack.calls_to("chat.postMessage") if is_card(call)])
        await self.command(text, **fields)
        await self.slack.wait_for("chat.postMessage", where=is_card, count=cards + 1)
        job, _ = (await self.jobs())[-1]
        assert job.thread_ts is not None
        await self.slack.wait_for(
            "chat.update", where=lambda call: call.params.get("ts") == job.status_ts and is_done(call)
        )
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
        return await stored_jobs(self.database)
