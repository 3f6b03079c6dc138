"""The measured scenarios (ack burst, overhead with jobs one at a time and the SQL count, throughput, memory,
baseline), each against a fresh bot process."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.process import BotProcess, start_bot
from tests.fakes.images import warm
from tests.fakes.oxen import FakeOxen
from tests.fakes.ratelimits import unlimited
from tests.fakes.recorder import Call
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
    one_at_a_time_jobs: int = 10
    completion_poll_interval: float = 3.0
    completion_latency: float = 5.0
    completion_jobs: int = 12
    completion_warmup: int = 5
    completion_burst: int = 200


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
    one_at_a_time_jobs=3,
    completion_poll_interval=0.5,
    completion_latency=0.3,
    completion_jobs=3,
    completion_warmup=1,
    completion_burst=10,
)

SQL_JOB_LATENCY = 1.0
"""The longest generation the counted SQL job may take: it must end within App Home's 5 s throttle
window (bot/features/history.py HOME_MIN_INTERVAL) so its throttled publish has not run yet."""

Then = Callable[[FakeSlack, FakeOxen, BotProcess], Awaitable[dict[str, float]]]
"""A measurement run on a scenario's process once its own load is done (before the process stops)."""


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
    params: Params, folder: Path, *, module: str = "bot", count: int | None = None, then: Then | None = None
) -> dict[str, float]:
    """Scenario 1 (and 6 with module="bench.baseline"): time to HTTP 200 for an open-loop burst."""
    count = count or params.burst
    after: dict[str, float] = {}
    async with (
        FakeSlack(keep_uploads=False, rate_limits=unlimited()) as slack,
        FakeOxen(latency=params.latency, image_scale=params.image_scale) as oxen,
    ):
        database = folder / f"ack-{module}.sqlite3"
        bot = await start_bot(slack, oxen, database, module=module, max_queued_per_user="1000")
        try:
            responses = await open_loop(slack, bot, [f"burst {i}" for i in range(count)], params.rate)
            if module == "bot":
                await slack.wait_for("chat.postMessage", count=count, timeout=120)
            if then is not None:
                after = await then(slack, oxen, bot)
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
    return {**result, **after}


async def end_to_end(
    params: Params,
    folder: Path,
    *,
    jobs: int,
    size: str,
    label: str,
    textured: bool = False,
    scale: float | None = None,
    then: Then | None = None,
) -> tuple[list[float], float, float, dict[str, float]]:
    """Run `jobs` concurrent jobs; returns (seconds from command to result card per job, wall seconds,
    peak RSS MiB of the bot, what `then` measured afterwards on the same process)."""
    scale = params.image_scale if scale is None else scale
    await asyncio.to_thread(warm, size, None, scale, textured=textured)
    async with (
        FakeSlack(keep_uploads=False, rate_limits=unlimited()) as slack,
        FakeOxen(latency=params.latency, image_scale=scale, textured=textured) as oxen,
    ):
        bot = await start_bot(
            slack,
            oxen,
            folder / f"{label}.sqlite3",
            max_concurrent_jobs=str(params.concurrency),
            max_queued_per_user="1000",
        )
        after: dict[str, float] = {}
        try:
            await wait_for_event_stream(oxen)
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
                "chat.update",
                count=jobs,
                where=lambda call: str(call.params.get("text", "")).startswith("Result of job"),
                timeout=max(120.0, jobs / params.concurrency * params.latency * 3),
            )
            peak = bot.peak_rss_mb()
            if then is not None:
                await slack.wait_shared(timeout=60)  # let the batch settle: every share landed
                after = await then(slack, oxen, bot)
        finally:
            await bot.stop()
    done = {str(card.params["text"]).split(": ", 1)[1]: card.at for card in cards}
    durations = [done[prompt] - sent[prompt] for prompt in prompts]
    wall = max(done.values()) - min(sent.values())
    return durations, wall, peak, after


