"""JobQueue: the line of jobs every replica on one database shares, and this replica's part in it.

Jobs wait in the database, not in memory. A replica with a free slot claims the next one atomically
(Store.claim_next: one replica gets each job), so per-user caps, fairness and queue positions hold across
replicas: the next job is the waiting one of the user with the fewest running jobs (under
MAX_ACTIVE_PER_USER), least recently served, oldest first; MAX_QUEUED_PER_USER is counted when a job
is stored. A claimed job is held under a lease of `lease_seconds`, renewed every third of it while it
runs; a replica that stops renewing (killed, cut off) loses its jobs to the others once the lease
expires, and they resume them from their step log. Before each step with an outside effect (a
submission, an upload: `critical`) the lease must still be safely ours, so a replica cut off from the
database stops before it would repeat another's work. A replica claims when a slot frees, when a job
joins the line here, when a withdrawn job's hold expires, and (unless `exclusive`) every
`poll_interval`, for jobs joining on other replicas and expired leases.

With SQLite one process holds the file (bot/store/database_lock.py), so leases cannot be lost: a
start-up takes over every hold a dead process left, and `exclusive` turns the lease check off (a locked
database must not stop a paid job).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import Any

from bot.store.database import write_patience
from bot.store.model import Hold, Job, Line
from bot.store.store import Store

UserKey = tuple[str, str]
RunJob = Callable[[str], Coroutine[Any, Any, None]]

LEASE_SECONDS = 30.0
"""How long a replica's hold on a job lasts without renewal (LEASE_SECONDS)."""
POLL_INTERVAL = 1.0
"""Seconds between looks at the shared line for work other replicas queued or left."""

log = logging.getLogger(__name__)


def line_positions(line: Line, running_per_user: int) -> dict[str, int]:
    """Each waiting job's place in the shared line (1: starts next), by replaying the choice
    `Store.claim_next` makes, as if no running job finished first: the user with the fewest running
    jobs, least recently served, goes next (a user at the running cap is passed over while anyone
    else waits)."""
    queues: dict[UserKey, deque[str]] = {}
    for job_id, team_id, user_id in line.waiting:
        queues.setdefault((team_id, user_id), deque()).append(job_id)
    running = Counter(line.running)
    served = dict(line.served)
    turn = max(served.values(), default=0.0)
    order: dict[str, int] = {}
    while queues:
        eligible = [user for user in queues if running[user] < running_per_user] or list(queues)
        user = min(eligible, key=lambda u: (running[u], served.get(u, 0.0)))
        order[queues[user].popleft()] = len(order) + 1
        if not queues[user]:
            del queues[user]
        running[user] += 1
        turn += 1.0
        served[user] = turn
    return order


class Ticket:
    """A job this replica stored and holds while it announces it: its `position` in line, and whether
    a slot here is kept for it (`starts_now`). `submit` or `withdraw` ends it."""

    def __init__(self, queue: JobQueue, job: Job, position: int, *, starts_now: bool) -> None:
        self._queue = queue
        self.job_id = job.id
        self.user: UserKey = (job.team_id, job.user_id)
        self.position = position
        self.starts_now = starts_now
        self._open = True

    async def submit(self) -> None:
        """The job is announced: run it here now (`starts_now`), or let it join the line."""
        if self._open:
            self._open = False
            await self._queue._submit(self)

    def withdraw(self) -> None:
        """The job will not be announced by this replica: give back the slot kept for it. Its hold is
        left to expire (a job still stored then runs from the line, announcing itself)."""
        if self._open:
            self._open = False
            self._queue._withdraw(self)


