"""PollSchedule on a simulated clock: cadence, learning per model, and the one-poll-per-second bound."""

from __future__ import annotations

import itertools
import random
import statistics
from collections.abc import Callable

from bot.backends.poll_schedule import MODELS, Durations, Plan, PollSchedule

MODEL = "bytedance-seedream-4-5"
RTT = 0.004


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def simulate(
    schedule: PollSchedule,
    clock: Clock,
    generation_id: str,
    duration: float,
    *,
    stream_up: Callable[[float], bool] = lambda _: False,
    event_delay: float | None = None,
    polls: dict[str, list[tuple[float, float]]] | None = None,
) -> float:
    """Run one generation to its noticed end the way OxenBackend.wait drives the schedule; returns how
    long after its end the finish was noticed. `polls` collects (sent, answered) per generation."""
    submitted = clock.now
    schedule.submitted(generation_id, MODEL, submitted)
    end = submitted + duration
    sent: list[tuple[float, float]] = []
    while True:
        due = schedule.due(generation_id, stream_up=stream_up(clock.now))
        event_at = end + event_delay if event_delay is not None else None
        if event_at is not None and clock.now < event_at <= due:
            clock.now = event_at
            schedule.woken(generation_id, event_at)
            continue
        clock.now = max(clock.now, due)
        at = schedule.polling(generation_id)
        server_time = at + RTT / 2
        clock.now = at + RTT
        sent.append((at, clock.now))
        finished = server_time >= end
        schedule.answered(generation_id, sent_at=at, finished=finished)
        if finished:
            if polls is not None:
                polls[generation_id] = sent
            return clock.now - end


def test_cold_start_polls_every_slowest_interval() -> None:
    clock = Clock()
    schedule = PollSchedule(slowest=3.0, clock=clock)
    polls: dict[str, list[tuple[float, float]]] = {}
    late = simulate(schedule, clock, "g1", 7.0, polls=polls)
    sent = [at - polls["g1"][0][0] for at, _ in polls["g1"]]
    assert [round(gap, 3) for gap in sent] == [0.0, 3.0, 6.0]  # 3, 6, 9 s after submission
    assert 1.9 < late < 2.1


def test_a_generation_found_after_a_restart_is_polled_at_once_then_every_slowest_interval() -> None:
    clock = Clock()
    schedule = PollSchedule(slowest=3.0, clock=clock)
    assert schedule.due("resumed", stream_up=False) == clock.now
    at = schedule.polling("resumed")
    clock.now += RTT
    schedule.answered("resumed", sent_at=at, finished=False)
    assert schedule.due("resumed", stream_up=False) == at + 3.0


def test_steady_durations_are_learned_until_the_end_is_noticed_within_milliseconds() -> None:
    clock = Clock()
    schedule = PollSchedule(slowest=3.0, clock=clock)
    lateness = [simulate(schedule, clock, f"g{n}", 5.0) for n in range(60)]
    assert lateness[0] > 0.9  # cold: found by the poll at 6 s
    settled = lateness[10:]
    assert statistics.median(settled) < 0.02
    # Once per window the aim probes a little earlier (in case the model got faster) and misses by
    # at most one interval.
    assert sum(late > 0.05 for late in settled) <= len(settled) // 10
    assert max(settled) < 1.05


def test_jittery_durations_are_noticed_within_a_quarter_second_at_the_median() -> None:
    clock = Clock()
    schedule = PollSchedule(slowest=3.0, clock=clock)
    rng = random.Random(7)
    lateness = [simulate(schedule, clock, f"g{n}", rng.uniform(4.95, 5.05)) for n in range(60)]
    assert statistics.median(lateness[20:]) < 0.25


def test_widely_spread_durations_are_still_noticed_sooner_than_by_the_slow_cadence() -> None:
    """With durations spread over seconds no schedule of one poll per second can be exact: the median
    stays under a second (the slow cadence alone gives 1.5 s), with a handful of polls per job."""
    clock = Clock()
    schedule = PollSchedule(slowest=3.0, clock=clock)
    rng = random.Random(3)
    polls: dict[str, list[tuple[float, float]]] = {}
    lateness = [simulate(schedule, clock, f"g{n}", rng.uniform(10, 20), polls=polls) for n in range(80)]
    assert statistics.median(lateness[20:]) < 1.0
    assert statistics.mean(len(polls[f"g{n}"]) for n in range(20, 80)) < 10


