"""Real `python -m bot` processes against the loopback fakes: one (the kill matrix), or several replicas on
one database behind a load balancer (issue 15).

- `BotProcess`: one `python -m bot`, started (returns once it listens), killed with SIGKILL, started
  again; its output is read continuously, so the pipe never fills up and blocks it.
- `LoadBalancer`: what a deployment puts in front of its replicas: `POST /slack/events` and
  `GET /refs/…` each go to one replica, in turn.
- `Replicas`: N processes, each with its own REPLICA_ID, port and data directory, all on the one
  DATABASE_URL the test gives, in HTTP mode (Slack posts to the balancer) or Socket Mode (each replica
  holds its own connection and FakeSlack sends each envelope to one of the open ones, at random; a
  killed replica's connection ends, and FakeSlack sees it go).
- `assert_each_delivered_once`: every job ended with one paid generation per image, one upload message
  and one result card, in whichever channels the jobs were asked in.

A replica scenario is a few lines (`postgres_url` is the fixture of tests/postgres.py; `read_jobs` reads
the stored jobs through a Store on that database, needed for any database but SQLite). To wait until the
work is under way, wait for FakeOxen's submissions (`oxen.recorder.wait_for("POST /ai/queue", count=K)`);
`oxen.peak_in_flight(prefix)` tells afterwards how many generations of one user (a prompt prefix) were in
flight at once, across every replica:

    async def test_two_replicas_share_the_work(fake_slack, fake_oxen, tmp_path, postgres_url):
        async with Replicas(fake_slack, fake_oxen, tmp_path, database_url=postgres_url,
                            read_jobs=functools.partial(stored_jobs, postgres_url)) as bots:
            await bots.start(2, MAX_CONCURRENT_JOBS="2")      # mode="socket" for Socket Mode
            for n in range(200):
                await bots.command(f"U{n % 20} fox {n}", user=f"U{n % 20}")
            await fake_oxen.recorder.wait_for("POST /ai/queue", count=20, timeout=WAIT)
            await bots.kill(1)                                  # SIGKILL the second replica
            jobs = await bots.delivered(200)
        assert_each_delivered_once(fake_slack, fake_oxen, jobs, log=bots.log())
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import Literal, Self

import aiohttp
from aiohttp import web

from bot.store.model import ImageState, Job, JobState
from tests.fakes.oxen import FakeOxen
from tests.fakes.slack import FakeSlack, SignedResponse
from tests.scenarios.harness import StoredJob, stored_jobs

ROOT = Path(__file__).parents[2]
READY = re.compile(r"http on 127\.0\.0\.1:(\d+)")
WAIT = 20.0
"""How long to wait for a process or a stage (four copies of the suite may share two cores)."""
CHANNEL = "C1"


def database_settings(database_url: str) -> dict[str, str]:
    """The environment that points `python -m bot` at `database_url`: a `sqlite:///path` URL as
    DATABASE_PATH (the embedded default), any other as DATABASE_URL."""
    if database_url.startswith("sqlite:///"):
        return {"DATABASE_PATH": database_url.removeprefix("sqlite://")}
    return {"DATABASE_URL": database_url}


class BotProcess:
    """`python -m bot` against the fakes: HTTP mode unless `settings` hold SLACK_APP_TOKEN (then Socket
    Mode, without a signing secret). `home` is its HOME; `settings` are extra environment variables,
    kept for restarts (`start` adds to them)."""

    def __init__(
        self, slack: FakeSlack, oxen: FakeOxen, home: Path, settings: dict[str, str], name: str = "bot"
    ) -> None:
        self.slack = slack
        self.oxen = oxen
        self.home = home
        self.name = name
        self.settings = dict(settings)
        self.output: list[str] = []
        self.port = 0
        self.starts = 0
        self._process: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None

    def _env(self) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self.home),
            "SLACK_BOT_TOKEN": self.slack.bot_token,
            "SLACK_SIGNING_SECRET": self.slack.signing_secret,
            "SLACK_API_URL": self.slack.api_url,
            "SLACK_FILE_HOSTS": self.slack.file_host,
            "OXEN_API_KEY": self.oxen.api_key,
            "OXEN_API_URL": self.oxen.url,
            "OXEN_POLL_INTERVAL": "0.05",
            "HOST": "127.0.0.1",
            "PORT": "0",
            **self.settings,
        }
        if "SLACK_APP_TOKEN" in env:
            env.pop("SLACK_SIGNING_SECRET")
        return env

    @property
    def running(self) -> bool:
        """Whether a process was started and not killed (it may have exited by itself)."""
        return self._process is not None

    async def start(self, **settings: str) -> None:
        """Start a process (with these extra environment variables, kept for restarts) and wait until it
        listens; resuming unfinished jobs begins before that."""
        assert self._process is None, "kill() the running process first"
        self.settings.update(settings)
        self.starts += 1
        self.output.append(f"--- {self.name}, process {self.starts}\n")
        self.home.mkdir(parents=True, exist_ok=True)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot",
            env=self._env(),
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            limit=1 << 20,
        )
        assert process.stdout is not None
        ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._process = process
        self._drain = asyncio.create_task(self._read(process.stdout, ready))
        self.port = await asyncio.wait_for(ready, 30)

    async def _read(self, stream: asyncio.StreamReader, ready: asyncio.Future[int]) -> None:
        while line := await stream.readline():
            text = line.decode(errors="replace")
            self.output.append(text)
            found = READY.search(text)
            if found and not ready.done():
                ready.set_result(int(found.group(1)))
            await self.slack.recorder.notify()  # a waiter re-checks the store at each line
        if not ready.done():
            ready.set_exception(AssertionError(f"{self.name} exited before it was ready:\n" + self.log()))

    async def kill(self) -> None:
        """SIGKILL: no shutdown code runs, whatever was in flight stays in flight."""
        process, self._process = self._process, None
        assert process is not None, f"{self.name} is not running"
        assert process.returncode is None, f"{self.name} had exited by itself:\n{self.log()}"
        process.kill()
        await process.wait()
        assert process.returncode == -signal.SIGKILL
        if self._drain is not None:
            await self._drain

    async def close(self) -> None:
        """Kill the process if one still runs (test teardown)."""
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
        if self._process is not None:
            await self._process.wait()
            self._process = None
        if self._drain is not None:
            await self._drain

    @property
    def url(self) -> str:
        """Base URL of the process's HTTP server."""
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        """The last lines the processes printed (for failure messages)."""
        return "".join(self.output[-200:])


