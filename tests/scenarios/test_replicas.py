"""The replica harness (tests/scenarios/replicas.py) with one replica, so it runs on SQLite today; and the two
things it models for several: the load balancer, and Socket Mode's one random connection per envelope."""

from __future__ import annotations

import asyncio
import io
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from PIL import Image

from bot.store.model import JobState
from tests.fakes.oxen import FakeOxen
from tests.fakes.slack import FakeSlack
from tests.scenarios.replicas import LoadBalancer, Replicas, assert_each_delivered_once


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
