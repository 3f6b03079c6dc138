"""FairScheduler: which job runs next. Pure asyncio: no Slack, Oxen or store.

A global limit of running jobs, a per-user cap on running jobs and another on waiting ones. The next
job comes from the waiting user with the fewest running jobs, least recently served first. Admission
is synchronous: `admit` counts and reserves the user's place before the caller's first `await`, so the
caps hold however many requests arrive at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from bot.domain.errors import CapReachedError

UserKey = tuple[str, str]
RunJob = Callable[[str], Coroutine[Any, Any, None]]

log = logging.getLogger(__name__)


class Ticket:
    """A place in line held for a job that is still being stored; `submit` or `withdraw` ends it."""

    def __init__(self, scheduler: FairScheduler, user: UserKey, position: int, *, starts_now: bool) -> None:
        self._scheduler = scheduler
        self.user = user
        self.position = position
        self.starts_now = starts_now
        """Whether a slot was free for this job when it was admitted (nobody waiting, user under the cap)."""
        self._open = True

    def submit(self, job_id: str) -> None:
        """Put the stored job in line (it runs when a slot is free)."""
        if self._open:
            self._open = False
            self._scheduler._release(self.user, starting=self.starts_now)
            self._scheduler.enqueue(self.user, job_id)

    def withdraw(self) -> None:
        """Give the place back: the job will not run."""
        if self._open:
            self._open = False
            self._scheduler._release(self.user, starting=self.starts_now)


class FairScheduler:
    """Runs `run(job_id)` for queued jobs within the limits, fairly across users."""

    def __init__(self, run: RunJob, *, slots: int, running_per_user: int, waiting_per_user: int) -> None:
        self._run = run
        self._slots = slots
        self._running_per_user = running_per_user
        self._waiting_per_user = waiting_per_user
        self._waiting: dict[UserKey, deque[str]] = {}
        self._reserved: Counter[UserKey] = Counter()
        self._reserved_starting = 0
        """Reserved places that were told a slot is theirs (starts_now): they hold a slot, not a place."""
        self._last_served: dict[UserKey, int] = {}
        self._served = 0
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._running_by_user: Counter[UserKey] = Counter()
        self._critical: Counter[str] = Counter()
        self._accepting = False
        self._stopping = False
        self.on_change: list[Callable[[], None]] = []
        """Called (synchronously) whenever the line changes: a job joined, left or started."""

    def start(self) -> None:
        """Begin running queued jobs."""
        self._accepting = True
        self._pump()

    @property
    def accepting(self) -> bool:
        """Whether jobs are being started (False before start and after stop)."""
        return self._accepting

    def admit(self, user: UserKey) -> Ticket:
        """Reserve a place for one more of `user`'s jobs; raises CapReachedError when the user already
        has `waiting_per_user` jobs waiting (reserved places included)."""
        waiting = len(self._waiting.get(user, ())) + self._reserved[user]
        if waiting >= self._waiting_per_user:
            raise CapReachedError(waiting)
        starting = self._reserved_starting
        ahead = self.waiting_count() + sum(self._reserved.values()) - starting
        starts_now = (
            self._accepting
            and len(self._tasks) + starting + ahead < self._slots
            and self._running_by_user[user] + waiting < self._running_per_user
        )
        self._reserved[user] += 1
        self._reserved_starting += starts_now
        return Ticket(self, user, ahead + 1, starts_now=starts_now)

    def enqueue(self, user: UserKey, job_id: str) -> None:
        """Put a job in line without a cap check (jobs resumed after a restart)."""
        self._waiting.setdefault(user, deque()).append(job_id)
        self._pump()
        self._changed()

    def positions(self) -> dict[str, int]:
        """Each waiting job's place in line (1: starts next), predicted by replaying the choice `_pump`
        makes, as if no running job finished first: the user with the fewest running jobs, least
        recently served, goes next (a user at the running cap is passed over while anyone else waits)."""
        queues = {user: deque(queue) for user, queue in self._waiting.items()}
        running = Counter(self._running_by_user)
        last = dict(self._last_served)
        served = self._served
        order: dict[str, int] = {}
        while queues:
            eligible = [user for user in queues if running[user] < self._running_per_user] or list(queues)
            user = min(eligible, key=lambda u: (running[u], last.get(u, -1)))
            order[queues[user].popleft()] = len(order) + 1
            if not queues[user]:
                del queues[user]
            running[user] += 1
            served += 1
            last[user] = served
        return order

    def _changed(self) -> None:
        for hook in self.on_change:
            hook()

    def _release(self, user: UserKey, *, starting: bool) -> None:
        self._reserved_starting -= starting
        self._reserved[user] -= 1
        if self._reserved[user] <= 0:
            del self._reserved[user]

    def waiting_count(self) -> int:
        """Jobs waiting for a slot."""
        return sum(len(queue) for queue in self._waiting.values())

    def running_count(self) -> int:
        """Jobs holding a slot."""
        return len(self._tasks)

    def drop_waiting(self, job_id: str) -> bool:
        """Take a waiting job out of line; False when it was not waiting."""
        for user, queue in list(self._waiting.items()):
            if job_id in queue:
                queue.remove(job_id)
                if not queue:
                    del self._waiting[user]
                self._changed()
                return True
        return False

    def task(self, job_id: str) -> asyncio.Task[None] | None:
        """The running task of a job, if it holds a slot."""
        return self._tasks.get(job_id)

    def in_critical_section(self, job_id: str) -> bool:
        """Whether the job is inside a step that must not be interrupted."""
        return self._critical[job_id] > 0

    @contextlib.contextmanager
    def critical(self, job_id: str) -> Iterator[None]:
        """A step that shutdown lets finish (a submission and recording its id, an upload); once
        shutdown is under way, the job's task is cancelled as soon as its last such step ends."""
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
        """Stop starting jobs; cancel running ones at once outside critical sections, otherwise after
        them, waiting `grace` seconds at most. Waiting jobs stay queued in the store."""
        self._accepting = False
        self._stopping = True
        self._waiting.clear()
        for job_id, task in self._tasks.items():
            if not self._critical[job_id]:
                task.cancel()
        tasks = list(self._tasks.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _next_user(self) -> UserKey | None:
        eligible = [user for user in self._waiting if self._running_by_user[user] < self._running_per_user]
        return min(
            eligible,
            key=lambda user: (self._running_by_user[user], self._last_served.get(user, -1)),
            default=None,
        )

    def _pump(self) -> None:
        started = False
        while self._accepting and len(self._tasks) < self._slots:
            user = self._next_user()
            if user is None:
                break
            queue = self._waiting[user]
            job_id = queue.popleft()
            if not queue:
                del self._waiting[user]
            self._served += 1
            self._last_served[user] = self._served
            self._running_by_user[user] += 1
            task = asyncio.create_task(self._run(job_id), name=f"job-{job_id}")
            self._tasks[job_id] = task
            task.add_done_callback(functools.partial(self._done, job_id, user))
            started = True
        if started:
            self._changed()

    def _done(self, job_id: str, user: UserKey, task: asyncio.Task[None]) -> None:
        self._tasks.pop(job_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("job %s ended with an unhandled error", job_id, exc_info=task.exception())
        self._running_by_user[user] -= 1
        if self._running_by_user[user] <= 0:
            del self._running_by_user[user]
        self._pump()
