"""The measured scenarios: ack burst, overhead, throughput and memory, each against a fresh bot process."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from bench.process import BotProcess, start_bot
from tests.fakes.images import warm
from tests.fakes.oxen import FakeOxen
from tests.fakes.slack import FakeSlack, SignedResponse


@dataclass(frozen=True)
class Params:
    """Everything a run can vary (the full run and `--quick` differ only here)."""

    burst: int = 1000
    rate: float = 200.0
    latency: float = 5.0
    overhead_jobs_2k: int = 20
    overhead_jobs_4k: int = 10
    throughput_jobs: int = 500
    concurrency: int = 50
    memory_jobs: int = 50
    memory_image_scale: float = 1.0
    image_scale: float = 1.0
    history_rows: int = 100_000
    history_samples: int = 500
    baseline_burst: int = 1000


QUICK = Params(
    burst=30,
    latency=0.3,
    overhead_jobs_2k=4,
    overhead_jobs_4k=2,
    throughput_jobs=20,
    concurrency=5,
    memory_jobs=5,
    memory_image_scale=1 / 16,
    image_scale=1 / 16,
    history_rows=2_000,
    history_samples=50,
    baseline_burst=10,
)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of `values`."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))]


async def open_loop(
    slack: FakeSlack, bot: BotProcess, prompts: list[str], rate: float
) -> list[SignedResponse]:
    """Send one signed `/imagine` per prompt at `rate` per second, without waiting for answers."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    sends = []
    for index, prompt in enumerate(prompts):
        await asyncio.sleep(max(0.0, start + index / rate - loop.time()))
        sends.append(
            asyncio.create_task(
                slack.send_command(bot.events_url, prompt, user_id=f"U{index % 100:03d}", channel_id="C1")
            )
        )
    return list(await asyncio.gather(*sends))


def count_jobs(database: Path, prefix: str) -> tuple[int, int]:
    """(rows, distinct prompts) of the jobs whose prompt starts with `prefix`."""
    with sqlite3.connect(database) as db:
        rows, distinct = db.execute(
            "SELECT COUNT(*), COUNT(DISTINCT prompt) FROM generations WHERE prompt LIKE ?", (prefix + "%",)
        ).fetchone()
    return int(rows), int(distinct)


async def ack_burst(
    params: Params, folder: Path, *, module: str = "bot", count: int | None = None
) -> dict[str, float]:
    """Scenario 1 (and 6 with module="bench.baseline"): time to HTTP 200 for an open-loop burst."""
    count = count or params.burst
    async with (
        FakeSlack(keep_uploads=False) as slack,
        FakeOxen(latency=params.latency, image_scale=params.image_scale) as oxen,
    ):
        database = folder / f"ack-{module}.sqlite3"
        bot = await start_bot(slack, oxen, database, module=module, max_queued_per_user="1000")
        try:
            responses = await open_loop(slack, bot, [f"burst {i}" for i in range(count)], params.rate)
            if module == "bot":
                await slack.wait_for("chat.postMessage", count=count, timeout=120)
        finally:
            await bot.stop()
    latencies = [response.elapsed * 1000 for response in responses]
    result = {
        "ack_p50_ms": percentile(latencies, 50),
        "ack_p99_ms": percentile(latencies, 99),
        "ack_max_ms": max(latencies),
        "ack_over_3s": float(sum(1 for ms in latencies if ms > 3000)),
        "ack_errors": float(sum(1 for response in responses if response.status != 200)),
    }
    if module == "bot":
        rows, distinct = count_jobs(database, "burst ")
        result["lost_commands"] = float(count - distinct)
        result["duplicate_jobs"] = float(rows - distinct)
    return result


async def end_to_end(
    params: Params,
    folder: Path,
    *,
    jobs: int,
    size: str,
    label: str,
    textured: bool = False,
    scale: float | None = None,
) -> tuple[list[float], float, float]:
    """Run `jobs` concurrent jobs; returns (seconds from command to result card per job, wall seconds,
    peak RSS MiB of the bot)."""
    scale = params.image_scale if scale is None else scale
    await asyncio.to_thread(warm, size, None, scale, textured=textured)
    async with (
        FakeSlack(keep_uploads=False) as slack,
        FakeOxen(latency=params.latency, image_scale=scale, textured=textured) as oxen,
    ):
        bot = await start_bot(
            slack,
            oxen,
            folder / f"{label}.sqlite3",
            max_concurrent_jobs=str(params.concurrency),
            max_queued_per_user="1000",
        )
        try:
            prompts = [f"{label} {index}" for index in range(jobs)]
            sent: dict[str, float] = {}
            loop = asyncio.get_running_loop()
            start = loop.time()
            sends = []
            for index, prompt in enumerate(prompts):
                await asyncio.sleep(max(0.0, start + index / params.rate - loop.time()))
                sent[prompt] = time.perf_counter()
                sends.append(
                    asyncio.create_task(
                        slack.send_command(
                            bot.events_url, f"{prompt} --size {size}", user_id=f"U{index % 50:03d}"
                        )
                    )
                )
            await asyncio.gather(*sends)
            cards = await slack.wait_for(
                "chat.postMessage",
                count=jobs,
                where=lambda call: str(call.params.get("text", "")).startswith("Result of job"),
                timeout=max(120.0, jobs / params.concurrency * params.latency * 3),
            )
            peak = bot.peak_rss_mb()
        finally:
            await bot.stop()
    done = {str(card.params["text"]).split(": ", 1)[1]: card.at for card in cards}
    durations = [done[prompt] - sent[prompt] for prompt in prompts]
    wall = max(done.values()) - min(sent.values())
    return durations, wall, peak


async def overhead(params: Params, folder: Path) -> dict[str, float]:
    """Scenario 2: end-to-end time minus the fake Oxen latency, as a share of that latency."""
    result: dict[str, float] = {}
    for size, jobs in (("2K", params.overhead_jobs_2k), ("4K", params.overhead_jobs_4k)):
        durations, _, _ = await end_to_end(params, folder, jobs=jobs, size=size, label=f"overhead-{size}")
        shares = [(duration - params.latency) / params.latency * 100 for duration in durations]
        key = size.lower()
        result[f"overhead_median_pct_{key}"] = percentile(shares, 50)
        result[f"overhead_p95_pct_{key}"] = percentile(shares, 95)
        result[f"overhead_median_ms_{key}"] = percentile([(d - params.latency) * 1000 for d in durations], 50)
    return result


async def throughput(params: Params, folder: Path) -> dict[str, float]:
    """Scenario 3: many jobs through MAX_CONCURRENT_JOBS slots, against the ideal jobs/slots × latency."""
    _, wall, _ = await end_to_end(params, folder, jobs=params.throughput_jobs, size="2K", label="throughput")
    ideal = params.throughput_jobs / params.concurrency * params.latency
    return {"throughput_wall_s": wall, "throughput_ideal_s": ideal, "throughput_ratio_to_ideal": wall / ideal}


async def memory(params: Params, folder: Path) -> dict[str, float]:
    """Scenario 4: peak RSS of the bot while `memory_jobs` 4K jobs (textured, multi-MB images) run at once."""
    _, _, peak = await end_to_end(
        params,
        folder,
        jobs=params.memory_jobs,
        size="4K",
        label="memory",
        textured=True,
        scale=params.memory_image_scale,
    )
    return {"peak_rss_mb_50x4k": peak}