_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host", "upgrade"}
)


class LoadBalancer:
    """A reverse proxy on loopback that sends each request to one replica, round robin, like nginx's
    default `upstream`. It models nginx's defaults (nginx.org/en/docs/http/ngx_http_proxy_module.html,
    `proxy_next_upstream error timeout`): a replica that refuses the connection (killed, not started)
    is skipped, because the request never reached it; a request a replica received and then failed to
    answer is not passed to another (nginx does not retry a POST once it was sent, since 1.9.13): the
    balancer answers 502, which Slack counts as a failed delivery."""

    def __init__(self) -> None:
        self.backends: list[str] = []
        """Base URLs of the replicas taking requests (a killed replica leaves, as a health check would
        take it out)."""
        self.routed: list[str] = []
        """For each request, the replica it went to."""
        self.url = ""
        self._turn = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_route("*", "/{path:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._session is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        for _ in range(len(self.backends)):
            backend = self.backends[self._turn % len(self.backends)]
            self._turn += 1
            try:
                async with self._session.request(
                    request.method,
                    backend + request.path_qs,
                    data=body,
                    headers=headers,
                    allow_redirects=False,
                ) as answer:
                    payload = await answer.read()
                    kept = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP}
                    self.routed.append(backend)
                    return web.Response(status=answer.status, body=payload, headers=kept)
            except aiohttp.ClientConnectorError:
                continue
            except (aiohttp.ClientError, TimeoutError):
                self.routed.append(backend)
                return web.Response(status=502, text="Bad Gateway")
        return web.Response(status=502, text="no replica is reachable")