def flapping(rate: float) -> Callable[[float], bool]:
    """A stream that goes up and down as time passes."""
    return lambda now: (now * rate) % 2 < 1


def test_no_two_polls_of_a_generation_are_closer_than_a_second() -> None:
    """Every mix of durations, events (early, late, missing) and the stream going up and down."""
    clock = Clock()
    schedule = PollSchedule(slowest=3.0, clock=clock)
    rng = random.Random(11)
    polls: dict[str, list[tuple[float, float]]] = {}
    for n in range(300):
        duration = rng.choice([rng.uniform(0.1, 2.0), rng.uniform(4.9, 5.1), rng.uniform(5, 30)])
        flips = rng.random()
        simulate(
            schedule,
            clock,
            f"g{n}",
            duration,
            stream_up=flapping(flips),
            event_delay=rng.choice([None, 0.001, 0.5]),
            polls=polls,
        )
    for sent in polls.values():
        for (_, answered), (next_sent, _) in itertools.pairwise(sent):
            assert next_sent - answered >= 1.0 - 1e-9


def test_an_event_is_polled_at_once_unless_a_poll_was_answered_within_the_last_second() -> None:
    clock = Clock()
    schedule = PollSchedule(slowest=3.0, clock=clock)
    schedule.submitted("g", MODEL, clock.now)
    clock.now += 3.0
    at = schedule.polling("g")
    clock.now += RTT
    schedule.answered("g", sent_at=at, finished=False)
    schedule.woken("g", clock.now + 0.2)
    assert schedule.due("g", stream_up=True) == clock.now + 1.0
    schedule.woken("g", clock.now + 1.5)
    assert schedule.due("g", stream_up=True) == clock.now + 1.5


def test_with_the_stream_up_the_safety_poll_comes_after_the_expected_end() -> None:
    clock = Clock()
    schedule = PollSchedule(slowest=3.0, clock=clock)
    for n in range(5):
        simulate(schedule, clock, f"g{n}", 5.0, stream_up=lambda _: True, event_delay=0.002)
    plan = schedule.plan(MODEL)
    assert plan is not None
    assert abs(plan.aim - 5.002) < 0.001
    schedule.submitted("next", MODEL, clock.now)
    assert schedule.due("next", stream_up=True) == clock.now + plan.aim + 3.0
    assert schedule.due("next", stream_up=False) == clock.now + 3.0  # a safety poll, then the aim
    clock.now += 3.0
    at = schedule.polling("next")
    clock.now += RTT
    schedule.answered("next", sent_at=at, finished=False)
    assert schedule.due("next", stream_up=False) == at - 3.0 + plan.aim


def test_durations_bisect_towards_the_end_and_tolerate_outliers() -> None:
    durations = Durations(tolerance=0.01)
    assert durations.plan() is None
    durations.add(3.0, 6.0)
    assert durations.plan() == Plan(4.5, 7.0)
    durations.add(4.5, 5.5)
    assert durations.plan() == Plan(5.0, 6.5)
    durations.add(5.0, 5.004)
    assert durations.plan() == Plan(5.004, 6.004)  # within tolerance: aim at the earliest known end
    for _ in range(13):
        durations.add(4.0, 5.004)
    durations.add(40.0, 41.0)  # one slow outlier among 16 does not move the aim
    plan = durations.plan()
    assert plan is not None
    assert plan.aim == 5.004


def test_memory_is_bounded_per_model_and_in_models() -> None:
    clock = Clock()
    schedule = PollSchedule(slowest=3.0, clock=clock, window=4)
    for n in range(MODELS + 5):
        model = f"model-{n}"
        schedule.submitted(f"g{n}", model, clock.now)
        clock.now += 5.0
        at = schedule.polling(f"g{n}")
        schedule.answered(f"g{n}", sent_at=at, finished=True)
    assert schedule.plan("model-0") is None
    assert schedule.plan(f"model-{MODELS + 4}") is not None