async def overhead(params: Params, folder: Path) -> dict[str, float]:
    """Scenario 2: end-to-end time minus the fake Oxen latency, as a share of that latency, for a batch of
    concurrent jobs; then, on the 2K process, jobs one at a time and the SQL statements of one job."""
    result: dict[str, float] = {}

    async def then(slack: FakeSlack, oxen: FakeOxen, bot: BotProcess) -> dict[str, float]:
        jobs = params.one_at_a_time_jobs
        single = await one_at_a_time(slack, oxen, bot, jobs=jobs, label="single")
        return {
            "overhead_median_ms": statistics.median(single["image"]),
            "overhead_max_ms": max(single["image"]),
            "overhead_card_median_ms": statistics.median(single["card"]),
            "sql_statements_per_job": float(
                await sql_statements_of_one_job(slack, oxen, bot, user=user_id("single", jobs - 1))
            ),
        }

    for size, jobs in (("2K", params.overhead_jobs_2k), ("4K", params.overhead_jobs_4k)):
        durations, _, _, after = await end_to_end(
            params,
            folder,
            jobs=jobs,
            size=size,
            label=f"overhead-{size}",
            then=None if size == "4K" else then,
        )
        result.update(after)
        shares = [(duration - params.latency) / params.latency * 100 for duration in durations]
        key = size.lower()
        result[f"overhead_median_pct_{key}"] = percentile(shares, 50)
        result[f"overhead_p95_pct_{key}"] = percentile(shares, 95)
        result[f"overhead_median_ms_{key}"] = percentile([(d - params.latency) * 1000 for d in durations], 50)
    return result


async def throughput(params: Params, folder: Path) -> dict[str, float]:
    """Scenario 3: many jobs through MAX_CONCURRENT_JOBS slots, against the ideal jobs/slots × latency."""
    _, wall, _, _ = await end_to_end(
        params, folder, jobs=params.throughput_jobs, size="2K", label="throughput"
    )
    ideal = params.throughput_jobs / params.concurrency * params.latency
    return {"throughput_wall_s": wall, "throughput_ideal_s": ideal, "throughput_ratio_to_ideal": wall / ideal}


async def memory(params: Params, folder: Path) -> dict[str, float]:
    """Scenario 4: peak RSS of the bot while `memory_jobs` 4K jobs (textured, multi-MB images) run at once."""
    _, _, peak, _ = await end_to_end(
        params,
        folder,
        jobs=params.memory_jobs,
        size="4K",
        label="memory",
        textured=True,
        scale=params.memory_image_scale,
    )
    return {"peak_rss_mb_50x4k": peak}


async def baseline(params: Params, folder: Path) -> dict[str, float]:
    """Scenario 6: the naive bench/baseline.py under scenario 1's burst, then (same process) jobs one at a
    time like scenario 2's, for the same overhead figure."""

    async def then(slack: FakeSlack, oxen: FakeOxen, bot: BotProcess) -> dict[str, float]:
        single = await one_at_a_time(
            slack, oxen, bot, jobs=params.one_at_a_time_jobs, label="single", naive=True
        )
        return {"overhead_median_ms": statistics.median(single["image"])}

    result = await ack_burst(params, folder, module="bench.baseline", count=params.baseline_burst, then=then)
    keys = ("ack_p50_ms", "ack_p99_ms", "ack_over_3s", "overhead_median_ms")
    return {f"baseline_{key}": result[key] for key in keys}


async def wait_for_event_stream(oxen: FakeOxen) -> None:
    """Return once the bot listens to Oxen's completion events (the measurements assume they are on)."""
    await oxen.recorder.wait_until(lambda: oxen.subscriber_count() >= 1, timeout=30)


def _text(call: Call) -> str:
    return str(call.params.get("text", ""))


def user_id(label: str, index: int) -> str:
    """The user who sends job `index` of `one_at_a_time`."""
    return f"U{label}{index:03d}"


