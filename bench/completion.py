"""Scenario 8: how soon a finished generation is noticed and delivered, with Oxen's event stream on and
off (the poll fallback, bot/backends/poll_schedule.py), one job at a time and in a burst."""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import statistics
import time
from collections import defaultdict
from pathlib import Path

from bench.process import BotProcess, start_bot
from bench.scenarios import Params, percentile, wait_for_event_stream
from tests.fakes.oxen import FakeOxen
from tests.fakes.ratelimits import unlimited
from tests.fakes.recorder import Call
from tests.fakes.slack import FakeSlack

POLL = "GET /ai/queue/{id}"
RECORDING_SLACK = 0.05
"""Seconds between the recorder stamping a poll and the fake reading its clock, at most (busy machine)."""
BURST_CARD = re.compile(r"Result of job \w+: burst ")


def _wall(call: Call) -> float:
    """A recorded call's time on the fake Oxen's clock (time.time(); the recorder uses perf_counter)."""
    return call.at + (time.time() - time.perf_counter())


def _polls(oxen: FakeOxen) -> dict[str, list[Call]]:
    polls: dict[str, list[Call]] = defaultdict(list)
    for call in oxen.recorder.calls_to(POLL):
        polls[str(call.params["generation_id"])].append(call)
    return polls


def _noticed_after_end(oxen: FakeOxen, generation_id: str, polls: list[Call]) -> float:
    """Seconds from the generation's end (enqueued + latency, the fake's own rule) to the first poll
    that found it finished. The recorder stamps a poll as it arrives, a moment before the fake looks at
    the clock, so the poll that finished it may be stamped just before `completed_at`: the notice is
    the first poll from then on, and never earlier than `completed_at` itself."""
    generation = oxen.generations[generation_id]
    end = generation.enqueued_at + oxen.latency
    completed = generation.completed_at if generation.completed_at is not None else end
    finished = [_wall(call) for call in polls if _wall(call) >= completed - RECORDING_SLACK]
    return max(min(finished, default=completed), completed) - end


async def completion(params: Params, folder: Path) -> dict[str, float]:
    """Per mode (events on / off; keys suffixed `_events`, `_polling`), on one fresh bot process:
    `completion_jobs` jobs one at a time (the first ones from a cold start), then a burst."""
    result: dict[str, float] = {}
    for events, suffix in ((True, "events"), (False, "polling")):
        async with (
            FakeSlack(keep_uploads=False, rate_limits=unlimited()) as slack,
            FakeOxen(latency=params.completion_latency, image_scale=params.image_scale) as oxen,
        ):
            oxen.events_enabled = events
            bot = await start_bot(
                slack,
                oxen,
                folder / f"completion-{suffix}.sqlite3",
                max_concurrent_jobs=str(params.concurrency),
                max_queued_per_user="1000",
                oxen_poll_interval=str(params.completion_poll_interval),
            )
            try:
                if events:
                    await wait_for_event_stream(oxen)
                measured = {
                    **await _one_at_a_time(params, slack, oxen, bot),
                    **await _burst(params, slack, oxen, bot),
                }
            finally:
                await bot.stop()
        result.update({f"{key}_{suffix}": value for key, value in measured.items()})
    return result


async def _one_at_a_time(
    params: Params, slack: FakeSlack, oxen: FakeOxen, bot: BotProcess
) -> dict[str, float]:
    """Per job: generation end → noticed (the poll that found it finished) and → image in the thread
    (`files.completeUploadExternal`). The first `completion_warmup` jobs teach the schedule the model's
    duration and are left out of the medians (the first one is reported as the cold start)."""
    noticed: list[float] = []
    delivered: list[float] = []
    for index in range(params.completion_jobs):
        shares = len(slack.calls_to("files.completeUploadExternal"))
        submitted = len(oxen.generations)
        await slack.send_command(
            bot.events_url, f"completion {index}", user_id=f"Uc{index:03d}", channel_id="C1"
        )
        [*_, share] = await slack.wait_for("files.completeUploadExternal", count=shares + 1, timeout=120)
        await slack.wait_shared(timeout=60)
        generation_id = list(oxen.generations)[submitted]  # one generation per job
        end = oxen.generations[generation_id].enqueued_at + oxen.latency
        noticed.append(_noticed_after_end(oxen, generation_id, _polls(oxen)[generation_id]))
        delivered.append(_wall(share) - end)
    polls = _polls(oxen)
    warm = params.completion_warmup
    return {
        "noticed_cold_ms": noticed[0] * 1000,
        "noticed_median_ms": statistics.median(noticed[warm:]) * 1000,
        "noticed_max_ms": max(noticed[warm:]) * 1000,
        "delivered_median_ms": statistics.median(delivered[warm:]) * 1000,
        "polls_per_image_single": float(statistics.mean(len(calls) for calls in polls.values())),
        "polls_per_second_per_image_max_single": _fastest_rate(polls),
    }


async def _burst(params: Params, slack: FakeSlack, oxen: FakeOxen, bot: BotProcess) -> dict[str, float]:
    """`completion_burst` jobs sent at `rate`/s through `concurrency` slots: wall time (first command →
    last result card) against the ideal ⌈jobs/slots⌉ × latency; noticed delay, polls per image, the
    busiest second of polls, and the fastest two polls of one generation (as a rate)."""
    jobs = params.completion_burst
    before = set(oxen.generations)
    polls_before = len(oxen.recorder.calls_to(POLL))
    started = time.perf_counter()
    loop = asyncio.get_running_loop()
    start = loop.time()
    sends = []
    for index in range(jobs):
        await asyncio.sleep(max(0.0, start + index / params.rate - loop.time()))
        sends.append(
            asyncio.create_task(
                slack.send_command(
                    bot.events_url, f"burst {index}", user_id=f"U{index % 50:03d}", channel_id="C1"
                )
            )
        )
    await asyncio.gather(*sends)
    cards = await slack.wait_for(
        "chat.update",
        count=jobs,
        where=lambda call: (
            re.match(r"Result of job \w+: burst ", str(call.params.get("text", ""))) is not None
        ),
        timeout=max(120.0, jobs / params.concurrency * params.completion_latency * 4),
    )
    wall = max(card.at for card in cards) - started
    ideal = math.ceil(jobs / params.concurrency) * params.completion_latency
    polls = {g: calls for g, calls in _polls(oxen).items() if g not in before}
    noticed = [_noticed_after_end(oxen, g, calls) for g, calls in polls.items()]
    per_second: dict[int, int] = defaultdict(int)
    for call in oxen.recorder.calls_to(POLL)[polls_before:]:
        per_second[int(call.at)] += 1
    return {
        "burst_wall_s": wall,
        "burst_ideal_s": ideal,
        "burst_wall_to_ideal": wall / ideal,
        "burst_noticed_median_ms": percentile(noticed, 50) * 1000,
        "burst_noticed_p95_ms": percentile(noticed, 95) * 1000,
        "polls_per_image_burst": float(statistics.mean(len(calls) for calls in polls.values())),
        "polls_busiest_second": float(max(per_second.values())),
        "polls_per_second_per_image_max_burst": _fastest_rate(polls),
    }


def _fastest_rate(polls: dict[str, list[Call]]) -> float:
    """1 / the closest two polls of one generation as the fake saw them (0: none was polled twice)."""
    gaps = [b.at - a.at for calls in polls.values() for a, b in itertools.pairwise(calls)]
    return 1 / min(gaps) if gaps else 0.0
