"""Both transports and the real process: Socket Mode, HTTP mode, start-up checklist, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import pytest

from bot.store.model import JobState
from tests.fakes.oxen import FakeOxen
from tests.fakes.slack import FakeSlack
from tests.scenarios.harness import Harness, is_card


async def test_socket_mode_receives_commands_and_reports_health(harness: Harness) -> None:
    await harness.start(slack_app_token=harness.slack.app_token, slack_signing_secret=None)
    await harness.slack.wait_socket_connected(timeout=5)
    status, body = await harness.get("/healthz")
    assert (status, json.loads(body)) == (200, {"ok": True, "store": "open", "socket": "connected"})

    ack = await harness.slack.socket_send(
        "slash_commands",
        harness.slack.command_payload("a fox over socket mode"),
        accepts_response_payload=True,
    )
    assert "envelope_id" in ack
    await harness.slack.wait_for("chat.update", where=is_card)
    [(job, _)] = await harness.jobs()
    assert (job.prompt, job.state) == ("a fox over socket mode", JobState.UPLOADED)
    async with aiohttp.ClientSession() as session, session.post(harness.events_url, data="x") as response:
        assert response.status in (404, 405)


async def test_without_settings_the_process_prints_a_checklist_and_exits(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)},
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 2
    text = err.decode()
    assert "SLACK_BOT_TOKEN: missing" in text
    assert "OXEN_API_KEY: missing" in text
    assert "SLACK_SIGNING_SECRET: missing" in text
    assert "Traceback" not in text + out.decode()


async def test_the_real_process_serves_a_signed_command_and_stops_on_sigterm(
    fake_slack: FakeSlack, fake_oxen: FakeOxen, tmp_path: Path
) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "SLACK_BOT_TOKEN": fake_slack.bot_token,
        "SLACK_SIGNING_SECRET": fake_slack.signing_secret,
        "SLACK_API_URL": fake_slack.api_url,
        "OXEN_API_KEY": fake_oxen.api_key,
        "OXEN_API_URL": fake_oxen.url,
        "OXEN_POLL_INTERVAL": "0.05",
        "DATABASE_PATH": str(tmp_path / "db" / "dreamboard.sqlite3"),
        "HOST": "127.0.0.1",
        "PORT": "0",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", env=env, cwd=Path(__file__).parents[2], stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    lines: list[str] = []
    port = None
    while port is None:
        line = (await asyncio.wait_for(process.stdout.readline(), 20)).decode()
        assert line, f"the bot exited early: {lines}"
        lines.append(line)
        found = re.search(r"http on 127\.0\.0\.1:(\d+)", line)
        port = int(found.group(1)) if found else None

    response = await fake_slack.send_command(
        f"http://127.0.0.1:{port}/slack/events", "a fox from a real process"
    )
    assert response.status == 200
    [complete] = await fake_slack.wait_for("files.completeUploadExternal", timeout=20)
    assert complete.params["thread_ts"] == fake_slack.messages("C1")[0]["ts"]

    process.send_signal(signal.SIGTERM)
    rest, _ = await asyncio.wait_for(process.communicate(), 30)
    output = "".join(lines) + rest.decode()
    assert process.returncode == 0
    assert '"message": "stopped"' in output
    for secret in (fake_slack.bot_token, fake_slack.signing_secret, fake_oxen.api_key):
        assert secret not in output


async def test_a_start_that_fails_closes_what_it_opened(harness: Harness) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match="address already in use"):
            await harness.start(port=taken.getsockname()[1])
    assert harness.running is None
    # SQLite removes the write-ahead log when the last connection to the file closes cleanly.
    assert not harness.database.with_name(harness.database.name + "-wal").exists()
    await harness.start(port=0)
    await harness.generate("a fox after a failed start")
    assert harness.oxen.subscriber_count() == 1
