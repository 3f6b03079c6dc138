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
from bot.store.store import Store
from tests.fakes.oxen import FakeOxen
from tests.fakes.slack import FakeSlack
from tests.scenarios.harness import FAST_RETRIES, Harness, is_card, stored_jobs


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


def bot_env(slack: FakeSlack, oxen: FakeOxen, database: Path, **overrides: str) -> dict[str, str]:
    """The environment of `python -m bot` as deployed, pointed at the fakes (overrides win)."""
    return {
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
        **overrides,
    }


async def spawn(env: dict[str, str]) -> asyncio.subprocess.Process:
    """Start `python -m bot` from the repository root (so this checkout's `bot` is imported)."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        env=env,
        cwd=Path(__file__).parents[2],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def exit_within(process: asyncio.subprocess.Process, seconds: float) -> tuple[int, str]:
    """Await the process's exit for at most `seconds` (then kill it and fail); its code and output."""
    try:
        out, err = await asyncio.wait_for(process.communicate(), seconds)
    except TimeoutError:
        process.kill()
        out, err = await process.communicate()
        pytest.fail(f"still running {seconds:g} s later; it wrote:\n{out.decode()}{err.decode()}")
    assert process.returncode is not None
    return process.returncode, out.decode() + err.decode()


class BotProcess:
    """`python -m bot` as deployed, pointed at the fakes, with its stdout collected."""

    def __init__(self, process: asyncio.subprocess.Process, port: int, lines: list[str]) -> None:
        self.process = process
        self.port = port
        self.lines = lines

    @classmethod
    async def start(cls, slack: FakeSlack, oxen: FakeOxen, database: Path, **env: str) -> BotProcess:
        process = await spawn(bot_env(slack, oxen, database, **env))
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
        code, rest = await exit_within(self.process, 30)
        assert code == 0
        return "".join(self.lines) + rest


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


# -- SIGTERM or SIGINT in every state ------------------------------------------------------------

IDLE_EXIT = 5.0
"""With nothing in progress, the process ends within this many seconds of the signal (the 20 s grace of
Runtime.close is only for work in progress); exit code 0."""
GRACE_EXIT = 25.0
"""With work in progress: the grace (20 s) plus closing."""


class Blackhole:
    """A TCP server that accepts connections and never answers: a peer that is unreachable in effect."""

    def __init__(self) -> None:
        self.connected = asyncio.Event()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Blackhole:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _accept(self, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        self.connected.set()


async def stop_with(process: asyncio.subprocess.Process, sig: signal.Signals, within: float) -> str:
    """Send `sig`; the process must exit 0 within `within` seconds, logging no traceback while it stops.
    The SDK logs one per refused Socket Mode attempt, and an attempt whose answer was already on its way
    when the signal came may still log its own (a load-dependent race, not a shutdown failure): only
    Dreamboard's loggers are held to it. Its output."""
    process.send_signal(sig)
    code, output = await exit_within(process, within)
    assert code == 0, output
    assert "shutting down" in output, output
    stopping = output[output.index("shutting down") :].splitlines()[1:]
    ours = [line for line in stopping if '"logger": "slack_bolt.' not in line and "Traceback" in line]
    assert ours == [], output
    assert '"message": "stopped"' in output
    return output


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_while_oxen_does_not_answer_at_start_up_ends_the_process(
    fake_slack: FakeSlack, fake_oxen: FakeOxen, tmp_path: Path, sig: signal.Signals
) -> None:
    async with Blackhole() as oxen:
        env = bot_env(fake_slack, fake_oxen, tmp_path / "db.sqlite3", OXEN_API_URL=oxen.url)
        process = await spawn(env)
        await asyncio.wait_for(oxen.connected.wait(), 20)  # start-up is waiting for the model's schema
        output = await stop_with(process, sig, IDLE_EXIT)
    assert "shutting down during start-up" in output


async def test_a_signal_while_slack_does_not_answer_socket_mode_at_start_up_ends_the_process(
    fake_slack: FakeSlack, fake_oxen: FakeOxen, tmp_path: Path
) -> None:
    async with Blackhole() as slack:
        env = bot_env(fake_slack, fake_oxen, tmp_path / "db.sqlite3", SLACK_API_URL=slack.url + "/api/")
        env.pop("SLACK_SIGNING_SECRET")
        env["SLACK_APP_TOKEN"] = fake_slack.app_token
        process = await spawn(env)
        await asyncio.wait_for(slack.connected.wait(), 20)  # apps.connections.open is under way
        output = await stop_with(process, signal.SIGTERM, IDLE_EXIT)
    assert "shutting down during start-up" in output


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_a_signal_while_socket_mode_is_refused_the_app_token_ends_the_process(
    fake_slack: FakeSlack, fake_oxen: FakeOxen, tmp_path: Path, sig: signal.Signals
) -> None:
    env = bot_env(fake_slack, fake_oxen, tmp_path / "db.sqlite3", SLACK_APP_TOKEN="xapp-revoked")
    env.pop("SLACK_SIGNING_SECRET")
    process = await spawn(env)
    await fake_slack.wait_for("apps.connections.open", timeout=20)  # refused: invalid_auth
    await stop_with(process, sig, IDLE_EXIT)


async def test_a_signal_with_socket_mode_connected_ends_the_process(
    fake_slack: FakeSlack, fake_oxen: FakeOxen, tmp_path: Path
) -> None:
    env = bot_env(fake_slack, fake_oxen, tmp_path / "db.sqlite3", SLACK_APP_TOKEN=fake_slack.app_token)
    env.pop("SLACK_SIGNING_SECRET")
    process = await spawn(env)
    await fake_slack.wait_socket_connected(timeout=20)
    await stop_with(process, signal.SIGTERM, IDLE_EXIT)


async def test_a_signal_while_a_job_is_generating_ends_the_process_and_the_job_resumes(
    fake_slack: FakeSlack, fake_oxen: FakeOxen, tmp_path: Path
) -> None:
    database = tmp_path / "db" / "dreamboard.sqlite3"
    bot = await BotProcess.start(fake_slack, fake_oxen, database)
    fake_oxen.hold()
    await fake_slack.send_command(f"http://127.0.0.1:{bot.port}/slack/events", "a fox at dusk")
    await fake_oxen.recorder.wait_for("POST /ai/queue", timeout=10)
    await stop_with(bot.process, signal.SIGTERM, GRACE_EXIT)
    [(job, _)] = await stored_jobs(database)
    assert job.state is JobState.RUNNING  # resumed (polled, not submitted again) at the next start
