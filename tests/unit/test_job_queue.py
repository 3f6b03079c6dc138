"""The shared job line on a real database (both backends): claims, fairness, caps, leases and takeover,
and JobQueue running dummy jobs under leases with an injected clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from bot.domain.errors import CapReachedError
from bot.jobs.queue import JobQueue, line_positions
from bot.store.model import Hold, Job, Line, NewJob, QuotaGate
from bot.store.store import Store

LEASE = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    opened = await Store.open(database_url)
    yield opened
    await opened.close()


def new_job(job_id: str, user: str) -> NewJob:
    return NewJob(
        id=job_id, team_id="T1", channel_id="C1", user_id=user, prompt=f"fox {job_id}",
        model="bytedance-seedream-4-5", size="2K", aspect_ratio=None, seed=1, seed_given=False, n=1,
    )  # fmt: skip


async def claim(store: Store, owner: str, now: float, cap: int = 3) -> str | None:
    job = await store.claim_next(owner, now=now, until=now + LEASE, running_cap=cap)
    return job.id if job else None


def test_positions_replay_the_fair_choice() -> None:
    line = Line(
        waiting=[("a2", "T", "alice"), ("a3", "T", "alice"), ("b1", "T", "bob"), ("c1", "T", "carol")],
        running={("T", "alice"): 1},
        served={("T", "alice"): 5.0},
    )
    assert line_positions(line, 3) == {"b1": 1, "c1": 2, "a2": 3, "a3": 4}
    capped = Line(waiting=line.waiting[:3], running={("T", "alice"): 1}, served={})
    assert line_positions(capped, 1) == {"b1": 1, "a2": 2, "a3": 3}, "a user at the cap goes after others"


async def test_claims_follow_the_positions_the_line_shows_and_hold_the_running_cap(store: Store) -> None:
    for job_id, user in [("a1", "alice"), ("a2", "alice"), ("a3", "alice"), ("b1", "bob"), ("c1", "carol")]:
        await store.insert_job(new_job(job_id, user))
    now = 1000.0
    predicted = line_positions(await store.line(now), 2)
    claimed = []
    for owner in ["r1", "r2", "r1", "r2"]:
        now += 1
        claimed.append(await claim(store, owner, now, cap=2))
    assert claimed == ["a1", "b1", "c1", "a2"]
    assert claimed == sorted(predicted, key=predicted.__getitem__)[:4], "the SQL and the replay agree"
    assert await claim(store, "r3", now + 1, cap=2) is None, "alice has 2 running, on two replicas"
    assert line_positions(await store.line(now + 1), 2) == {"a3": 1}


async def test_the_waiting_cap_is_counted_in_the_insert_across_replicas(store: Store) -> None:
    await store.insert_job(new_job("a1", "alice"), Hold("r1", 2000.0, max_waiting=2))
    await store.insert_job(new_job("a2", "alice"), Hold("r2", 2000.0, max_waiting=2))
    with pytest.raises(CapReachedError) as refused:
        await store.insert_job(new_job("a3", "alice"), Hold("r1", 2000.0, max_waiting=2))
    assert refused.value.queued == 2
    assert await store.get_job("a3") is None
    await store.insert_job(new_job("b1", "bob"), Hold("r1", 2000.0, max_waiting=2))
    await store.release(["a1"], "r1")
    assert await claim(store, "r2", 1000.0) == "a1"
    await store.insert_job(new_job("a3", "alice"), Hold("r1", 2000.0, max_waiting=2))


async def test_a_held_job_waits_for_its_announcer_or_its_hold_to_expire(store: Store) -> None:
    await store.insert_job(new_job("a1", "alice"), Hold("r1", 1030.0))
    assert await claim(store, "r2", 1000.0) is None, "r1 is announcing it"
    assert await claim(store, "r2", 1031.0) == "a1", "r1 went quiet: the job is in line"
    await store.insert_job(new_job("b1", "bob"), Hold("r1", 1030.0))
    started = await store.claim_held("b1", "r1", now=1000.0, until=1030.0, running_cap=3)
    assert started is not None
    assert started.id == "b1"
    assert await store.claim_held("b1", "r2", now=1000.0, until=1030.0, running_cap=3) is None


async def test_an_expired_lease_is_taken_over_and_the_old_holder_learns_it(store: Store) -> None:
    await store.insert_job(new_job("a1", "alice"))
    assert await claim(store, "r1", 1000.0) == "a1"
    assert await store.renew(["a1"], "r1", 1040.0) == {"a1": False}
    assert await claim(store, "r2", 1039.0) is None, "renewed: still r1's"
    assert await claim(store, "r2", 1041.0) == "a1", "r1 stopped renewing"
    assert await store.renew(["a1"], "r1", 1080.0) == {}, "r1 lost it"
    assert await store.holder("a1", 1042.0) == "r2"
    assert await store.request_cancel("a1")
    assert await store.renew(["a1"], "r2", 1080.0) == {"a1": True}, "the holder sees the cancel"


async def test_a_released_job_waits_for_a_start_up_and_an_interrupted_one_goes_at_once(store: Store) -> None:
    await store.insert_job(new_job("a1", "alice"))
    await store.insert_job(new_job("b1", "bob"))
    assert await claim(store, "r1", 1000.0) == "a1"
    assert await claim(store, "r1", 1000.0) == "b1"
    await store.release(["a1"], "r1")
    await store.release(["b1"], "r1", at_once=True)
    assert await claim(store, "r2", 1001.0) == "b1", "interrupted by shutdown: anyone takes it"
    assert await claim(store, "r2", 1001.0) is None, "a1's run ended (its card may have failed)"
    assert await store.reopen_released("r3") == 1
    assert await claim(store, "r3", 1002.0) == "a1"


class Dummies:
    """Dummy jobs: each waits for its gate, then makes its one outside effect inside `critical`;
    `changed` (one event for all replicas) is set at every step."""

    def __init__(self, changed: asyncio.Event) -> None:
        self.queue: JobQueue | None = None
        self.started: list[str] = []
        self.effects: list[str] = []
        self.cancelled: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.changed = changed

    async def run(self, job_id: str) -> None:
        self.started.append(job_id)
        self.changed.set()
        assert self.queue is not None
        try:
            await self.gate(job_id).wait()
            with self.queue.critical(job_id):
                self.effects.append(job_id)
                self.changed.set()
        except asyncio.CancelledError:
            self.cancelled.append(job_id)
            self.changed.set()
            raise

    def gate(self, job_id: str) -> asyncio.Event:
        return self.gates.setdefault(job_id, asyncio.Event())

    async def until(self, done: Callable[[], bool]) -> None:
        async with asyncio.timeout(10):
            while not done():
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
def clock() -> Clock:
    """The replicas' one wall clock (they share a host's time)."""
    return Clock()


@pytest.fixture
async def replicas(store: Store, clock: Clock) -> AsyncIterator[Callable[[str], tuple[JobQueue, Dummies]]]:
    made: list[tuple[JobQueue, Dummies]] = []
    changed = asyncio.Event()

    def make(owner: str) -> tuple[JobQueue, Dummies]:
        dummies = Dummies(changed)
        dummies.queue = JobQueue(
            store, dummies.run, owner=owner, slots=1, running_per_user=3, waiting_per_user=10,
            lease_seconds=LEASE, poll_interval=0.02, clock=clock,
        )  # fmt: skip
        made.append((dummies.queue, dummies))
        return dummies.queue, dummies

    yield make
    for queue, dummies in made:
        for gate in dummies.gates.values():
            gate.set()
        await queue.stop(1)


async def running_a1(store: Store, replicas: Callable[[str], tuple[JobQueue, Dummies]]) -> Dummies:
    """Replica r1, started, running job a1 (it stored and announced it); its dummies."""
    one, first = replicas("r1")
    await one.start()
    await submit(one, store, "a1")
    await first.until(lambda: first.started == ["a1"])
    return first


async def submit(queue: JobQueue, store: Store, job_id: str) -> None:
    job, _ = await store.insert_job(new_job(job_id, job_id[0]), queue.hold())
    [ticket] = await queue.tickets([job])
    await ticket.submit()


async def test_replicas_share_the_line_within_their_slots(
    store: Store, replicas: Callable[[str], tuple[JobQueue, Dummies]]
) -> None:
    (one, first), (two, second) = replicas("r1"), replicas("r2")
    await one.start()
    await two.start()
    for job_id in ["a1", "b1", "c1"]:
        await submit(one, store, job_id)
    await first.until(lambda: len(first.started) == 1)
    await second.until(lambda: len(second.started) == 1)
    assert sorted(first.started + second.started) == ["a1", "b1"], "one slot each, oldest first"
    first.gate(first.started[0]).set()
    await first.until(lambda: len(first.started) == 2)
    assert first.started[1] == "c1"
    assert second.started == [s for s in ["a1", "b1"] if s not in first.started]


async def test_a_replica_whose_lease_is_stale_stops_before_the_effect_and_the_job_runs_once(
    store: Store, replicas: Callable[[str], tuple[JobQueue, Dummies]], clock: Clock
) -> None:
    first = await running_a1(store, replicas)
    two, second = replicas("r2")
    await two.start()
    clock.now += LEASE  # r1's keeper has not renewed for a whole lease (cut off from the database)
    first.gate("a1").set()
    await first.until(lambda: first.cancelled == ["a1"] or bool(first.effects))
    assert first.effects == [], "no effect without a current lease"
    both = [first, second]
    await second.until(lambda: sum(len(d.started) for d in both) == 2)
    for dummies in both:
        dummies.gate("a1").set()
    await second.until(lambda: sum(len(d.effects) for d in both) == 1)
    assert sum(len(d.effects) for d in both) == 1, "taken over and resumed once"


async def test_a_lost_lease_stops_the_job_and_a_cancel_asked_elsewhere_reaches_the_holder(
    store: Store, replicas: Callable[[str], tuple[JobQueue, Dummies]], clock: Clock
) -> None:
    first = await running_a1(store, replicas)
    one = first.queue
    assert one is not None
    two, second = replicas("r2")
    cancels: list[str] = []

    async def cancel(job_id: str) -> None:
        cancels.append(job_id)
        second.changed.set()

    two.cancel_requested = cancel
    clock.now += LEASE + 1  # r1 is silent for longer than a lease: r2 takes the job over
    await two.start()
    await second.until(lambda: second.started == ["a1"])
    await one.renew()
    await first.until(lambda: first.cancelled == ["a1"])
    assert await store.holder("a1", clock.now) == "r2", "r1 did not give r2's lease away"
    assert await store.request_cancel("a1")
    await two.renew()
    await second.until(lambda: cancels == ["a1"])


class UsedUp(Exception):
    """Today's images are used up (what QuotaPolicy.admit raises, without its wording)."""


