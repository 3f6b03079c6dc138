"""JobRunner: the job engine's front door. It puts stored jobs in the shared line (JobQueue) and runs
their steps (JobPipeline); it alone posts a job's status message and decides what a cancel means, on
whichever replica the job runs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from bot.jobs.pipeline import JobPipeline
from bot.jobs.positions import QueuePositions
from bot.jobs.queue import JobQueue, Ticket
from bot.slack import pacing
from bot.slack.errors import SlackError
from bot.store.database import write_patience
from bot.store.model import Hold, Job, JobImage, JobState
from bot.store.store import Store

log = logging.getLogger(__name__)

DELIVERY_PATIENCE = 900.0
"""How long (Slack's seconds) a started job's Slack calls may wait their turn in a busy channel. Longer
than a new job's status post may (bot/slack/pacing.py PATIENCE): a started job is paid for, so its images
wait for a turn rather than fail, while a new request is better refused at once with a reason."""

JOB_WRITE_PATIENCE = 300.0
"""How long a started job's writes are retried while the database is locked, full or failing: the job
is paid for, so it waits for the store to recover (and then finishes) rather than fail at once."""

REMOTE_CANCEL_POLL = 0.25
"""Seconds between looks at a job another replica was asked to cancel."""


class JobRunner:
    """Admits, announces, schedules, resumes and cancels jobs."""

    def __init__(
        self,
        *,
        store: Store,
        pipeline: JobPipeline,
        queue: JobQueue,
        positions: QueuePositions | None = None,
        write_patience: float = JOB_WRITE_PATIENCE,
    ) -> None:
        """`write_patience`: see JOB_WRITE_PATIENCE (tests shorten it)."""
        self._write_patience = write_patience
        self._store = store
        self._pipeline = pipeline
        self._queue = queue
        self._positions = positions
        self._fresh: dict[str, tuple[Job, list[JobImage]]] = {}
        queue.cancel_requested = self.cancel

    @property
    def pipeline(self) -> JobPipeline:
        """The steps (for hooks and counters)."""
        return self._pipeline

    async def run(self, job_id: str) -> None:
        """The queue's callback: one job, from wherever its step log says it stands."""
        if self._positions is not None:
            await self._positions.forget(job_id)
        fresh = self._fresh.pop(job_id, None)
        if fresh is None:
            job = await self._store.get_job(job_id)
            if job is None:
                return
            fresh = (job, await self._store.images(job_id))
        with pacing.patience(DELIVERY_PATIENCE), pacing.paid_work(), write_patience(self._write_patience):
            await self._pipeline.run(*fresh)

    async def start(self) -> None:
        """Reopen the jobs an earlier run left unfinished, then start claiming jobs from the line."""
        reopened = await self._queue.start()
        if reopened:
            log.info("resuming %d unfinished jobs", reopened)
        if self._positions is not None:
            self._positions.start()

    def hold(self) -> Hold:
        """The hold to store a new job under (Store.insert_job: the user's waiting cap is counted in the
        same transaction, so it holds across replicas; CapReachedError)."""
        return self._queue.hold()

    async def tickets(self, jobs: Sequence[Job]) -> list[Ticket]:
        """Places in line for jobs just stored under `hold()`."""
        return await self._queue.tickets(jobs)

    async def accept(self, ticket: Ticket, job: Job, images: list[JobImage]) -> Job:
        """Announce a stored job (its status message) and put it in line. When Slack refuses the status
        message, the job is discarded, its place given back, and the SlackError raised."""
        try:
            announced = await self._pipeline.announce(
                job, position=ticket.position, starting=ticket.starts_now
            )
        except SlackError:
            ticket.withdraw()
            await self._store.discard_unstarted(job.id)
            raise
        except BaseException:
            ticket.withdraw()
            raise
        if ticket.starts_now:
            self._fresh[job.id] = (announced, images)
        elif self._positions is not None:
            self._positions.shown(job.id, ticket.position)
        await ticket.submit()
        if self._queue.task(job.id) is None:
            self._fresh.pop(job.id, None)
            if not self._queue.accepting:
                log.info("job %s stays queued for another replica or the next start", job.id)
        return announced

    async def cancel(self, job_id: str) -> JobState | None:
        """Cancel a job wherever it is (a submission interrupted mid-answer is found at the backend and
        cancelled there too). A job that is already posting its images is not interrupted: the answer
        is the state it ends in (uploaded: "already delivered"). Returns the stored state."""
        task = self._queue.task(job_id)
        if task is None:
            self._fresh.pop(job_id, None)
            if self._positions is not None:
                await self._positions.forget(job_id)
            job = await self._store.get_job(job_id)
            if job is None:
                return None
            if job.finished:
                return job.state
            if job.state is not JobState.QUEUED and await self._queue.held_elsewhere(job_id):
                return await self._cancel_elsewhere(job)
            job = await self._pipeline.cancel_queued(job) or await self._store.get_job(job_id) or job
            self._queue.moved()
            return job.state
        if not self._pipeline.is_delivering(job_id):
            self._pipeline.request_cancel(job_id)
            task.cancel()
        await asyncio.wait([task])
        job = await self._store.get_job(job_id)
        return job.state if job else None

    async def _cancel_elsewhere(self, job: Job) -> JobState:
        """Ask the replica running `job` to cancel it (it sees the request when it renews the lease)
        and wait, up to a lease, for the state it ends in."""
        await self._store.request_cancel(job.id)
        deadline = time.monotonic() + self._queue.lease_seconds
        while time.monotonic() < deadline:
            await asyncio.sleep(REMOTE_CANCEL_POLL)
            current = await self._store.get_job(job.id)
            if current is None or current.finished:
                return current.state if current else JobState.CANCELLED
        return job.state

    def state_counts(self) -> dict[str, float]:
        """Jobs by state (waiting: in the shared line; running: in this replica), for the dreamboard_jobs
        gauge."""
        counts: dict[str, float] = {
            "queued": float(self._queue.waiting_count()),
            "running": float(self._queue.running_count()),
        }
        counts.update({state: float(count) for state, count in self._pipeline.finished.items()})
        return counts

    async def stop(self, grace: float = 20.0) -> None:
        """Stop starting jobs; let submissions and uploads in progress finish (at most `grace` s)."""
        if self._positions is not None:
            await self._positions.close()
        await self._queue.stop(grace)