class JobQueue:
    """Claims jobs from the shared line within this replica's slots and runs `run(job_id)` for each,
    holding their leases; admits new jobs into the line."""

    def __init__(
        self,
        store: Store,
        run: RunJob,
        *,
        owner: str,
        slots: int,
        running_per_user: int,
        waiting_per_user: int,
        lease_seconds: float = LEASE_SECONDS,
        poll_interval: float = POLL_INTERVAL,
        exclusive: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`owner`: this replica's name in leases (REPLICA_ID); `exclusive`: no other process can use
        the database (SQLite); `clock`: wall time, as the other replicas read it."""
        self._store = store
        self._run = run
        self.owner = owner
        self._slots = slots
        self._running_per_user = running_per_user
        self._waiting_per_user = waiting_per_user
        self._lease = lease_seconds
        self._poll_interval = poll_interval
        self._exclusive = exclusive
        self._clock = clock
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._held: set[str] = set()
        """Jobs stored here and not yet submitted (their holds are renewed with the running ones')."""
        self._kept = 0
        """Slots kept for tickets told they start now."""
        self._safe_until: dict[str, float] = {}
        self._lost: set[str] = set()
        self._interrupted: set[str] = set()
        self._critical: Counter[str] = Counter()
        self._cancels: dict[str, asyncio.Task[object]] = {}
        self._waiting_seen = 0
        self._accepting = False
        self._stopping = False
        self._wake = asyncio.Event()
        self._halt = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self.on_change: list[Callable[[], None]] = []
        """Called (synchronously) whenever the line may have changed: a job joined, left or started."""
        self.cancel_requested: Callable[[str], Coroutine[Any, Any, object]] | None = None
        """Carries out a cancel another replica asked for a job running here."""

    @property
    def lease_seconds(self) -> float:
        """How long a hold lasts without renewal."""
        return self._lease

    @property
    def accepting(self) -> bool:
        """Whether jobs are being started (False before start and after stop)."""
        return self._accepting

    async def start(self) -> int:
        """Make the jobs a previous run of this deployment left unfinished takeable (with `exclusive`,
        also those dead processes still held), then begin claiming; how many were reopened."""
        reopened = await self._store.reopen_released(self.owner, everyone=self._exclusive)
        self._accepting = True
        self._loops = [
            asyncio.create_task(self._claim_loop(), name="job-claims"),
            asyncio.create_task(self._keep_loop(), name="job-leases"),
        ]
        return reopened

    def hold(self) -> Hold:
        """The hold a job stored now is taken under (this replica, for one lease; the waiting cap)."""
        return Hold(self.owner, self._clock() + self._lease, self._waiting_per_user)

    async def tickets(self, jobs: Sequence[Job]) -> list[Ticket]:
        """Tickets for jobs just stored under `hold()`, in order: each one's place in the shared line,
        and a slot kept here for those that can start at once."""
        self._held.update(job.id for job in jobs)
        try:
            line = await self._store.line(self._clock())
        except BaseException:
            self._held.difference_update(job.id for job in jobs)  # the holds expire instead
            self._look_when_hold_expires()
            raise
        positions = line_positions(line, self._running_per_user)
        free = self._slots - len(self._tasks) - self._kept
        ahead_of = Counter[UserKey]()
        place: dict[str, int] = {}
        for job_id, team_id, user_id in sorted(line.waiting, key=lambda entry: positions[entry[0]]):
            ahead_of[(team_id, user_id)] += 1
            place[job_id] = ahead_of[(team_id, user_id)]
        tickets = []
        for job in jobs:
            position = positions.get(job.id, len(positions) + 1)
            user = (job.team_id, job.user_id)
            starts_now = (
                self._accepting
                and position <= free
                and line.running.get(user, 0) + place.get(job.id, 1) <= self._running_per_user
            )
            self._kept += starts_now
            tickets.append(Ticket(self, job, position, starts_now=starts_now))
        return tickets

    async def _submit(self, ticket: Ticket) -> None:
        """Run the job here, or release it into the line; if the database fails meanwhile, the hold is
        no longer renewed, so the job joins the line when it expires (it is announced: never an error
        for the user)."""
        try:
            if ticket.starts_now:
                self._kept -= 1
                now = self._clock()
                if self._accepting:
                    claimed = await self._store.claim_held(
                        ticket.job_id,
                        self.owner,
                        now=now,
                        until=now + self._lease,
                        running_cap=self._running_per_user,
                    )
                    if claimed is not None:
                        self._launch(ticket.job_id)
                        return
            await self._store.release([ticket.job_id], self.owner)
        except Exception:
            # Announced already: the user is not told it failed, since it will run.
            log.warning("job %s: hand-over not stored; it joins the line as its hold expires", ticket.job_id)
            self._look_when_hold_expires()
        finally:
            self._held.discard(ticket.job_id)
        self._wake.set()
        self._changed()

    def _withdraw(self, ticket: Ticket) -> None:
        self._held.discard(ticket.job_id)
        self._kept -= ticket.starts_now
        self._look_when_hold_expires()

    def _look_when_hold_expires(self) -> None:
        """Claim again once a hold given up without a release has expired (its job is then in line)."""
        asyncio.get_running_loop().call_later(self._lease, self._wake.set)

    async def positions(self) -> dict[str, int]:
        """Each waiting job's place in the shared line (see `line_positions`)."""
        line = await self._store.line(self._clock())
        self._waiting_seen = len(line.waiting)
        return line_positions(line, self._running_per_user)

    def waiting_count(self) -> int:
        """Jobs waiting in the shared line, as last looked at."""
        return self._waiting_seen

    def running_count(self) -> int:
        """Jobs running in this replica."""
        return len(self._tasks)

    def task(self, job_id: str) -> asyncio.Task[None] | None:
        """The running task of a job, if it runs in this replica."""
        return self._tasks.get(job_id)

    async def held_elsewhere(self, job_id: str) -> bool:
        """Whether another replica holds the job now (announcing or running it)."""
        holder = await self._store.holder(job_id, self._clock())
        return holder is not None and holder != self.owner

    @contextlib.contextmanager
    def critical(self, job_id: str) -> Iterator[None]:
        """A step with an outside effect (a submission and recording its id, an upload). It begins only
        while this replica's lease on the job is safely current (else the job stops here, as at
        shutdown, and is taken over); shutdown lets it finish, and cancels the job as soon as its last
        such step ends."""
        safe_until = self._safe_until.get(job_id)
        if not self._exclusive and safe_until is not None and self._clock() > safe_until:
            self._interrupted.add(job_id)
            log.warning("job %s: lease not renewed in time, leaving the job to whoever takes it", job_id)
            raise asyncio.CancelledError(f"lease on job {job_id} not current")
        self._critical[job_id] += 1
        try:
            yield
        finally:
            self._critical[job_id] -= 1
            if self._critical[job_id] <= 0:
                del self._critical[job_id]
                task = self._tasks.get(job_id)
                if self._stopping and task is not None:
                    task.cancel()

    async def stop(self, grace: float) -> None:
        """Stop claiming; cancel running jobs at once outside critical sections, otherwise after them,
        waiting `grace` seconds at most. Interrupted jobs are left for any replica to take at once."""
        self._accepting = False
        self._stopping = True
        for job_id, task in self._tasks.items():
            if not self._critical[job_id]:
                task.cancel()
        tasks = list(self._tasks.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        # The loops are told to end, not cancelled: a claim cancelled in the middle could be committed
        # without its job ever being launched (it would wait a lease for another replica).
        self._halt.set()
        self._wake.set()
        await asyncio.gather(*self._loops, *self._cancels.values(), return_exceptions=True)
        self._loops = []

    def moved(self) -> None:
        """The line changed without the queue (a waiting job was cancelled): tell `on_change`."""
        self._changed()

    def _changed(self) -> None:
        for hook in self.on_change:
            hook()

    def _safe_from(self, renewed_at: float) -> float:
        """Until when a lease renewed at `renewed_at` is safely ours: a renewal (every third of a lease)
        may be missed once before another replica could take the job."""
        return renewed_at + self._lease * 2 / 3

    def _launch(self, job_id: str) -> None:
        self._safe_until[job_id] = self._safe_from(self._clock())
        task = asyncio.create_task(self._run_held(job_id), name=f"job-{job_id}")
        self._tasks[job_id] = task
        task.add_done_callback(functools.partial(self._done, job_id))
        self._changed()

    async def _run_held(self, job_id: str) -> None:
        try:
            await self._run(job_id)
        finally:
            self._safe_until.pop(job_id, None)
            if job_id not in self._lost:
                at_once = self._stopping or job_id in self._interrupted
                try:
                    with write_patience(self._lease / 3):
                        await self._store.release([job_id], self.owner, at_once=at_once)
                except Exception:
                    log.warning("job %s: could not give up its lease; it will expire", job_id, exc_info=True)
            self._lost.discard(job_id)
            self._interrupted.discard(job_id)

    def _done(self, job_id: str, task: asyncio.Task[None]) -> None:
        self._tasks.pop(job_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("job %s ended with an unhandled error", job_id, exc_info=task.exception())
        self._wake.set()
        self._changed()

    async def _claim_loop(self) -> None:
        while self._accepting:
            failed = False
            try:
                await self._fill()
            except Exception:
                failed = True
                log.warning("could not claim jobs from the line; trying again", exc_info=True)
            self._wake.clear()
            if not self._accepting:
                break
            # With `exclusive`, only this process adds to the line or frees a hold, and it wakes the loop
            # when it does: it looks again on its own only after a failed claim. asyncio.timeout, not
            # wait_for: Python 3.11's wait_for can swallow a cancel that arrives as its timeout fires.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(None if self._exclusive and not failed else self._poll_interval):
                    await self._wake.wait()

    async def _fill(self) -> None:
        claimed = False
        while self._accepting and len(self._tasks) + self._kept < self._slots:
            now = self._clock()
            with write_patience(self._poll_interval):
                job = await self._store.claim_next(
                    self.owner, now=now, until=now + self._lease, running_cap=self._running_per_user
                )
            if job is None or not self._accepting:
                if job is not None:
                    await self._store.release([job.id], self.owner, at_once=True)
                break
            self._launch(job.id)
            claimed = True
        if claimed or not self._exclusive:
            self._changed()

    async def _keep_loop(self) -> None:
        while not self._halt.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._lease / 3):
                    await self._halt.wait()
            if not self._halt.is_set():
                await self.renew()

    async def renew(self) -> None:
        """Renew the leases of the jobs held here (every third of a lease, by a background loop): a
        job another replica took over stops here, a cancel asked elsewhere is carried out here."""
        job_ids = [*self._tasks, *self._held]
        if not job_ids:
            return
        now = self._clock()
        try:
            with write_patience(self._lease / 3):
                kept = await self._store.renew(job_ids, self.owner, now + self._lease)
        except Exception:
            log.warning("could not renew %d job leases", len(job_ids), exc_info=True)
            return
        for job_id in job_ids:
            task = self._tasks.get(job_id)
            if job_id not in kept:
                if task is not None and job_id not in self._lost:
                    log.warning("job %s: another replica took it over; stopping here", job_id)
                    self._lost.add(job_id)
                    task.cancel()
                continue
            if task is None:
                continue
            self._safe_until[job_id] = self._safe_from(now)
            if kept[job_id] and self.cancel_requested is not None and job_id not in self._cancels:
                cancel = asyncio.create_task(self.cancel_requested(job_id), name=f"cancel-{job_id}")
                self._cancels[job_id] = cancel
                cancel.add_done_callback(functools.partial(self._cancelled, job_id))

    def _cancelled(self, job_id: str, _: asyncio.Task[object]) -> None:
        self._cancels.pop(job_id, None)
