"""Starting a bot process (the real one, or the naive baseline) against the fakes, and watching its memory."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.fakes.oxen import FakeOxen
from tests.fakes.slack import FakeSlack

_READY = re.compile(r"http on 127\.0\.0\.1:(\d+)")
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class BotProcess:
    """A running bot process and the port its HTTP server bound."""

    process: asyncio.subprocess.Process
    port: int
    drain: asyncio.Task[None]
    database: Path

    @property
    def events_url(self) -> str:
        """Where signed Slack requests go."""
        return f"http://127.0.0.1:{self.port}/slack/events"

    def peak_rss_mb(self) -> float:
        """Peak resident memory of the process so far (VmHWM), in MiB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        found = re.search(r"VmHWM:\s+(\d+) kB", status)
        return int(found.group(1)) / 1024 if found else float("nan")

    async def stop(self) -> None:
        """SIGTERM, then wait for a clean exit."""
        if self.process.returncode is None:
            self.process.terminate()
            await asyncio.wait_for(self.process.wait(), 60)
        self.drain.cancel()


async def start_bot(
    slack: FakeSlack, oxen: FakeOxen, database: Path, *, module: str = "bot", **settings: str
) -> BotProcess:
    """Start `python -m <module>` in HTTP mode with the fakes' URLs (and point the fake's events at it);
    returns once it listens."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "SLACK_BOT_TOKEN": slack.bot_token,
        "SLACK_SIGNING_SECRET": slack.signing_secret,
        "SLACK_API_URL": slack.api_url,
        "OXEN_API_KEY": oxen.api_key,
        "OXEN_API_URL": oxen.url,
        "DATABASE_PATH": str(database),
        "HOST": "127.0.0.1",
        "PORT": "0",
        "LOG_LEVEL": "INFO",
        # The bot paces its posts on the fake's clock (tests/fakes/ratelimits.py).
        "SLACK_POST_INTERVAL": str(1.0 / slack.rate_limits.speed),
        **{name.upper(): value for name, value in settings.items()},
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    while True:
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        if not line:
            raise RuntimeError(f"{module} exited before it was ready")
        found = _READY.search(line)
        if found:
            break
    bot = BotProcess(process, int(found.group(1)), asyncio.create_task(_discard(process.stdout)), database)
    slack.events_url = bot.events_url  # where the fake delivers the bot's own file_share events
    return bot


async def _discard(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass
