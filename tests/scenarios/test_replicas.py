"""Replicas of `python -m bot` on one database (issue 15): the harness (tests/scenarios/replicas.py) with
one replica on SQLite, the two things it models for several (the load balancer, and Socket Mode's one
random connection per envelope), and several replicas on PostgreSQL sharing the work, taking over the
jobs of one killed mid-run, and holding each user's caps across all of them."""

from __future__ import annotations

import asyncio
import functools
import io
import json
import random
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import aiohttp
import pytest
from aiohttp import web
from PIL import Image

from bot.store.model import JobState
from bot.views import blocks as views
from tests.fakes.oxen import FakeOxen
from tests.fakes.ratelimits import RateLimits
from tests.fakes.slack import FakeSlack
from tests.scenarios.harness import stored_jobs
from tests.scenarios.replicas import WAIT, LoadBalancer, Replicas, assert_each_delivered_once


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """The replicas' one database (SQLite until the Postgres store lands)."""
    return f"sqlite:///{tmp_path / 'shared' / 'dreamboard.sqlite3'}"


@pytest.fixture
async def bots(
    fake_slack: FakeSlack, fake_oxen: FakeOxen, tmp_path: Path, database_url: str
) -> AsyncIterator[Replicas]:
    async with Replicas(fake_slack, fake_oxen, tmp_path, database_url=database_url) as replicas:
        yield replicas


async def test_one_replica_behind_the_balancer_killed_mid_run_delivers_every_job_once(
    bots: Replicas, fake_slack: FakeSlack, fake_oxen: FakeOxen
) -> None:
    await bots.start(1)
    first = bots.bots[0].url
    fake_oxen.hold()
    for n in range(3):
        await bots.command(f"fox number {n}", user=f"U{n % 2}")
    await fake_oxen.recorder.wait_for("POST /ai/queue", count=3, timeout=20)
    await bots.kill(0)
    fake_oxen.release()
    await bots.restart(0)
    jobs = await bots.delivered(3)
    assert_each_delivered_once(fake_slack, fake_oxen, jobs, log=bots.log())
    assert bots.balancer.routed[:3] == [first] * 3, "each command went through the balancer"
    assert bots.balancer.backends == [bots.bots[0].url] != [first], "the restarted process replaced it"


def png(colour: str) -> bytes:
    output = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(output, format="PNG")
    return output.getvalue()


async def test_one_replica_in_socket_mode_hosts_references_through_the_balancer(
    fake_slack: FakeSlack, fake_oxen: FakeOxen, tmp_path: Path, database_url: str
) -> None:
    async with Replicas(fake_slack, fake_oxen, tmp_path, database_url=database_url, mode="socket") as bots:
        await bots.start(1)
        await bots.command("a lighthouse")
        [(base, _)] = await bots.delivered(1)
        image = png("orange")
        file = fake_slack.add_file(image, name="ref.png")
        reply = fake_slack.human_message("C1", "in this style", thread_ts=base.root_ts, files=[file])
        envelope = fake_slack.event_envelope(reply)
        await fake_slack.socket_send("events_api", envelope, accepts_response_payload=False)
        [_, (iteration, images)] = await bots.delivered(2)
    assert (iteration.state, iteration.parent_id, len(images)) == (JobState.UPLOADED, base.id, 1)
    assert {d["via"] for d in fake_slack.delivered_events} == {"socket"}
    attachment_url, _ = fake_oxen.submissions[-1]["input_image"]
    assert attachment_url.startswith(bots.balancer.url + "/refs/"), "PUBLIC_BASE_URL is the balancer"
    assert fake_oxen.fetched_references[-1][0] == image


# -- the load balancer -----------------------------------------------------------------------------


class Backend:
    """A replica stand-in: answers with its name, or (`drop`) reads the request and closes the connection
    without an answer."""

    def __init__(self, name: str, *, drop: bool = False) -> None:
        self.name = name
        self.drop = drop
        self.received: list[bytes] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> Backend:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._answer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        self.received.append(await request.read())
        if self.drop:
            assert request.transport is not None
            request.transport.close()
        return web.json_response({"from": self.name, "path": request.path_qs})


async def post(url: str, body: bytes) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.post(url, data=body) as response:
        return response.status, await response.text()


async def test_the_balancer_sends_requests_round_robin_and_skips_a_replica_that_refuses_connections() -> None:
    async with LoadBalancer() as balancer, Backend("a") as a, Backend("b") as b:
        gone = Backend("gone")
        async with gone:
            dead = gone.url  # closed below: its port refuses connections
        balancer.backends += [a.url, dead, b.url]
        answers = [await post(f"{balancer.url}/slack/events?n={n}", b"body %d" % n) for n in range(4)]
    assert [json.loads(text)["from"] for _, text in answers] == ["a", "b", "a", "b"]
    assert [status for status, _ in answers] == [200] * 4
    assert json.loads(answers[0][1])["path"] == "/slack/events?n=0"
    assert (a.received, b.received) == ([b"body 0", b"body 2"], [b"body 1", b"body 3"])


async def test_a_request_a_replica_received_but_never_answered_is_502_and_not_sent_again() -> None:
    async with LoadBalancer() as balancer, Backend("dropping", drop=True) as dropping, Backend("b") as b:
        balancer.backends += [dropping.url, b.url]
        status, _ = await post(f"{balancer.url}/slack/events", b"once")
    assert status == 502
    assert (dropping.received, b.received) == ([b"once"], [])


# -- Socket Mode: one random connection per envelope ----------------------------------------------


async def test_each_envelope_goes_to_exactly_one_of_several_connections(fake_slack: FakeSlack) -> None:
    fake_slack.socket_choice = random.Random(7)
    received: dict[int, list[str]] = {0: [], 1: [], 2: []}
    async with aiohttp.ClientSession() as session:
        sockets = [await session.ws_connect(fake_slack.url + "/socket-mode") for _ in received]
        hellos = [await ws.receive_json() for ws in sockets]

        async def serve(index: int) -> None:
            async for message in sockets[index]:
                envelope = json.loads(message.data)
                received[index].append(envelope["payload"]["n"])
                await sockets[index].send_json({"envelope_id": envelope["envelope_id"]})

        servers = [asyncio.create_task(serve(index)) for index in received]
        for n in range(30):
            await fake_slack.socket_send("interactive", {"n": str(n)}, accepts_response_payload=False)
        for ws in sockets:
            await ws.close()
        await asyncio.gather(*servers)
    assert [hello["num_connections"] for hello in hellos] == [1, 2, 3]
    assert sorted(n for names in received.values() for n in names) == sorted(str(n) for n in range(30))
    assert all(received.values()), f"every connection got some of the envelopes: {received}"
    assert fake_slack.socket_deliveries == [
        index for n in range(30) for index, names in received.items() if str(n) in names
    ]


SOCKET_CLIENT = """
import asyncio, sys, aiohttp
async def main():
    async with aiohttp.ClientSession() as session, session.ws_connect(sys.argv[1]) as ws:
        print((await ws.receive_json())["type"], flush=True)
        async for _ in ws:
            pass
asyncio.run(main())
"""
"""A Socket Mode client process: prints the type of Slack's first message (hello), then reads until killed."""


async def test_a_connection_whose_process_was_killed_gets_no_more_envelopes(fake_slack: FakeSlack) -> None:
    command = (sys.executable, "-c", SOCKET_CLIENT, fake_slack.url + "/socket-mode")
    pipe = asyncio.subprocess.PIPE
    clients: list[asyncio.subprocess.Process] = []
    try:
        for _ in range(2):  # one after the other, so that connection 0 is the first client's
            client = await asyncio.create_subprocess_exec(*command, stdout=pipe)
            clients.append(client)
            assert client.stdout is not None
            assert await asyncio.wait_for(client.stdout.readline(), WAIT) == b"hello\n"
        assert fake_slack.socket_connections() == 2
        clients[0].kill()
        await clients[0].wait()
        await fake_slack.recorder.wait_until(lambda: fake_slack.socket_connections() == 1, WAIT)
        for _ in range(5):
            with pytest.raises(TimeoutError):  # the client never acknowledges
                await fake_slack.socket_send("interactive", {}, accepts_response_payload=False, timeout=0.01)
        assert fake_slack.socket_deliveries == [1] * 5, "only the live connection is sent envelopes"
    finally:
        for client in clients:
            if client.returncode is None:
                client.kill()
            await client.wait()
    await fake_slack.recorder.wait_until(lambda: fake_slack.socket_connections() == 0, WAIT)
    with pytest.raises(ConnectionError):
        await fake_slack.socket_send("interactive", {}, accepts_response_payload=False)


# -- several replicas on PostgreSQL ----------------------------------------------------------------

MAX_ACTIVE_PER_USER = 2
SHARED_SETTINGS = {
    "MAX_ACTIVE_PER_USER": str(MAX_ACTIVE_PER_USER),
    "MAX_CONCURRENT_JOBS": "4",  # each replica's own slots
    "LEASE_SECONDS": "2",  # a killed replica's jobs go to the others once their lease runs out
}
USERS = [f"U{n:02d}" for n in range(20)]
BUSY_SPEED = 50.0
"""Slack's clock for the 200-job scenarios: 200 jobs make about 700 chat.update calls, and Tier 3 (50 a
minute per app, shared by every replica) would take over 10 minutes of Slack's time for them."""


@pytest.fixture
async def busy_slack() -> AsyncIterator[FakeSlack]:
    """A running FakeSlack at BUSY_SPEED (tests/fakes/ratelimits.py: the bots are told the same factor),
    failing the test on any payload refused as invalid Block Kit, as `fake_slack` does."""
    async with FakeSlack(rate_limits=RateLimits(speed=BUSY_SPEED)) as slack:
        yield slack
    assert not slack.rejections, f"Slack refused payloads as invalid Block Kit: {slack.rejections}"


def prompt_of(user: str, text: str) -> str:
    """A prompt naming its user first, so FakeOxen's record tells whose generation it was."""
    return f"{user} {text}"


def peaks_in_flight(oxen: FakeOxen, users: list[str]) -> dict[str, int]:
    """Per user, the most generations Oxen had in flight for them at one moment."""
    return {user: oxen.peak_in_flight(prompt_of(user, "")) for user in users}


@pytest.mark.timeout(400)  # generous: real processes and 200 jobs on a 2-core CI running 4 suites
@pytest.mark.parametrize(("mode", "count"), [("http", 2), ("socket", 3)])
async def test_replicas_share_200_jobs_take_over_a_killed_ones_and_hold_each_users_cap_across_them(
    busy_slack: FakeSlack,
    fake_oxen: FakeOxen,
    tmp_path: Path,
    postgres_url: str,
    mode: Literal["http", "socket"],
    count: int,
) -> None:
    fake_oxen.latency = 0.05
    channels = [f"C{user}" for user in USERS]
    async with Replicas(
        busy_slack,
        fake_oxen,
        tmp_path,
        database_url=postgres_url,
        mode=mode,
        read_jobs=functools.partial(stored_jobs, postgres_url),
    ) as bots:
        await bots.start(count, **SHARED_SETTINGS, MAX_QUEUED_PER_USER="10")
        fake_oxen.hold()
        # User by user (each in a channel of their own, which Slack's per-channel limit needs): each
        # user's ten commands reach every replica before the next user's, so any replica could start
        # more of them than the cap allows.
        for user, channel in zip(USERS, channels, strict=True):
            for n in range(10):
                await bots.command(prompt_of(user, f"fox {n}"), user=user, channel=channel)
        # Every job is stored and announced (a command is acked before its job is stored, so a kill in
        # between would lose it: Slack does not send an acked command again), and every replica's slots
        # are taken: the one killed leaves generations in flight and jobs queued.
        await busy_slack.recorder.wait_until(
            lambda: sum(len(busy_slack.messages(channel)) for channel in channels) >= 200, 6 * WAIT
        )
        await fake_oxen.recorder.wait_for("POST /ai/queue", count=4 * count, timeout=6 * WAIT)
        await bots.kill(0)
        fake_oxen.release()
        jobs = await bots.delivered(200, channels=channels, timeout=12 * WAIT)
    assert_each_delivered_once(busy_slack, fake_oxen, jobs, log=bots.log())
    assert {job.channel_id for job, _ in jobs} == set(channels)
    peaks = peaks_in_flight(fake_oxen, USERS)
    assert max(peaks.values()) <= MAX_ACTIVE_PER_USER, f"generations in flight at once, per user: {peaks}"


async def outcome(slack: FakeSlack, prompt: str) -> str:
    """How the command for `prompt` ended: its job was "accepted" (a status message showed it in the
    channel), or its user was "told the cap" (an answer through the command's response_url)."""

    def seen() -> str | None:
        if any(prompt in str(call.params.get("text")) for call in slack.calls_to("response_url")):
            return "told the cap"
        if any(prompt in str(call.params.get("text")) for call in slack.calls_to("chat.postMessage")):
            return "accepted"
        return None

    await slack.recorder.wait_until(lambda: seen() is not None, WAIT)
    result = seen()
    assert result is not None
    return result


async def test_each_users_caps_hold_across_replicas(
    fake_slack: FakeSlack, fake_oxen: FakeOxen, tmp_path: Path, postgres_url: str
) -> None:
    queued_cap = 3
    allowed = MAX_ACTIVE_PER_USER + queued_cap
    prompts = [prompt_of("U1", f"{word} foxes") for word in ("one", "two", "three", "four", "five", "six")]
    read_jobs = functools.partial(stored_jobs, postgres_url)
    bots = Replicas(fake_slack, fake_oxen, tmp_path, database_url=postgres_url, read_jobs=read_jobs)
    async with bots:
        await bots.start(2, **SHARED_SETTINGS, MAX_QUEUED_PER_USER=str(queued_cap))
        fake_oxen.hold()
        outcomes = []
        for prompt in prompts:
            await bots.command(prompt, user="U1")
            outcomes.append(await outcome(fake_slack, prompt))
        assert bots.balancer.routed == [bots.bots[0].url, bots.bots[1].url] * 3, "commands alternated"
        assert outcomes == ["accepted"] * allowed + ["told the cap"] * (len(prompts) - allowed), outcomes
        [refusal] = fake_slack.calls_to("response_url")
        assert refusal.params["text"] == views.cap_reached(queued_cap, prompts[-1])["text"]
        assert refusal.params["response_type"] == "ephemeral"
        await fake_oxen.recorder.wait_for("POST /ai/queue", count=MAX_ACTIVE_PER_USER, timeout=WAIT)
        fake_oxen.release()
        jobs = await bots.delivered(allowed)
    assert_each_delivered_once(fake_slack, fake_oxen, jobs, log=bots.log())
    assert fake_oxen.peak_in_flight(prompt_of("U1", "")) == MAX_ACTIVE_PER_USER, "2 held at once, never more"


async def test_one_event_delivered_to_two_replicas_makes_one_job(
    fake_slack: FakeSlack, fake_oxen: FakeOxen, tmp_path: Path, postgres_url: str
) -> None:
    read_jobs = functools.partial(stored_jobs, postgres_url)
    async with Replicas(
        fake_slack, fake_oxen, tmp_path, database_url=postgres_url, read_jobs=read_jobs
    ) as bots:
        await bots.start(2, **SHARED_SETTINGS)
        events_url = bots.balancer.url + "/slack/events"
        mention = fake_slack.human_message("C1", f"<@{fake_slack.bot_user_id}> a paper boat")
        # Slack retries an event it thinks went unanswered (X-Slack-Retry-Num), and sends both a
        # `message` and an `app_mention` for a mention (slack.md); the balancer sends each to the next
        # replica, so both replicas see the request.
        await fake_slack.send_event(events_url, {**mention, "type": "app_mention"}, event_id="EvBOAT")
        await fake_slack.send_event(
            events_url, {**mention, "type": "app_mention"}, event_id="EvBOAT", retry_num=1
        )
        await fake_slack.send_event(events_url, mention)
        jobs = await bots.delivered(1)
    assert bots.balancer.routed[:3] == [bots.bots[0].url, bots.bots[1].url, bots.bots[0].url]
    [(job, _)] = jobs
    assert job.thread_ts == mention["ts"], "the job answers the mention, in its thread"
    assert (len(fake_oxen.submissions), len(fake_oxen.billed)) == (1, 1), "one paid generation"
    assert len(fake_slack.calls_to("files.completeUploadExternal")) == 1, "one upload"