async def one_at_a_time(
    slack: FakeSlack, oxen: FakeOxen, bot: BotProcess, *, jobs: int, label: str, naive: bool = False
) -> dict[str, list[float]]:
    """Jobs one after another, each from its own user, the next sent only once the previous one is quiet
    (for Dreamboard: its result card shown and its share landed). Per job, in ms
    minus the fake Oxen's latency: "image" from sending the signed command to `files.completeUploadExternal`
    reaching Slack (the image appears in the thread), and for Dreamboard "card" to its result card."""
    result: dict[str, list[float]] = {"image": [], "card": []}
    for index in range(jobs):
        prompt = f"{label} {index}"
        shares = len(slack.calls_to("files.completeUploadExternal"))
        sent = time.perf_counter()
        command = asyncio.create_task(
            slack.send_command(bot.events_url, prompt, user_id=user_id(label, index), channel_id="C1")
        )
        [*_, share] = await slack.wait_for("files.completeUploadExternal", count=shares + 1, timeout=120)
        result["image"].append((share.at - sent - oxen.latency) * 1000)
        await command
        if not naive:
            [card] = await slack.wait_for(
                "chat.update",
                where=lambda call, card=f": {prompt}": (
                    _text(call).startswith("Result of job") and _text(call).endswith(card)
                ),
                timeout=60,
            )
            result["card"].append((card.at - sent - oxen.latency) * 1000)
            await slack.wait_shared(timeout=60)
    return result


async def upload_ts_recorded(database: Path, prompt: str, within: float = 10.0) -> None:
    """Wait until the bot has recorded the upload message of the job with `prompt` (its own file_share
    event is handled after Slack's request is answered, so no fake call marks it). Read through a
    connection of its own, which the bot's statement counter does not see."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with contextlib.closing(sqlite3.connect(database)) as db:
            row = db.execute("SELECT upload_ts FROM generations WHERE prompt = ?", (prompt,)).fetchone()
        if row and row[0]:
            return
        await asyncio.sleep(0.02)
    raise RuntimeError(f"the bot never recorded the upload message of {prompt!r}")


async def sql_statements(bot: BotProcess) -> int:
    """The bot's `dreamboard_sql_statements_total`, read from its /metrics."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{bot.port}/metrics") as response,
    ):
        text = await response.text()
    for line in text.splitlines():
        if line.startswith("dreamboard_sql_statements_total "):
            return int(float(line.split()[1]))
    raise RuntimeError("the bot's /metrics has no dreamboard_sql_statements_total")


async def sql_statements_of_one_job(
    slack: FakeSlack, oxen: FakeOxen, bot: BotProcess, *, user: str, prompt: str = "counted job"
) -> int:
    """The SQL statements Dreamboard runs for one 1-image job, from the signed `/imagine` to its result card
    (the status message rewritten, the last step) and its share's file_share event, read from /metrics
    before and after. No App Home publish may run meanwhile (none is due: the bench's users never open App
    Home; checked). The one job before it must be quiet (as `one_at_a_time` leaves it)."""
    publishes = len(slack.calls_to("views.publish"))
    latency, oxen.latency = oxen.latency, min(oxen.latency, SQL_JOB_LATENCY)
    try:
        before = await sql_statements(bot)
        await slack.send_command(bot.events_url, prompt, user_id=user, channel_id="C1")
        await slack.wait_for(
            "chat.update",
            where=lambda call: (
                _text(call).startswith("Result of job") and _text(call).endswith(f": {prompt}")
            ),
            timeout=60,
        )
        await slack.wait_shared(timeout=60)
        await upload_ts_recorded(bot.database, prompt)
        after = await sql_statements(bot)
    finally:
        oxen.latency = latency
    if len(slack.calls_to("views.publish")) != publishes:
        raise RuntimeError("an App Home publish ran while SQL statements were counted; the count includes it")
    return after - before
