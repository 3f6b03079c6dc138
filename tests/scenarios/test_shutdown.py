"""Shutdown waits for what was started: acked listener work, App Home publishes, housekeeping."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import handlers
from bot.app import runtime
from bot.features.references import References
from bot.store.model import JobState
from bot.store.sqlite import Store
from tests.fakes.oxen import FakeOxen
from tests.fakes.slack import FakeSlack
from tests.scenarios.harness import FAST_RETRIES, Harness, is_card


def alive(prefix: str) -> list[asyncio.Task[Any]]:
    """Tasks of this loop whose name starts with `prefix`, not finished yet."""
    return [task for task in asyncio.all_tasks() if task.get_name().startswith(prefix) and not task.done()]


def problems(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Log lines that mean something escaped: errors, and asyncio's complaints about lost tasks."""
    return [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.levelno >= logging.ERROR or "never retrieved" in r.getMessage()
    ]


# -- acked listener work -------------------------------------------------------------------------


class BotProcess:
    """`python -m bot` as deployed, pointed at the fakes, with its stdout collected."""

    def __init__(self, process: asyncio.subprocess.Process, port: int, lines: list[str]) -> None:
        self.process = process
        self.port = port
        self.lines = lines

    @classmethod
    async def start(cls, slack: FakeSlack, oxen: FakeOxen, database: Path) -> BotProcess:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "SLACK_BOT_TOKEN": slack.bot_token,
            "SLACK_SIGNING_SECRET": slack.signing_secret,
            "SLACK_API_URL": slack.api_url,
            "OXEN_API_KEY": oxen.api_key,
            "OXEN_API_URL": oxen.url,
            "OXEN_POLL_INTERVAL": "0.05",
            "DATABASE_PATH": str(database),
            "HOST": "127.0.0.1",
            "PORT": "0",
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", env=env, cwd=Path(__file__).parents[2], stdout=subprocess.PIPE
        )
        assert process.stdout is not None
        lines: list[str] = []
        while True:
            line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
            assert line, f"the bot exited early: {lines}"
            lines.append(line)
            if found := re.search(r"http on 127\.0\.0\.1:(\d+)", line):
                return cls(process, int(found.group(1)), lines)

    async def sigterm(self) -> str:
        """Send SIGTERM and wait for the exit; returns everything it logged."""
        self.process.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(self.process.communicate(), 30)
        assert self.process.returncode == 0
        return "".join(self.lines) + rest.decode()


async def test_sigterm_just_after_a_command_is_acked_still_stores_it_and_it_runs_once_after_restart(
    fake_slack: FakeSlack, fake_oxen: FakeOxen, tmp_path: Path
) -> None:
    database = tmp_path / "db" / "dreamboard.sqlite3"
    bot = await BotProcess.start(fake_slack, fake_oxen, database)
    try:
        # The listener's first Slack call after the ack (the status message) takes a while.
        fake_slack.fault("chat.postMessage", delay=3.0)
        url = f"http://127.0.0.1:{bot.port}/slack/events"
        response = await fake_slack.send_command(url, "a fox at dusk")
        assert response.status == 200
        [status] = await fake_slack.wait_for("chat.postMessage")
        output = await bot.sigterm()
    finally:
        if bot.process.returncode is None:
            bot.process.kill()
            await bot.process.wait()

    assert "waiting up to 20.0s for 1 listener" in output, "SIGTERM arrived after the listener ended"
    assert '"message": "stopped"' in output
    assert "Traceback" not in output
    assert "never retrieved" not in output
    restarted = Harness(fake_slack, fake_oxen, database)
    [(job, _)] = await restarted.jobs()
    assert job.prompt == "a fox at dusk"
    assert job.status_ts == fake_slack.messages("C1")[0]["ts"]  # the listener finished announcing it

    await restarted.start()
    try:
        await fake_slack.wait_for("chat.update", where=is_card)
        await fake_slack.wait_shared()
    finally:
        await restarted.stop()
    [(job, _)] = await restarted.jobs()
    assert job.state is JobState.UPLOADED
    assert len(fake_oxen.submissions) == 1
    assert len([f for f in fake_slack.uploaded_files.values() if f.completed]) == 1
    assert [call for call in fake_slack.calls_to("chat.postMessage") if not is_card(call)] == [status]


