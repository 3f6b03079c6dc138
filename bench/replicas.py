"""Replica throughput (issue 15): jobs per second for 1, 2, 3 … replicas of `python -m bot` on one
throwaway PostgreSQL server, in HTTP mode behind the round-robin balancer of tests/scenarios/replicas.py,
each replica with the same fixed number of generation slots and Oxen taking a fixed time per image, so
the slots and not the CPU bound the throughput."""

from __future__ import annotations

import asyncio
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.fakes.oxen import FakeOxen
from tests.fakes.ratelimits import unlimited
from tests.fakes.slack import FakeSlack
from tests.postgres import PostgresServer, find_binaries, fresh_database, server_account
from tests.scenarios.harness import stored_jobs
from tests.scenarios.replicas import CHANNEL, Replicas, assert_each_delivered_once

CARD = re.compile(r"Result of job (\w+): ")
STARTED = re.compile(r'"message": "job \w+ started ')
"""The log line of a replica starting a job (bot/jobs/pipeline.py), to count the jobs each one ran."""


@dataclass(frozen=True)
class ReplicaParams:
    """One run of the replica bench: every replica count in `counts`, `jobs` 1-image jobs each."""

    counts: tuple[int, ...] = (1, 2, 3)
    jobs: int = 120
    latency: float = 1.0
    """Seconds the fake Oxen takes per generation."""
    concurrency: int = 4
    """MAX_CONCURRENT_JOBS of each replica."""
    users: int = 20
    """Commands come from this many users in turn (each well under MAX_ACTIVE_PER_USER)."""
    rate: float = 200.0
    """Commands per second, far above what the slots can serve, so a queue builds at once."""
    lease_seconds: float = 10.0


QUICK_REPLICAS = ReplicaParams(counts=(1, 2), jobs=6, latency=0.5)


async def replicas(params: ReplicaParams, folder: Path) -> dict[str, Any]:
    """Start one PostgreSQL server, measure each replica count on a fresh database of it, stop it. Like
    the tests' server, the bench drops libpq's PG* variables from its environment first, so that a
    developer's settings do not reach its connections."""
    for name in [name for name in os.environ if name.startswith("PG")]:
        del os.environ[name]
    binaries = find_binaries()
    if binaries is None:
        raise SystemExit("the replica bench needs PostgreSQL's initdb, pg_ctl and postgres binaries")
    server = await asyncio.to_thread(PostgresServer.start, binaries, server_account())
    results: dict[str, Any] = {}
    try:
        for count in params.counts:
            with fresh_database(server) as url:
                results.update(await _measure(params, count, url, folder / f"replicas-{count}"))
    finally:
        await asyncio.to_thread(server.stop)
    first = results[f"jobs_per_s_{params.counts[0]}"]
    for count in params.counts[1:]:
        results[f"speedup_{count}"] = results[f"jobs_per_s_{count}"] / first
    return results


async def _measure(params: ReplicaParams, count: int, url: str, folder: Path) -> dict[str, Any]:
    """`count` replicas on the database `url`: wall time from the first command sent to the last result
    card, with every job checked delivered exactly once."""
    async with (
        FakeSlack(keep_uploads=False, rate_limits=unlimited()) as slack,
        FakeOxen(latency=params.latency) as oxen,
        Replicas(slack, oxen, folder, database_url=url, read_jobs=lambda: stored_jobs(url)) as bots,
    ):
        await bots.start(
            count,
            MAX_CONCURRENT_JOBS=str(params.concurrency),
            MAX_ACTIVE_PER_USER="100",
            MAX_QUEUED_PER_USER="1000",
            DAILY_IMAGES_PER_USER="0",
            DAILY_IMAGES_PER_CHANNEL="0",
            LEASE_SECONDS=f"{params.lease_seconds:g}",
        )
        await oxen.recorder.wait_until(lambda: oxen.subscriber_count() >= count, timeout=30)
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        cpu_before = _cpu_ticks()
        start = loop.time()
        sends = []
        for index in range(params.jobs):
            await asyncio.sleep(max(0.0, start + index / params.rate - loop.time()))
            command = bots.command(f"replica bench {index}", user=f"U{index % params.users:03d}")
            sends.append(asyncio.create_task(command))
        await asyncio.gather(*sends)
        ideal_rounds = math.ceil(math.ceil(params.jobs / count) / params.concurrency)
        timeout = max(120.0, ideal_rounds * params.latency * 4)
        await slack.recorder.wait_until(lambda: len(_cards(slack)) >= params.jobs, timeout)
        busy = _busy_share(cpu_before, _cpu_ticks())
        wall = max(_cards(slack).values()) - started
        jobs = await bots.delivered(params.jobs, timeout=timeout)
        assert_each_delivered_once(slack, oxen, jobs, log=bots.log())
        late = len(slack.late_acks())
        ran = [sum(STARTED.search(line) is not None for line in bot.output) for bot in bots.bots]
    ideal = ideal_rounds * params.latency
    return {
        f"wall_s_{count}": wall,
        f"ideal_s_{count}": ideal,
        f"wall_to_ideal_{count}": wall / ideal,
        f"jobs_per_s_{count}": params.jobs / wall,
        f"late_acks_{count}": float(late),
        f"machine_busy_pct_{count}": busy * 100,
        f"jobs_per_replica_{count}": ran,
    }


def _cards(slack: FakeSlack) -> dict[str, float]:
    """Per job id, when its result card arrived (the first `chat.update` that made it), on the
    recorder's perf_counter clock."""
    first: dict[str, float] = {}
    for call in slack.calls_to("chat.update"):
        found = CARD.match(str(call.params.get("text", "")))
        if found and call.params.get("channel") == CHANNEL:
            first.setdefault(found.group(1), call.at)
    return first


def _cpu_ticks() -> tuple[int, int]:
    """The machine's (busy, total) CPU time so far, in clock ticks: /proc/stat's first eight fields, user
    to steal (guest time is already part of user); idle and iowait are not busy."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def _busy_share(before: tuple[int, int], after: tuple[int, int]) -> float:
    """The share of all cores' time spent busy between two `_cpu_ticks` readings (every process on the
    machine: the replicas, PostgreSQL, the fakes, and anything else running)."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total else 0.0
