"""Completion without the event stream, and the stream's keep-alives, against the fake Oxen on loopback."""

from __future__ import annotations

import itertools
from collections import defaultdict

from bot.app.metrics import Metrics
from bot.backends.oxen import OxenClient
from bot.backends.oxen_events import CompletionWatcher
from tests.fakes.oxen import FakeOxen
from tests.fakes.recorder import Call
from tests.scenarios.harness import Harness


def polls_by_generation(oxen: FakeOxen) -> dict[str, list[Call]]:
    polls: dict[str, list[Call]] = defaultdict(list)
    for call in oxen.recorder.calls_to("GET /ai/queue/{id}"):
        polls[str(call.params["generation_id"])].append(call)
    return polls


async def test_without_the_stream_no_generation_is_polled_more_than_once_a_second(harness: Harness) -> None:
    """OXEN_POLL_INTERVAL 1.5 s and 0.8 s generations, one job after another: the schedule learns the
    model's duration and aims its polls (missing the aim at first, so it polls again a second later),
    and Oxen never sees two polls of one generation less than a second apart."""
    harness.oxen.events_enabled = False
    harness.oxen.latency = 0.8
    await harness.start(oxen_poll_interval=1.5)
    for n in range(6):
        await harness.generate(f"a fox, take {n}")
    polls = polls_by_generation(harness.oxen)
    assert len(polls) == 6
    assert harness.oxen.subscriber_count() == 0
    submitted = harness.oxen.recorder.calls_to("POST /ai/queue")
    assert max(len(calls) for calls in polls.values()) >= 2  # some aims were missed and polled again
    for first, (generation_id, calls) in zip(submitted, polls.items(), strict=True):
        for earlier, later in itertools.pairwise(calls):
            assert later.at - earlier.at >= 1.0, generation_id
        assert len(calls) <= 1 + (calls[-1].at - first.at)


async def test_keep_alives_hold_an_idle_stream_open_and_silence_reopens_it(fake_oxen: FakeOxen) -> None:
    """Keep-alive comments (every 15 s on Oxen, oxen-api.md §3.5; scaled here) are skipped as events but
    keep a stream open past its idle timeout; a stream that goes silent is taken as dead and reopened."""
    fake_oxen.keepalive_interval = 0.02
    client = OxenClient(fake_oxen.url, fake_oxen.api_key, metrics=Metrics())
    watcher = CompletionWatcher(client, idle_timeout=0.3, max_backoff=0.05)
    watcher.start()
    try:
        await fake_oxen.recorder.wait_until(lambda: fake_oxen.keepalives_sent >= 40)  # ≥ 0.8 s idle
        assert len(fake_oxen.recorder.calls_to("GET /events")) == 1
        assert watcher.connected
        [generation_id] = await client.enqueue({"model": "bytedance-seedream-4-5", "prompt": "a fox"})
        await client.poll(generation_id)  # the fake finishes it (latency 0)
        assert await watcher.wait(generation_id, within=5.0) is not None

        fake_oxen.keepalive_interval = None  # the next wait on the stream never ends: silence
        await fake_oxen.recorder.wait_for("GET /events", count=2, timeout=10.0)
    finally:
        await watcher.stop()
        await client.aclose()