async def test_a_thread_reply_acked_before_shutdown_becomes_a_job_that_runs_after_restart(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot.app.tasks")
    await harness.start()
    root = await harness.generate("a red fox")
    # Reading the thread (before the job is stored) takes a while.
    harness.slack.fault("conversations.replies", delay=0.5)
    await harness.send(harness.slack.human_message("C1", "now at night", thread_ts=root))
    await harness.slack.wait_for("conversations.replies")
    await harness.stop()
    assert any("for 1 listener" in r.getMessage() for r in caplog.records)
    [_, (reply, _)] = await harness.jobs()
    assert (reply.prompt, reply.state, reply.thread_ts) == ("now at night", JobState.QUEUED, root)

    await harness.start()
    await harness.slack.wait_for("chat.update", where=is_card, count=2)
    assert [body["prompt"] for body in harness.oxen.submissions] == ["a red fox", "now at night"]
    assert problems(caplog) == []


# -- App Home publishes --------------------------------------------------------------------------


async def open_home(harness: Harness, user: str = "U4") -> None:
    await harness.send({"type": "app_home_opened", "user": user, "channel": f"D{user}", "tab": "home"})


async def test_an_app_home_publish_under_way_at_shutdown_is_awaited(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    await harness.start()
    harness.slack.fault("views.publish", delay=0.3)
    await open_home(harness)
    await harness.slack.wait_for("views.publish")
    await harness.stop()
    assert alive("app-home-") == []
    assert not [r for r in caplog.records if "cancelled at shutdown" in r.getMessage()]
    assert problems(caplog) == []


async def test_an_app_home_publish_that_outlasts_the_grace_is_cancelled_cleanly(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    await harness.start()
    harness.slack.fault("views.publish", delay=30.0)
    await open_home(harness)
    await harness.slack.wait_for("views.publish")
    await harness.stop(grace=0.2)
    assert alive("app-home-") == []
    [cancelled] = [r for r in caplog.records if "cancelled at shutdown" in r.getMessage()]
    assert "app-home-T0TEAM-U4" in cancelled.getMessage()
    assert problems(caplog) == []


async def test_a_job_finishing_during_shutdown_publishes_app_home_before_the_store_closes(
    harness: Harness, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    await harness.start()
    assert harness.running is not None
    # App Home is refreshed after a job of someone who opened it; no throttle, so that refresh is due at once.
    monkeypatch.setattr(harness.running.services.history, "_min_interval", 0.0)
    await open_home(harness, "U1")
    await harness.slack.wait_for("views.publish")
    harness.slack.fault("files.completeUploadExternal", delay=0.3)
    await harness.command("a fox")
    await harness.slack.wait_for("files.completeUploadExternal")
    assert harness.running is not None
    history = harness.running.services.history
    await harness.stop()  # the upload finishes inside the grace; the job's App Home refresh follows

    [_, publish] = harness.slack.calls_to("views.publish")
    assert publish.params["user_id"] == "U1"
    assert alive("app-home-") == []
    history.refresh_home(harness.slack.team_id, "U1")  # after close: nothing starts
    assert alive("app-home-") == []
    assert problems(caplog) == []


async def test_a_refresh_still_waiting_out_the_throttle_is_dropped_at_shutdown(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    await harness.start()
    await open_home(harness)
    await harness.slack.wait_for("views.publish")
    await open_home(harness)  # within 5 s of the first: waits out the throttle
    assert alive("app-home-")
    await harness.stop()
    assert alive("app-home-") == []
    assert len(harness.slack.calls_to("views.publish")) == 1
    assert problems(caplog) == []


# -- housekeeping --------------------------------------------------------------------------------


async def test_housekeeping_survives_failing_prunes_and_is_awaited_on_close(
    harness: Harness, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    rounds = {"events": 0, "cache": 0}
    third_round = asyncio.Event()
    prune_events, prune_cache = Store.prune_events, References.prune_cache

    async def flaky_prune_events(self: Store, older_than: float) -> None:
        rounds["events"] += 1
        if rounds["events"] == 1:
            raise sqlite3.OperationalError("database is locked")
        await prune_events(self, older_than)

    def flaky_prune_cache(self: References, older_than: float) -> int:  # runs in a worker thread
        rounds["cache"] += 1
        if rounds["cache"] == 2:
            raise FileNotFoundError("a cached reference vanished while being listed")
        if rounds["cache"] >= 3:
            loop.call_soon_threadsafe(third_round.set)
        return prune_cache(self, older_than)

    loop = asyncio.get_running_loop()
    monkeypatch.setattr(Store, "prune_events", flaky_prune_events)
    monkeypatch.setattr(References, "prune_cache", flaky_prune_cache)
    running = await runtime.start(
        harness.settings(), register=handlers.register, oxen_retry=FAST_RETRIES, housekeeping_interval=0.01
    )
    harness.running = running
    await asyncio.wait_for(third_round.wait(), 5)
    await harness.stop()

    assert running.housekeeping.done()
    assert running.housekeeping.cancelled()
    [events_failure] = [r for r in caplog.records if "pruning old dedupe keys failed" in r.getMessage()]
    [cache_failure] = [r for r in caplog.records if "pruning the reference cache failed" in r.getMessage()]
    assert events_failure.exc_info is not None
    assert cache_failure.exc_info is not None
    assert rounds["events"] >= 3
    assert not [r for r in caplog.records if r.name == "bot.app.tasks" and r.levelno >= logging.ERROR]
