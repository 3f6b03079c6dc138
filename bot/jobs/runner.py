"""JobRunner: the durable, fair, bounded queue that turns stored jobs into uploaded images.

Every state transition is written to the store before the side effect that follows it, so a
restart knows where each job stood: an image with an Oxen generation id is polled, never
re-submitted, and an upload whose files already appear in the channel is not repeated.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import mimetypes
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

from slack_sdk.errors import SlackApiError

from bot.app.config import Settings
from bot.app.metrics import Metrics
from bot.backends.model_schema import PayloadPlan, plan_payload
from bot.backends.oxen import FailureKind, OxenClient, OxenError, QueueUnavailableError, classify_failure
from bot.backends.oxen_events import CompletionWatcher
from bot.features.references import ReferenceError, References, ReferenceSource
from bot.slack.files import ResultFile, SlackFiles, UploadError
from bot.slack.messages import NOT_A_MEMBER, SlackMessages, slack_error
from bot.store.model import ImageState, Job, JobImage, JobState, MessageKind
from bot.store.sqlite import Store
from bot.views import blocks as views

log = logging.getLogger(__name__)

UserKey = tuple[str, str]
_T = TypeVar("_T")
MAX_RESULT_BYTES = 64 * 1024 * 1024


class JobRunner:
    """Runs jobs with a global concurrency limit and a per-user running cap, fairly across users."""

    def __init__(
        self,
        *,
        store: Store,
        oxen: OxenClient,
        messages: SlackMessages,
        files: SlackFiles,
        references: References,
        settings: Settings,
        metrics: Metrics,
    ) -> None:
        self._store = store
        self._oxen = oxen
        self._messages = messages
        self._files = files
        self._references = references
        self._completions = CompletionWatcher(oxen)
        self._settings = settings
        self._metrics = metrics
        self._waiting: dict[UserKey, deque[str]] = {}
        self._last_served: dict[UserKey, int] = {}
        self._served = 0
        self._running: dict[str, asyncio.Task[None]] = {}
        self._running_by_user: Counter[UserKey] = Counter()
        self._critical: Counter[str] = Counter()
        self._stopping = False
        self._finished: Counter[str] = Counter()
        self._accepting = False
        self._reserved = 0
        self._cancelling: set[str] = set()
        self.on_finished: list[Callable[[Job], None]] = []
        metrics.gauge("dreamboard_jobs", "state", self._state_counts)

    async def start(self) -> None:
        """Resume every job left queued or running by a previous process, then accept new ones."""
        self._completions.start()
        self._accepting = True
        resumed = await self._store.unfinished_jobs()
        for job in resumed:
            self._waiting.setdefault((job.team_id, job.user_id), deque()).append(job.id)
        if resumed:
            log.info("resuming %d unfinished jobs", len(resumed))
        self._pump()

    def queued_for(self, team_id: str, user_id: str) -> int:
        """How many of this user's jobs are waiting for a slot."""
        return len(self._waiting.get((team_id, user_id), ()))

    def reserve_position(self) -> int:
        """Hold a place in line for a job being announced; `submit` (or `release_position`) ends it."""
        self._reserved += 1
        return self._waiting_count() + self._reserved

    def release_position(self) -> None:
        """Give back a reserved place whose job will not be submitted."""
        self._reserved = max(0, self._reserved - 1)

    def submit(self, job: Job) -> None:
        """Queue a stored job (after shutdown began it stays queued in the store and resumes on start)."""
        self.release_position()
        if not self._accepting:
            log.info("job %s stays queued until the next start", job.id)
            return
        self._waiting.setdefault((job.team_id, job.user_id), deque()).append(job.id)
        self._pump()

    async def cancel(self, job_id: str) -> None:
        """Cancel a job wherever it is: waiting (dropped from the line) or running (stopped, and its
        generations cancelled on Oxen). Either way it ends `cancelled`."""
        for user, queue in list(self._waiting.items()):
            if job_id in queue:
                queue.remove(job_id)
                if not queue:
                    del self._waiting[user]
                break
        task = self._running.get(job_id)
        if task is None:
            job = await self._store.get_job(job_id)
            if job is not None and not job.finished:
                await self._cancelled(job)
            return
        self._cancelling.add(job_id)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def _cancelled(self, job: Job) -> None:
        await self._cancel_generations(job)
        await self._store.finish(job.id, JobState.CANCELLED)
        self._finished[JobState.CANCELLED] += 1
        log.info("job %s cancelled", job.id)
        await self._messages.update_status(await self._reload(job))

    def _waiting_count(self) -> int:
        return sum(len(queue) for queue in self._waiting.values())

    async def stop(self, grace: float = 20.0) -> None:
        """Stop taking work and cancel running jobs at a safe point: at once where they only wait for
        Oxen (their state is recorded), after the step in progress where they are submitting to Oxen or
        uploading (so nothing is paid or posted twice), waiting `grace` seconds at most."""
        self._accepting = False
        self._stopping = True
        self._waiting.clear()
        for job_id, task in self._running.items():
            if not self._critical[job_id]:
                task.cancel()
        tasks = list(self._running.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._completions.stop()

    @contextlib.contextmanager
    def _critical_section(self, job_id: str) -> Iterator[None]:
        """A step that shutdown lets finish (an Oxen submission and recording its id, an upload);
        when shutdown is under way, the job is cancelled as soon as its last such step ends."""
        self._critical[job_id] += 1
        try:
            yield
        finally:
            self._critical[job_id] -= 1
            if self._critical[job_id] <= 0:
                del self._critical[job_id]
                task = self._running.get(job_id)
                if self._stopping and task is not None:
                    task.cancel()

    def _state_counts(self) -> dict[str, float]:
        counts: dict[str, float] = {"queued": self._waiting_count(), "running": len(self._running)}
        counts.update({state: float(count) for state, count in self._finished.items()})
        return counts

    def _next_user(self) -> UserKey | None:
        """The waiting user with the fewest running jobs, least recently served first."""
        cap = self._settings.max_active_per_user
        eligible = [user for user in self._waiting if self._running_by_user[user] < cap]
        return min(
            eligible,
            key=lambda user: (self._running_by_user[user], self._last_served.get(user, -1)),
            default=None,
        )

    def _pump(self) -> None:
        while self._accepting and len(self._running) < self._settings.max_concurrent_jobs:
            user = self._next_user()
            if user is None:
                return
            queue = self._waiting[user]
            job_id = queue.popleft()
            if not queue:
                del self._waiting[user]
            self._served += 1
            self._last_served[user] = self._served
            self._running_by_user[user] += 1
            task = asyncio.create_task(self._run(job_id), name=f"job-{job_id}")
            self._running[job_id] = task
            task.add_done_callback(functools.partial(self._done, job_id, user))

    def _done(self, job_id: str, user: UserKey, _: asyncio.Task[None]) -> None:
        self._running.pop(job_id, None)
        self._running_by_user[user] -= 1
        if self._running_by_user[user] <= 0:
            del self._running_by_user[user]
        self._pump()

    async def _run(self, job_id: str) -> None:
        job = await self._store.get_job(job_id)
        if job is None:
            return
        if job.state is JobState.UPLOADED:
            await self._announce(job)
            return
        if job.finished:
            return
        started = time.perf_counter()
        log.info("job %s started (user %s, model %s, %d image(s))", job.id, job.user_id, job.model, job.n)
        try:
            async with asyncio.timeout(self._settings.oxen_job_timeout):
                await self._execute(job)
        except asyncio.CancelledError:
            if job.id not in self._cancelling:
                raise
            self._cancelling.discard(job.id)
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            await self._cancelled(job)
        except OxenError as exc:
            await self._fail(job, exc.user_message)
        except TimeoutError:
            await self._cancel_generations(job)
            minutes = self._settings.oxen_job_timeout / 60
            await self._fail(
                job, f"Oxen.ai did not finish within {minutes:g} minutes, so the job was stopped."
            )
        except SlackApiError as exc:
            error = slack_error(exc)
            if error in NOT_A_MEMBER:
                await self._fail(
                    job, "I can't post files here. Invite me with `/invite @Dreamboard` and retry."
                )
            else:
                log.warning("job %s: slack error %s", job.id, error)
                await self._fail(job, f"Slack refused the upload ({error}).")
        except (UploadError, ReferenceError) as exc:
            await self._fail(job, str(exc))
        except Exception:
            log.exception("job %s crashed", job.id)
            await self._fail(
                job, f"Something went wrong inside Dreamboard; it is logged under job `{job.id}`."
            )
        else:
            elapsed = time.perf_counter() - started
            self._metrics.observe("dreamboard_generation_seconds", elapsed)
            log.info("job %s uploaded in %.1fs", job.id, elapsed)
        for hook in self.on_finished:
            hook(job)

    async def _execute(self, job: Job) -> None:
        if job.status_ts is None:
            ts = await self._messages.post_status(job, position=1)
            await self._store.set_status_ts(job.id, ts, thread_ts=ts)
        schema = await self._oxen.model_schema(job.model)
        sources = [ReferenceSource.from_json(item) for item in job.params.get("references", [])]
        reference_urls = await self._references.resolve(sources)
        plan = plan_payload(
            schema, prompt=job.prompt, size=job.size, aspect_ratio=job.aspect_ratio, references=reference_urls
        )
        if job.size not in schema.limits.sizes:
            raise OxenError(FailureKind.INVALID, f"`{job.model}` does not offer size {job.size}.")
        if len(plan.base["prompt"]) > schema.limits.prompt_max:
            raise OxenError(
                FailureKind.INVALID,
                f"The prompt is longer than the {schema.limits.prompt_max:,} characters allowed.",
            )
        await self._store.mark_running(job.id, plan.notes)
        job = await self._reload(job)
        await self._messages.update_status(job)
        images = await self._store.images(job.id)
        produced = await _all_or_first_error([self._produce(job, plan, image) for image in images])
        urls = {image.idx: url for image, url in zip(images, produced, strict=True)}
        images = await self._store.images(job.id)
        if not any(urls.values()):
            raise classify_failure(None, images[0].error or "no image was produced")
        with self._critical_section(job.id):
            await self._deliver(job, images, urls)

    async def _produce(self, job: Job, plan: PayloadPlan, image: JobImage) -> str | None:
        """Submit (unless already submitted) and await one image; returns its URL, or None on failure."""
        if image.state is ImageState.FAILED:
            return None
        generation_id = image.oxen_generation_id
        if generation_id is None:
            body = plan.body_for(image.seed)
            with self._critical_section(job.id):
                try:
                    [generation_id] = await self._oxen.enqueue(body)
                except QueueUnavailableError:
                    url = await self._oxen.generate_sync(body, has_references=plan.references_sent > 0)
                    await self._store.set_image_outcome(job.id, image.idx, error=None, result_url=url)
                    return url
                await self._store.set_generation_id(job.id, image.idx, generation_id)
        while True:
            row = await self._oxen.poll(generation_id)
            if row.finished:
                break
            await self._completions.wait(generation_id, within=self._settings.oxen_poll_interval)
        if row.status == "succeeded" and row.result_url:
            await self._store.set_image_outcome(job.id, image.idx, error=None, result_url=row.result_url)
            return row.result_url
        reason = row.error_message or f"the generation ended {row.status}"
        await self._store.set_image_outcome(
            job.id, image.idx, error=classify_failure(None, reason).user_message
        )
        return None

    async def _deliver(self, job: Job, images: list[JobImage], urls: dict[int, str | None]) -> None:
        made = [image for image in images if urls.get(image.idx)]
        uploaded_before = all(image.file_id for image in made)
        shared_ts = (
            await self._files.share_ts(str(made[0].file_id), job.channel_id) if uploaded_before else None
        )
        if shared_ts is None:
            with tempfile.TemporaryDirectory(prefix=f"dreamboard-{job.id}-") as folder:
                results = await _all_or_first_error(
                    [self._download(job, image, str(urls[image.idx]), Path(folder)) for image in made]
                )
                file_ids = await self._files.send_bytes(results)
                await self._store.set_file_ids(job.id, file_ids)
                await self._files.share(
                    [(file_ids[result.idx], result.title) for result in results],
                    channel_id=job.channel_id,
                    thread_ts=str(job.thread_ts or job.status_ts),
                    comment=views.upload_comment(job, len(results)),
                )
            shared_ts = await self._upload_message_ts(file_ids[results[0].idx], job.channel_id)
        if shared_ts is not None:
            await self._store.add_message(
                job.channel_id,
                shared_ts,
                job.id,
                MessageKind.UPLOAD,
                thread_ts=job.thread_ts or job.status_ts,
            )
        await self._store.finish(job.id, JobState.UPLOADED)
        self._finished[JobState.UPLOADED] += 1
        await self._announce(await self._reload(job))

    async def _upload_message_ts(self, file_id: str, channel_id: str) -> str | None:
        """Best effort: the upload message's ts, so reactions on the image itself work too."""
        try:
            return await self._files.share_ts(file_id, channel_id)
        except SlackApiError as exc:
            log.info(
                "files.info for %s failed (%s); reactions work on the result card", file_id, slack_error(exc)
            )
            return None

    async def _announce(self, job: Job) -> None:
        """Post the result card of an uploaded job and mark its status message done."""
        parent = await self._store.get_job(job.parent_id) if job.parent_id else None
        card = views.result_card(job, await self._store.images(job.id), parent=parent)
        await self._store.set_card_ts(job.id, await self._messages.post_in_thread(job, card))
        await self._messages.update_status(job)

    async def _download(self, job: Job, image: JobImage, url: str, folder: Path) -> ResultFile:
        async with self._oxen.download(url) as response:
            content_type = response.headers.get("content-type", "image/jpeg").split(";")[0].strip()
            extension = mimetypes.guess_extension(content_type) or ".jpg"
            path = folder / f"{job.id}-{image.idx + 1}{extension}"
            written = 0
            with path.open("wb") as sink:
                async for chunk in response.aiter_bytes(256 * 1024):
                    written += len(chunk)
                    if written > MAX_RESULT_BYTES:
                        raise OxenError(FailureKind.UNAVAILABLE, "Oxen.ai sent an implausibly large image.")
                    sink.write(chunk)
        return ResultFile(
            idx=image.idx,
            path=path,
            filename=path.name,
            title=f"{job.prompt[:60]} · seed {image.seed}",
            alt_text=job.prompt,
        )

    async def _cancel_generations(self, job: Job) -> None:
        for image in await self._store.images(job.id):
            if image.oxen_generation_id and image.state is ImageState.SUBMITTED:
                try:
                    await self._oxen.cancel(image.oxen_generation_id)
                except OxenError as exc:
                    log.warning("job %s: cancelling %s failed: %s", job.id, image.oxen_generation_id, exc)

    async def _fail(self, job: Job, problem: str) -> None:
        log.info("job %s failed: %s", job.id, problem)
        await self._store.finish(job.id, JobState.FAILED, error=problem)
        self._finished[JobState.FAILED] += 1
        job = await self._reload(job)
        await self._messages.update_status(job, problem=problem)
        await self._messages.post_in_thread_quietly(job, views.failure_reply(job, problem))

    async def _reload(self, job: Job) -> Job:
        fresh = await self._store.get_job(job.id)
        assert fresh is not None
        return fresh


async def _all_or_first_error(coroutines: list[Coroutine[Any, Any, _T]]) -> list[_T]:
    """Run concurrently; on the first failure cancel the rest and raise that failure itself."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(coroutine) for coroutine in coroutines]
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]
