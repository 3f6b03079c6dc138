"""JobPipeline: the steps that turn a stored job into images and a result card in its thread.

Each step either commits a state before its side effect, or is declared best effort:

| step               | written before the side effect      | a restart that finds it …                  |
|--------------------|-------------------------------------|--------------------------------------------|
| status message     | — (the message carries its job id)  | looks for it by metadata, else posts it    |
| submit (per image) | submit_started_at                   | asks the backend for a matching generation |
| wait               | generation_id                       | polls it, never submits again              |
| outcome            | state succeeded/failed + result_url | skips to delivery                          |
| upload             | file ids, before files.complete…    | files.info: missing → uploads again        |
| uploaded           | state uploaded                      | rewrites the status message into the card  |
| result card        | card_ts (= status_ts)               | nothing left to do                         |
The result card is the status message rewritten in place (chat.update, its metadata switched to the
card's event type): repeating it after a restart or a lost answer changes nothing, so it needs no claim
and no search. A status posted as "Generating…" (the job starts at once) is not edited again before the
card. Best effort: status updates, the upload message's ts (for reactions: the bot's own file_share
event, or a bounded files.info poll, see jobs/uploads.py), the failure reply. A terminal state is never
overwritten (guarded in SQL), and any failure after submission cancels the job's generations that are
still running at the backend.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

from bot.backends.base import (
    BackendError,
    FailureKind,
    ImageBackend,
    Meter,
    Outcome,
    Plan,
    SubmissionUnknownError,
)
from bot.domain.errors import UserFacingError
from bot.domain.kits import sent_prompt
from bot.domain.logcontext import bind_job
from bot.jobs.failures import JobTimeoutError, describe_failure
from bot.jobs.uploads import UploadMessages
from bot.slack.errors import SlackError, SlackErrorKind
from bot.slack.files import ResultFile, SlackFiles, UploadState
from bot.slack.messages import SlackMessages
from bot.store.errors import StoreUnavailableError
from bot.store.model import ImageState, Job, JobImage, JobState
from bot.store.store import Store
from bot.views import blocks as views

log = logging.getLogger(__name__)

_T = TypeVar("_T")
SUBMIT_ATTEMPTS = 3
CARD_ATTEMPTS = 3
_EXPECTED = (BackendError, SlackError, UserFacingError, JobTimeoutError, StoreUnavailableError)


class ReferenceResolver(Protocol):
    """Turns a job's stored reference descriptions into URLs the backend can fetch, and keeps results'
    bytes so later jobs can use them as references."""

    async def resolve(self, sources: Sequence[Mapping[str, Any]]) -> list[str]:
        """URLs in order; raises a UserFacingError when one cannot be made."""
        ...

    async def keep(self, path: Path) -> tuple[str, str] | None:
        """Keep a downloaded result as a reference: its (content key, mimetype), or None."""
        ...


class JobPipeline:
    """Runs one job's steps; the scheduler decides when."""

    def __init__(
        self,
        *,
        store: Store,
        backend: ImageBackend,
        messages: SlackMessages,
        files: SlackFiles,
        uploads: UploadMessages,
        references: ReferenceResolver,
        critical: Callable[[str], AbstractContextManager[None]],
        meter: Meter,
        job_timeout: float,
        poll_interval: float,
        retry_delay: float = 1.0,
    ) -> None:
        self._store = store
        self._backend = backend
        self._messages = messages
        self._files = files
        self._uploads = uploads
        self._references = references
        self._critical = critical
        self._meter = meter
        self._job_timeout = job_timeout
        self._poll_interval = poll_interval
        self._retry_delay = retry_delay
        self._adopting = asyncio.Lock()
        self._claimed: set[str] = set()
        self._delivering: set[str] = set()
        self._cancelling: set[str] = set()
        self._plans: dict[str, Plan] = {}
        self._shown_running: set[str] = set()
        self.finished: Counter[str] = Counter()
        self.on_finished: list[Callable[[Job], None]] = []
        """Hooks called with each job this pipeline ran to its end (its last step done or tried), and
        with each job cancelled before it started."""

    async def announce(
        self, job: Job, *, position: int, look_first: bool = False, starting: bool = False
    ) -> Job:
        """Post the status message of a queued job and record it; raises SlackError. A job `starting` at
        once is posted as "Generating…" (saving the edit). After a lost answer (or, with `look_first`, a
        restart) Slack is asked for the message before posting again."""
        ts = await self._messages.find_status(job) if look_first else None
        if ts is None:
            try:
                ts = await self._messages.post_status(job, position=position, generating=starting)
                if starting:
                    self._shown_running.add(job.id)
            except SlackError as exc:
                ts = await self._messages.find_status(job) if exc.maybe_done else None
                if ts is None:
                    raise
        announced = await self._store.set_status_ts(job.id, ts)
        return announced or replace(job, status_ts=ts, thread_ts=job.thread_ts or ts)

    def is_delivering(self, job_id: str) -> bool:
        """Whether the job is posting its images (a cancel then waits for the outcome)."""
        return job_id in self._delivering

    def request_cancel(self, job_id: str) -> None:
        """Mark the job's coming CancelledError as a user's cancel (not a shutdown)."""
        self._cancelling.add(job_id)

    async def cancel_queued(self, job: Job) -> Job | None:
        """End a job that never started; None when it had already ended."""
        cancelled = await self._store.finish(job.id, JobState.CANCELLED)
        if cancelled is not None:
            self.finished[JobState.CANCELLED] += 1
            await self._messages.update_status(cancelled)
            for hook in self.on_finished:
                hook(cancelled)
        return cancelled

    async def run(self, job: Job, images: list[JobImage]) -> None:
        """Take the job from wherever its step log says it stands to a terminal state."""
        bind_job(job.id)
        if job.state is JobState.UPLOADED:
            await self._show_card(job, images)
            self._settle_upload_ts(job, images)
            for hook in self.on_finished:
                hook(job)
            return
        if job.finished:
            return
        started = time.perf_counter()
        log.info("job %s started (user %s, model %s, %d image(s))", job.id, job.user_id, job.model, job.n)
        try:
            try:
                final = await self._execute(job, images)
            except asyncio.CancelledError:
                if job.id not in self._cancelling:
                    raise
                self._cancelling.discard(job.id)
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
                final = await self._cancel_running(job)
            except Exception as exc:
                final = await self._fail(job, exc)
            else:
                log.info("job %s done in %.2fs", job.id, time.perf_counter() - started)
        finally:
            self._plans.pop(job.id, None)
        for hook in self.on_finished:
            hook(final or job)

    async def _execute(self, job: Job, images: list[JobImage]) -> Job | None:
        try:
            async with asyncio.timeout(self._job_timeout):
                produced = await self._generate(job, images)
        except TimeoutError:
            raise JobTimeoutError(self._job_timeout) from None
        if produced is None:
            return None
        job, images = produced
        with self._critical(job.id):
            self._delivering.add(job.id)
            try:
                return await self._deliver(job, images)
            finally:
                self._delivering.discard(job.id)

    async def _generate(self, job: Job, images: list[JobImage]) -> tuple[Job, list[JobImage]] | None:
        """Everything up to the last image's outcome (bounded by OXEN_JOB_TIMEOUT); None when the job
        ended meanwhile."""
        if job.status_ts is None:
            job = await self.announce(job, position=1, look_first=True)
        urls = await self._references.resolve(job.reference_sources)
        plan = await self._backend.plan(
            job.model,
            prompt=sent_prompt(job.prompt, job.params),
            size=job.size,
            aspect_ratio=job.aspect_ratio,
            references=urls,
        )
        self._plans[job.id] = plan
        running = await self._store.mark_running(job.id, plan.notes)
        if running is None:
            return None
        shown = job.id in self._shown_running
        self._shown_running.discard(job.id)
        generating = None if shown else asyncio.create_task(self._messages.update_status(running))
        try:
            outcomes = await _all_or_first_error([self._produce(running, plan, image) for image in images])
        finally:
            if generating is not None:
                await generating
        if not any(outcome.result_url for outcome in outcomes):
            raise next(o.failure for o in outcomes if o.failure is not None)
        images = [
            replace(image, state=ImageState.SUCCEEDED, result_url=outcome.result_url, error=None)
            if outcome.result_url
            else replace(image, state=ImageState.FAILED, error=_failure_text(outcome))
            for image, outcome in zip(images, outcomes, strict=True)
        ]
        return running, images

    async def _produce(self, job: Job, plan: Plan, image: JobImage) -> Outcome:
        """Submit (unless the step log says it was) and wait for one image."""
        if image.state is ImageState.FAILED:
            return Outcome(failure=BackendError(FailureKind.PROVIDER, image.error or "The image failed."))
        if image.state is ImageState.SUCCEEDED and image.result_url:
            return Outcome(result_url=image.result_url)
        resumed = image.generation_id is not None
        handle = image.generation_id or await self._submit(job, image, plan.body_for(image.seed))
        while True:
            outcome = await self._backend.wait(handle, within=self._poll_interval, look_first=resumed)
            if outcome is not None:
                break
            resumed = False
        await self._store.set_image_outcome(
            job.id, image.idx, error=_failure_text(outcome) if outcome.failure else None,
            result_url=outcome.result_url,
        )  # fmt: skip
        return outcome

    async def _submit(self, job: Job, image: JobImage, body: dict[str, Any]) -> str:
        """Submit once, or adopt the generation an earlier attempt (or process) already started."""
        with self._critical(job.id):
            since = image.submit_started_at
            handle = await self._adopt(job, image, body, since) if since is not None else None
            if since is None:
                since = await self._store.mark_submitting(job.id, image.idx)
            attempt = 0
            while handle is None:
                attempt += 1
                try:
                    submitted = await self._backend.submit(body)
                except SubmissionUnknownError as exc:
                    log.warning("job %s image %d: submission outcome unknown (%s)", job.id, image.idx, exc)
                    handle = await self._adopt(job, image, body, since)
                    if handle is None and attempt >= SUBMIT_ATTEMPTS:
                        raise
                    continue
                self._claimed.add(submitted)
                try:
                    await self._store.set_generation_id(job.id, image.idx, submitted)
                finally:
                    self._claimed.discard(submitted)
                handle = submitted
            return handle

    async def _adopt(self, job: Job, image: JobImage, body: Mapping[str, Any], since: float) -> str | None:
        """Record, as this image's, a generation matching `body` that no stored image holds and no
        submission in this process is recording. One adoption at a time, until its id is stored."""
        async with self._adopting:
            free = await self._unclaimed(body, since)
            if not free:
                return None
            log.info("job %s image %d: adopting generation %s, submitted earlier", job.id, image.idx, free[0])
            await self._store.set_generation_id(job.id, image.idx, free[0])
        return free[0]

    async def _unclaimed(
        self, body: Mapping[str, Any], since: float, exclude: Sequence[str] = ()
    ) -> list[str]:
        """At most one generation matching `body` that nobody holds (call with the adoption lock held)."""
        candidates = await self._backend.find_submitted(body, since=since)
        taken = await self._store.generation_ids_in_use(candidates)
        free = [h for h in candidates if h not in taken and h not in self._claimed and h not in exclude]
        return free[:1]

    async def _deliver(self, job: Job, images: list[JobImage]) -> Job | None:
        made = [image for image in images if image.state is ImageState.SUCCEEDED]
        state, upload_ts = UploadState.MISSING, None
        if all(image.file_id for image in made):
            state, upload_ts = await self._files.upload_state(str(made[0].file_id), job.channel_id)
        if state is UploadState.MISSING:
            file_ids = await self._upload(job, made)
            images = [replace(image, file_id=file_ids.get(image.idx, image.file_id)) for image in images]
        uploaded = await self._store.mark_uploaded(job.id, upload_ts=upload_ts)
        if uploaded is None:
            log.warning("job %s was no longer running when its images were posted", job.id)
            return None
        self.finished[JobState.UPLOADED] += 1
        if uploaded.started_at is not None and uploaded.finished_at is not None:
            self._meter.observe("dreamboard_generation_seconds", uploaded.finished_at - uploaded.started_at)
        await self._show_card(uploaded, images)
        self._settle_upload_ts(uploaded, images)
        return uploaded

    async def _upload(self, job: Job, made: list[JobImage]) -> dict[int, str]:
        with tempfile.TemporaryDirectory(prefix=f"dreamboard-{job.id}-") as folder:
            results = await _all_or_first_error([self._download(job, image, Path(folder)) for image in made])
            file_ids = await self._files.send_bytes(results)
            await self._store.set_file_ids(job.id, dict(file_ids))
            files = [(file_ids[result.idx], result.title) for result in results]
            self._uploads.expect([file_id for file_id, _ in files])
            try:
                await self._files.share(
                    files,
                    channel_id=job.channel_id,
                    thread_ts=str(job.root_ts),
                    comment=views.upload_comment(job, len(results)),
                )
            except SlackError as exc:
                first = files[0][0]
                if not exc.maybe_done or (await self._files.upload_state(first, job.channel_id))[0] is (
                    UploadState.MISSING
                ):
                    raise
        return file_ids

    async def _download(self, job: Job, image: JobImage, folder: Path) -> ResultFile:
        """Download one result, and keep its bytes as a reference for iterations on it (the key is
        recorded before the upload; the cache write is idempotent, by content)."""
        result = await self._backend.fetch_result(str(image.result_url), folder, f"{job.id}-{image.idx + 1}")
        kept = await self._references.keep(result.path)
        if kept is not None:
            await self._store.set_reference(job.id, image.idx, *kept)
        return ResultFile(
            idx=image.idx,
            path=result.path,
            filename=result.path.name,
            title=f"{job.prompt[:60]} · seed {image.seed}",
            alt_text=job.prompt,
        )

    def _settle_upload_ts(self, job: Job, images: list[JobImage]) -> None:
        """Best effort, in the background: the upload message's ts, so reactions on the image work too."""
        first = next((image.file_id for image in images if image.file_id), None)
        if job.upload_ts is None and first is not None:
            self._uploads.settle(job, first)

    async def _show_card(self, job: Job, images: list[JobImage] | None) -> None:
        """Rewrite the status message into the result card, then record it (card_ts). chat.update is
        idempotent, so a lost answer or a restart simply does it again. A job uploaded by an earlier
        version, whose card was posted separately (card claimed), is looked for first."""
        if job.card_claimed_at is not None and job.card_ts is None:
            ts = await self._find_legacy_card(job)
            if ts is not None:
                await self._store.set_card_ts(job.id, ts)
                return
        images = images if images is not None else await self._store.images(job.id)
        parent = await self._store.get_job(job.parent_id) if job.parent_id else None
        card = views.result_card(job, images, parent=parent, headline=True)
        for attempt in range(1, CARD_ATTEMPTS + 1):
            try:
                await self._messages.show_card(job, card)
                break
            except SlackError as exc:
                retry = exc.kind in (SlackErrorKind.RATE_LIMITED, SlackErrorKind.UNAVAILABLE)
                if not retry or attempt == CARD_ATTEMPTS:
                    log.warning(
                        "job %s: result card not shown (%s); it is retried at the next start", job.id, exc
                    )
                    return
                await asyncio.sleep(self._retry_delay * attempt)
        await self._store.set_card_ts(job.id, str(job.status_ts))
        log.info("job %s: result card shown", job.id)

    async def _find_legacy_card(self, job: Job) -> str | None:
        try:
            return await self._messages.find_card(job)
        except SlackError as exc:
            log.warning("job %s: looking for its earlier result card failed (%s)", job.id, exc)
            return None

    async def _live_handles(self, job: Job) -> list[str]:
        """Generations of this job that may still be running: those recorded as submitted, and for an
        image whose submission was interrupted before its id was recorded (a sibling failed, a cancel,
        the timeout), the matching generation the backend lists, found as a restart would find it."""
        handles: list[str] = []
        plan = self._plans.get(job.id)
        for image in await self._store.images(job.id):
            since = image.submit_started_at
            if image.generation_id and image.state is ImageState.SUBMITTED:
                handles.append(image.generation_id)
            elif image.state is ImageState.PENDING and since is not None and plan is not None:
                try:
                    handles += await self._unrecorded(plan.body_for(image.seed), since, exclude=handles)
                except BackendError as exc:
                    log.warning("job %s image %d: its generation was not found: %s", job.id, image.idx, exc)
        return handles

    async def _unrecorded(
        self, body: Mapping[str, Any], since: float, *, exclude: Sequence[str]
    ) -> list[str]:
        """At most one generation matching `body` that no stored image holds and `exclude` does not name."""
        async with self._adopting:
            return await self._unclaimed(body, since, exclude)

    async def _cancel_generations(self, job: Job) -> None:
        """Stop every generation of this job still running at the backend (best effort, logged)."""
        for handle in await self._live_handles(job):
            try:
                await self._backend.cancel(handle)
            except BackendError as exc:
                log.warning("job %s: cancelling generation %s failed: %s", job.id, handle, exc)

    async def _cancel_running(self, job: Job) -> Job | None:
        await self._cancel_generations(job)
        cancelled = await self._store.finish(job.id, JobState.CANCELLED)
        if cancelled is not None:
            self.finished[JobState.CANCELLED] += 1
            log.info("job %s cancelled", job.id)
            await self._messages.update_status(cancelled)
        return cancelled

    async def _fail(self, job: Job, exc: Exception) -> Job | None:
        problem = describe_failure(exc, job_id=job.id)
        if isinstance(exc, _EXPECTED):
            log.info("job %s failed: %s", job.id, problem)
        else:
            log.exception("job %s crashed", job.id)
        await self._cancel_generations(job)
        try:
            failed = await self._store.finish(job.id, JobState.FAILED, error=problem)
        except StoreUnavailableError as unsaved:
            # The status message must not keep saying "Generating…": show the failure even though it
            # could not be stored (the job stays unfinished in the database and resumes at restart).
            log.warning("job %s: could not store its failure either (%s)", job.id, unsaved.reason)
            self.finished[JobState.FAILED] += 1
            shown = replace(job, state=JobState.FAILED, error=problem)
            await self._messages.update_status(shown, problem=problem)
            return None
        if failed is None:
            log.warning("job %s had already ended; not reporting this failure: %s", job.id, problem)
            return None
        self.finished[JobState.FAILED] += 1
        await self._messages.update_status(failed, problem=problem)
        await self._messages.post_failure(failed, problem)
        return failed


def _failure_text(outcome: Outcome) -> str:
    return outcome.failure.user_message if outcome.failure else "The image failed."


async def _all_or_first_error(coroutines: list[Coroutine[Any, Any, _T]]) -> list[_T]:
    """Run concurrently; on the first failure cancel the rest and raise that failure itself."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(coroutine) for coroutine in coroutines]
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]