async def test_two_replicas_cannot_both_take_the_last_image_of_the_day(database_url: str) -> None:
    one, two = await Store.open(database_url), await Store.open(database_url)
    try:

        def one_image_a_day(user_used: int, channel_used: int) -> None:
            if user_used >= 1:
                raise UsedUp

        gate = QuotaGate(since=0.0, weight_4k=2, admit=one_image_a_day)
        outcomes = await asyncio.gather(
            one.insert_job(new_job("a1", "alice"), quota=gate),
            two.insert_job(new_job("a2", "alice"), quota=gate),
            return_exceptions=True,
        )
        assert sorted(type(outcome).__name__ for outcome in outcomes) == ["UsedUp", "tuple"], outcomes
        assert len((await one.line(0.0)).waiting) == 1, "the refused job was not stored"
    finally:
        await one.close()
        await two.close()


async def test_stopping_lets_a_claim_under_way_finish_and_hands_its_job_back(
    database_url: str, clock: Clock
) -> None:
    claimed, go_on = asyncio.Event(), asyncio.Event()

    class SlowToAnswer(Store):
        """A store whose claims are committed, then answered only once the test says so."""

        async def claim_next(self, owner: str, *, now: float, until: float, running_cap: int) -> Job | None:
            job = await super().claim_next(owner, now=now, until=until, running_cap=running_cap)
            claimed.set()
            await go_on.wait()
            return job

    opened = await Store.open(database_url)
    store = SlowToAnswer(opened.db)
    try:
        await store.insert_job(new_job("a1", "alice"))
        dummies = Dummies(asyncio.Event())
        queue = JobQueue(
            store, dummies.run, owner="r1", slots=1, running_per_user=3, waiting_per_user=10,
            lease_seconds=LEASE, clock=clock,
        )  # fmt: skip
        dummies.queue = queue
        await queue.start()
        await claimed.wait()
        stopping = asyncio.create_task(queue.stop(1))  # runs before the claim is answered
        go_on.set()
        await stopping
        assert dummies.started == [], "a claim answered after stop does not start its job"
        taken = await Store.claim_next(store, "r2", now=clock.now, until=clock.now + LEASE, running_cap=3)
        assert taken is not None, "the job was handed back at once, not left to its lease"
        assert taken.id == "a1"
    finally:
        await opened.close()
