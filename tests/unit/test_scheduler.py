"""FairScheduler with dummy jobs: limits, caps, fairness, positions, cancellation and shutdown, no I/O."""

from __future__ import annotations

import asyncio

import pytest

from bot.domain.errors import CapReachedError
from bot.jobs.scheduler import FairScheduler

ALICE = ("T", "alice")
BOB = ("T", "bob")


class Jobs:
    """Dummy jobs that run until released, recording the order they started in."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.changed = asyncio.Event()

    async def run(self, job_id: str) -> None:
        self.started.append(job_id)
        self.changed.set()
        await self.gate(job_id).wait()

    def gate(self, job_id: str) -> asyncio.Event:
        return self.gates.setdefault(job_id, asyncio.Event())

    async def settle(self) -> None:
        """Let every task the scheduler created reach its first await. The dummy jobs do no I/O, so a
        few trips through the event loop are deterministic, not a timing guess."""
        for _ in range(5):
            await asyncio.sleep(0)

    async def finish(self, job_id: str) -> None:
        self.gate(job_id).set()
        await self.settle()


@pytest.fixture
def jobs() -> Jobs:
    return Jobs()


def scheduler(jobs: Jobs, *, slots: int = 1, running: int = 3, waiting: int = 10) -> FairScheduler:
    return FairScheduler(jobs.run, slots=slots, running_per_user=running, waiting_per_user=waiting)


async def test_the_slot_limit_holds_and_a_freed_slot_starts_the_next(jobs: Jobs) -> None:
    line = scheduler(jobs, slots=2)
    line.start()
    for job_id in ("a", "b", "c"):
        line.enqueue(ALICE, job_id)
    await jobs.settle()
    assert jobs.started == ["a", "b"]
    assert (line.running_count(), line.waiting_count()) == (2, 1)
    await jobs.finish("a")
    assert jobs.started == ["a", "b", "c"]


async def test_the_user_with_fewest_running_jobs_goes_first(jobs: Jobs) -> None:
    line = scheduler(jobs, slots=1)
    line.start()
    line.enqueue(ALICE, "alice-1")
    await jobs.settle()
    for job_id in ("alice-2", "alice-3"):
        line.enqueue(ALICE, job_id)
    line.enqueue(BOB, "bob-1")
    for job_id in ("alice-1", "bob-1", "alice-2"):
        await jobs.finish(job_id)
    assert jobs.started == ["alice-1", "bob-1", "alice-2", "alice-3"]


async def test_the_running_cap_per_user_leaves_slots_to_others(jobs: Jobs) -> None:
    line = scheduler(jobs, slots=3, running=1)
    line.start()
    line.enqueue(ALICE, "alice-1")
    line.enqueue(ALICE, "alice-2")
    line.enqueue(BOB, "bob-1")
    await jobs.settle()
    assert jobs.started == ["alice-1", "bob-1"]
    await jobs.finish("alice-1")
    assert jobs.started == ["alice-1", "bob-1", "alice-2"]


async def test_admission_is_counted_before_any_await(jobs: Jobs) -> None:
    line = scheduler(jobs, waiting=2)
    first, second = line.admit(ALICE), line.admit(ALICE)
    with pytest.raises(CapReachedError) as refused:
        line.admit(ALICE)
    assert refused.value.queued == 2
    assert line.admit(BOB).position == 3
    first.withdraw()
    third = line.admit(ALICE)
    second.submit("s")
    third.submit("t")
    with pytest.raises(CapReachedError):
        line.admit(ALICE)


async def test_positions_count_waiting_and_reserved_places(jobs: Jobs) -> None:
    line = scheduler(jobs)
    line.enqueue(ALICE, "waiting")
    ticket = line.admit(BOB)
    assert ticket.position == 2
    ticket.withdraw()
    ticket.withdraw()
    assert line.admit(BOB).position == 2


async def test_a_withdrawn_ticket_never_runs_and_a_submitted_one_does(jobs: Jobs) -> None:
    line = scheduler(jobs, slots=2)
    line.start()
    kept, dropped = line.admit(ALICE), line.admit(ALICE)
    dropped.withdraw()
    dropped.submit("never")
    kept.submit("kept")
    await jobs.settle()
    assert jobs.started == ["kept"]


async def test_a_waiting_job_can_be_dropped(jobs: Jobs) -> None:
    line = scheduler(jobs)
    line.start()
    line.enqueue(ALICE, "running")
    line.enqueue(ALICE, "waiting")
    await jobs.settle()
    assert line.drop_waiting("waiting")
    assert not line.drop_waiting("running")
    await jobs.finish("running")
    assert jobs.started == ["running"]


async def test_nothing_starts_before_start_or_after_stop(jobs: Jobs) -> None:
    line = scheduler(jobs)
    line.enqueue(ALICE, "early")
    await jobs.settle()
    assert jobs.started == []
    line.start()
    await jobs.settle()
    assert jobs.started == ["early"]
    await line.stop(grace=1.0)
    line.enqueue(ALICE, "late")
    await jobs.settle()
    assert jobs.started == ["early"]


async def test_shutdown_lets_a_critical_step_finish(jobs: Jobs) -> None:
    inside = asyncio.Event()
    finished_step: list[str] = []

    async def run(job_id: str) -> None:
        with line.critical(job_id):
            inside.set()
            await jobs.gate(job_id).wait()
            finished_step.append(job_id)
        await asyncio.Event().wait()

    line = FairScheduler(run, slots=1, running_per_user=1, waiting_per_user=1)
    line.start()
    line.enqueue(ALICE, "uploading")
    await inside.wait()
    stopping = asyncio.create_task(line.stop(grace=5.0))
    await jobs.settle()
    assert not stopping.done()
    jobs.gate("uploading").set()
    await stopping
    assert finished_step == ["uploading"]
    assert line.running_count() == 0


async def test_shutdown_cancels_a_critical_step_after_the_grace_period(jobs: Jobs) -> None:
    async def run(job_id: str) -> None:
        with line.critical(job_id):
            await asyncio.Event().wait()

    line = FairScheduler(run, slots=1, running_per_user=1, waiting_per_user=1)
    line.start()
    line.enqueue(ALICE, "stuck")
    await jobs.settle()
    await line.stop(grace=0.01)
    assert line.running_count() == 0


async def test_a_ticket_says_whether_its_job_starts_at_once(jobs: Jobs) -> None:
    line = scheduler(jobs, slots=2, running=1)
    early = line.admit(ALICE)
    assert early.starts_now is False, "not started yet: nothing runs"
    early.withdraw()
    line.start()
    first = line.admit(ALICE)
    assert first.starts_now is True
    first.submit("a1")
    await jobs.settle()
    assert line.admit(ALICE).starts_now is False, "alice is at her running cap"
    bob = line.admit(BOB)
    assert bob.starts_now is False, "alice's reserved place is ahead of bob"


async def test_a_place_told_it_starts_now_holds_a_slot_not_a_place_in_line(jobs: Jobs) -> None:
    line = scheduler(jobs, slots=1)
    line.start()
    first = line.admit(ALICE)
    assert (first.starts_now, first.position) == (True, 1)
    second = line.admit(BOB)
    assert (second.starts_now, second.position) == (False, 1), "alice's job is about to run, not waiting"
    first.withdraw()
    second.withdraw()
    assert line.admit(BOB).starts_now is True, "the withdrawn jobs gave their slot and place back"