class Replicas:
    """`count` replicas of `python -m bot` on `database_url`, behind a LoadBalancer (PUBLIC_BASE_URL,
    and in HTTP mode Slack's request URL). `read_jobs` reads every stored job with its images, oldest
    first; by default from the SQLite file of a `sqlite:///` URL."""

    def __init__(
        self,
        slack: FakeSlack,
        oxen: FakeOxen,
        data: Path,
        *,
        database_url: str,
        mode: Literal["http", "socket"] = "http",
        read_jobs: Callable[[], Awaitable[list[StoredJob]]] | None = None,
    ) -> None:
        if read_jobs is None:
            if not database_url.startswith("sqlite:///"):
                raise ValueError("pass read_jobs to read the stored jobs of a database other than SQLite")
            path = Path(database_url.removeprefix("sqlite://"))
            read_jobs = lambda: stored_jobs(path)  # noqa: E731
        self.slack = slack
        self.oxen = oxen
        self.data = data
        self.database_url = database_url
        self.mode = mode
        self.read_jobs = read_jobs
        self.balancer = LoadBalancer()
        self.bots: list[BotProcess] = []

    async def __aenter__(self) -> Self:
        await self.balancer.__aenter__()
        return self

    async def __aexit__(self, *_: object) -> None:
        self.slack.events_url = None
        for bot in self.bots:
            await bot.close()
        await self.balancer.__aexit__()

    async def start(self, count: int, **settings: str) -> None:
        """Start `count` more replicas (`replica-1`, `replica-2`, …; these environment variables on top
        of the defaults), each in turn, and wait until each listens (Socket Mode: until every replica's
        connection is open)."""
        for _ in range(count):
            name = f"replica-{len(self.bots) + 1}"
            env = {
                **database_settings(self.database_url),
                "REPLICA_ID": name,
                "PUBLIC_BASE_URL": self.balancer.url,
                # Each replica paces its posts on the fake's (faster) clock: tests/fakes/ratelimits.py.
                "SLACK_POST_INTERVAL": str(1.0 / self.slack.rate_limits.speed),
                **({"SLACK_APP_TOKEN": self.slack.app_token} if self.mode == "socket" else {}),
                **settings,
            }
            bot = BotProcess(self.slack, self.oxen, self.data / name, env, name=name)
            self.bots.append(bot)
            await self.restart(len(self.bots) - 1)

    async def restart(self, index: int) -> None:
        """Start the `index`-th replica again (after `kill`) and put it back behind the balancer."""
        bot = self.bots[index]
        await bot.start()
        self.balancer.backends.append(bot.url)
        self.slack.events_url = self.balancer.url + "/slack/events"
        if self.mode == "socket":
            live = sum(other.running for other in self.bots)
            await self.slack.recorder.wait_until(lambda: self.slack.socket_connections() >= live, WAIT)

    async def kill(self, index: int) -> None:
        """SIGKILL the `index`-th replica (0-based); the balancer stops sending it requests, and in Socket
        Mode this returns once FakeSlack has seen its connection close (until then Slack, and the fake,
        may still send it envelopes, which nobody acknowledges)."""
        bot = self.bots[index]
        self.balancer.backends.remove(bot.url)
        await bot.kill()
        if self.mode == "socket":
            live = sum(other.running for other in self.bots)
            await self.slack.recorder.wait_until(lambda: self.slack.socket_connections() <= live, WAIT)

    async def command(self, text: str, *, user: str = "U1", channel: str = CHANNEL) -> None:
        """`/imagine <text>` as Slack sends it: signed to the balancer (HTTP mode), or as an envelope on
        one of the replicas' connections (Socket Mode); the ack must be a success."""
        payload = self.slack.command_payload(text, user_id=user, channel_id=channel)
        if self.mode == "socket":
            ack = await self.slack.socket_send("slash_commands", payload, accepts_response_payload=True)
            assert "envelope_id" in ack, ack
            return
        response: SignedResponse = await self.slack.send_command_payload(
            self.balancer.url + "/slack/events", payload
        )
        assert response.status == 200, response.text

    async def delivered(
        self, count: int, *, channels: Collection[str] = (CHANNEL,), timeout: float = 60.0
    ) -> list[StoredJob]:
        """Wait until `count` jobs have shown their result card in `channels`, every share Slack owes has
        landed and the store holds every job as ended (an uploaded one with its card's ts, written after
        Slack answered, then logged); the stored jobs. Re-checked at every Slack call and every line a
        replica logs, never by sleeping."""

        def cards_shown() -> bool:
            return len(result_cards(self.slack, channels)) >= count and not self.slack.shares_pending()

        try:
            async with asyncio.timeout(timeout):
                await self.slack.recorder.wait_until(cards_shown, timeout)
                while True:
                    lines = self._lines()
                    jobs = await self.read_jobs()
                    if len(jobs) >= count and all(_ended(job) for job, _ in jobs):
                        return jobs
                    await self._more_lines_than(lines, timeout)
        except TimeoutError:
            shown = len(result_cards(self.slack, channels))
            states = Counter(job.state.value for job, _ in await self.read_jobs())
            raise AssertionError(
                f"{count} jobs were not delivered within {timeout:g} s: {shown} result cards shown, "
                f"stored jobs by state {dict(states)}\n{self.log()}"
            ) from None

    def _lines(self) -> int:
        return sum(len(bot.output) for bot in self.bots)

    async def _more_lines_than(self, seen: int, timeout: float) -> None:
        await self.slack.recorder.wait_until(lambda: self._lines() > seen, timeout)

    def log(self) -> str:
        """What every replica printed last (for failure messages)."""
        return "".join(bot.log() for bot in self.bots)


def _ended(job: Job) -> bool:
    return job.state in (JobState.FAILED, JobState.CANCELLED) or (
        job.state is JobState.UPLOADED and job.card_ts is not None
    )


def result_cards(slack: FakeSlack, channels: Collection[str]) -> set[str]:
    """The jobs whose result card `channels` show (each as "Result of job <id>")."""
    return {
        str(message["text"]).split(":", 1)[0]
        for channel in channels
        for message in slack.messages(channel)
        if str(message.get("text")).startswith("Result of job")
    }


def assert_each_delivered_once(
    slack: FakeSlack, oxen: FakeOxen, jobs: list[StoredJob], *, log: str = ""
) -> None:
    """Exactly one paid generation per image, one upload message and one result card per job (the status
    message, rewritten), and the step log at its end: uploaded, with the card's ts; `jobs` are all the
    jobs of the test, and their channels hold nothing else."""
    channels = sorted({job.channel_id for job, _ in jobs})
    messages = [message for channel in channels for message in slack.messages(channel)]
    uploads = [message for message in messages if message.get("files")]
    cards = [message for message in messages if str(message.get("text")).startswith("Result of job")]
    completed = [file for file in slack.uploaded_files.values() if file.completed]
    for job, images in jobs:
        assert (job.state, len(images)) == (JobState.UPLOADED, job.n), f"{job}\n{log}"
        assert job.card_ts is not None, job
        # One paid generation per image: the stored ids are distinct, and Oxen ran no other generation
        # for this prompt (a second POST /ai/queue that made a generation would show up here).
        handles = [image.generation_id for image in images]
        assert all(image.state is ImageState.SUCCEEDED for image in images), images
        assert len({handle for handle in handles if handle}) == job.n, images
        made = [g.id for g in oxen.generations.values() if g.params.get("prompt") == job.prompt]
        assert sorted(made) == sorted(str(handle) for handle in handles), f"job {job.id}: generations {made}"
        assert sorted(g for g in oxen.billed if g in made) == sorted(made), f"billed {oxen.billed}"
        # One upload message in the thread, sharing exactly the files the step log recorded.
        file_ids = sorted(str(image.file_id) for image in images)
        shared = [message for message in uploads if message.get("thread_ts") == job.root_ts]
        assert len(shared) == 1, f"job {job.id}: {len(shared)} upload messages: {shared}"
        assert sorted(shared[0]["files"]) == file_ids
        assert sorted(file.id for file in completed if file.thread_ts == job.root_ts) == file_ids
        # One result card: the job's status message, whose ts is stored as the card's.
        mine = [message for message in cards if f"Result of job {job.id}:" in message["text"]]
        assert len(mine) == 1, f"job {job.id}: {len(mine)} result cards"
        assert (mine[0]["ts"], job.card_ts) == (job.status_ts, job.status_ts)
        assert mine[0]["metadata"] == {"event_type": "dreamboard_result", "event_payload": {"job_id": job.id}}
    images_made = sum(job.n for job, _ in jobs)
    assert (len(oxen.generations), len(oxen.billed)) == (images_made, images_made)
    assert (len(uploads), len(cards), len(completed)) == (len(jobs), len(jobs), images_made)
    assert len(messages) == 2 * len(jobs), "a status message (now the card) and an upload message per job"
