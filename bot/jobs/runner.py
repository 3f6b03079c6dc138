"""JobRunner: the job engine's front door. It puts stored jobs in line (FairScheduler) and runs
their steps (JobPipeline); it alone posts a job's status message and decides what a cancel means."""

from __future__ import annotations

import asyncio
import logging

from bot.jobs.pipeline import JobPipeline
from bot.jobs.positions import QueuePositions
from bot.jobs.scheduler import FairScheduler, Ticket
from bot.slack import pacing
from bot.slack.errors import SlackError
from bot.store.database import write_patience
from bot.store.model import Job, JobImage, JobState
from bot.store.store import Store

log = logging.getLogger(__name__)

DELIVERY_PATIENCE = 900.0
"""How long (Slack's seconds) a started job's Slack calls may wait their turn in a busy channel. Longer
than a new job's status post may (bot/slack/pacing.py PATIENCE): a started job is paid for, so its images
wait for a turn rather than fail, while a new request is better refused at once with a reason."""

JOB_WRITE_PATIENCE = 300.0
"""How long a started job's writes are retried while the database is locked, full or failing: the job
is paid for, so it waits for the store to recover (and then finishes) rather than fail at once."""


class JobRunner:
    """Admits, announces, schedules, resumes and cancels jobs."""

    def __init__(
        self,
        *,
        store: Store,
        pipeline: JobPipeline,
        scheduler: FairScheduler,
        positions: QueuePositions | None = None,
        write_patience: float = JOB_WRITE_PATIENCE,
    ) -> None:
        """`write_patience`: see JOB_WRITE_PATIENCE (tests shorten it)."""
        self._write_patience = write_patience
        self._store = store
        self._pipeline = pipeline
        self._scheduler = scheduler
        self._positions = positions
        self._fresh: dict[str, tuple[Job, list[JobImage]]] = {}

    @property
    def pipeline(self) -> JobPipeline:
        """The steps (for hooks and counters)."""
        return self._pipeline

    async def run(self, job_id: str) -> None:
        """The scheduler's callback: one job, from wherever its step log says it stands."""
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
        """Resume every job a previous process left unfinished, then start running jobs."""
        resumed = await self._store.unfinished_jobs()
        for job in resumed:
            self._scheduler.enqueue((job.team_id, job.user_id), job.id)
        if resumed:
            log.info("resuming %d unfinished jobs", len(resumed))
        self._scheduler.start()
        if self._positions is not None:
            self._positions.start()

    def admit(self, team_id: str, user_id: str) -> Ticket:
        """Hold a place in line for one more of this user's jobs (synchronous, so caps hold under
        concurrency); raises CapReachedError."""
        return self._scheduler.admit((team_id, user_id))

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
        self._fresh[job.id] = (announced, images)
        if self._positions is not None:
            self._positions.shown(job.id, ticket.position)
        ticket.submit(job.id)
        if not self._scheduler.accepting:
            self._fresh.pop(job.id, None)
            log.info("job %s stays queued until the next start", job.id)
        return announced

    async def cancel(self, job_id: str) -> JobState | None:
        """Cancel a job wherever it is (a submission interrupted mid-answer is found at the backend and
        cancelled there too). A job that is already posting its images is not interrupted: the answer
        is the state it ends in (uploaded: "already delivered"). Returns the stored state."""
        task = self._scheduler.task(job_id)
        if task is None:
            self._scheduler.drop_waiting(job_id)
            self._fresh.pop(job_id, None)
            if self._positions is not None:
                await self._positions.forget(job_id)
            job = await self._store.get_job(job_id)
            if job is None:
                return None
            if not job.finished:
                job = await self._pipeline.cancel_queued(job) or await self._store.get_job(job_id) or job
            return job.state
        if not self._pipeline.is_delivering(job_id):
            self._pipeline.request_cancel(job_id)
            task.cancel()
        await asyncio.wait([task])
        job = await self._store.get_job(job_id)
        return job.state if job else None

    def state_counts(self) -> dict[str, float]:
        """Jobs by state in this process, for the dreamboard_jobs gauge."""
        counts: dict[str, float] = {
            "queued": float(self._scheduler.waiting_count()),
            "running": float(self._scheduler.running_count()),
        }
        counts.update({state: float(count) for state, count in self._pipeline.finished.items()})
        return counts

    async def stop(self, grace: float = 20.0) -> None:
        """Stop starting jobs; let submissions and uploads in progress finish (at most `grace` s)."""
        if self._positions is not None:
            await self._positions.close()
        await self._scheduler.stop(grace)
