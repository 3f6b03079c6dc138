"""Intake: turning a validated request into a stored, announced and queued job.

The hand-off is one sequence: the job is stored under this replica's hold, with the user's waiting jobs
counted in the same transaction (so MAX_QUEUED_PER_USER holds across replicas), then the runner posts
its status message and puts it in the shared line. If Slack refuses the status message the job is
deleted; if anything else stops the hand-off, the hold expires and the job runs from the line.
Daily quotas are counted in that same transaction (which holds the job line's lock: Store.insert_job), so
two requests at once, on any replicas, cannot both take the last images of the day.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from bot.backends.base import ImageBackend
from bot.domain.errors import CapReachedError
from bot.domain.kits import Kit, KitApplication, apply_kit, reapply
from bot.domain.permutations import QueueRoomError, quota_refusal
from bot.domain.quotas import QuotaExceededError, QuotaPolicy, Usage
from bot.domain.requests import GenerationRequest, Limits
from bot.features.references import Collected
from bot.jobs.queue import Ticket
from bot.jobs.runner import JobRunner
from bot.slack.errors import SlackError, SlackErrorKind
from bot.slack.membership import ChannelAccess
from bot.store.model import Hold, Job, JobImage, NewJob, QuotaGate
from bot.store.store import Store
from bot.views import blocks as views

BUSY_AFTER = 10.0
"""When a new status message would wait longer than this (Slack's seconds) for its turn in the channel,
the user is told at once that it is coming, instead of seeing nothing meanwhile."""
BUSY_NOTICE = ":hourglass: This channel is busy"
"""How that notice starts (tests and the bench tell it apart from answers that end a request)."""

Notify = Callable[[views.Message], Awaitable[object]]
StoreSet = Callable[[list[NewJob], Hold, QuotaGate | None], Awaitable[list[tuple[Job, list[JobImage]]]]]
"""Stores a permutation set's jobs under a hold, checking today's quota (with the set itself, in one
transaction)."""


@dataclass(frozen=True)
class AdmittedSet:
    """A permutation set that passed admission: a place in line and a stored job for each combination,
    and the user's 'N of M left today' line when they are past 80 % of their quota."""

    tickets: list[Ticket]
    jobs: list[tuple[Job, list[JobImage]]]
    left_line: str | None


__all__ = [
    "AdmittedSet",
    "CapReachedError",
    "Intake",
    "NotInChannelError",
    "QueueRoomError",
    "QuotaExceededError",
    "StatusPostError",
]


class NotInChannelError(Exception):
    """Slack refused to let the bot post in the conversation (not a member, or archived)."""

    def __init__(self, *, archived: bool = False) -> None:
        super().__init__("archived" if archived else "not in channel")
        self.archived = archived


class StatusPostError(Exception):
    """Slack did not take the status message, so the job was not started (nothing was submitted)."""

    def __init__(self, error: SlackError) -> None:
        super().__init__(str(error))
        self.error = error

    @property
    def user_message(self) -> str:
        """What to tell the person who asked."""
        if self.error.kind is SlackErrorKind.RATE_LIMITED:
            reason = "Slack is rate-limiting Dreamboard in this channel"
        elif self.error.kind is SlackErrorKind.UNAVAILABLE:
            reason = "Slack did not answer when Dreamboard posted the status message"
        else:
            reason = f"Slack refused Dreamboard's status message ({self.error.code})"
        return f":warning: {reason}, so the job was not started and nothing was sent to Oxen.ai. Try again."


class Intake:
    """Creates jobs: admits, draws seeds, stores, and hands over to the runner."""

    def __init__(
        self,
        *,
        store: Store,
        backend: ImageBackend,
        runner: JobRunner,
        default_model: str,
        default_size: str,
        access: ChannelAccess | None = None,
        backlog: Callable[[str], float] | None = None,
        quotas: QuotaPolicy | None = None,
        clock: Callable[[], float] = time.time,
        kits: Callable[[str], Awaitable[Kit]] | None = None,
    ) -> None:
        """`access` checks a channel can take the images before anything is paid; `backlog(channel)`:
        Slack's seconds until a post there would be sent (the pacer's); `quotas`: the daily caps,
        with `clock` the wall time they are counted at; `kits(channel)`: the channel's kit."""
        self._kits = kits
        self._quotas = quotas if quotas is not None and quotas.enabled else None
        self._clock = clock
        self._access = access
        self._backlog = backlog
        self._default_model = default_model
        self._default_size = default_size
        self._store = store
        self._backend = backend
        self._runner = runner

    async def usage_today(self, team_id: str, user_id: str, channel_id: str) -> str | None:
        """The user's and the channel's images today against the caps (None: no cap is set)."""
        if self._quotas is None:
            return None
        now = self._clock()
        usage = await self._usage(self._quotas, team_id, user_id, channel_id, now)
        return self._quotas.report(usage, now=now)

    async def _usage(
        self, quotas: QuotaPolicy, team_id: str, user_id: str, channel_id: str, now: float
    ) -> Usage:
        since = quotas.day_start(now)
        user_used, channel_used = await self._store.quota_usage(
            team_id, user_id, channel_id, since, weight_4k=quotas.weight_4k
        )
        return Usage(user_used, channel_used)

    def model_for(self, request: GenerationRequest) -> str:
        """The model a request will run on."""
        return request.model or self._default_model

    def limits_for(self, model: str | None = None) -> Limits:
        """Validation bounds from what the backend knows now (defaults before it fetched the schema)."""
        return self._backend.limits(model or self._default_model)

    async def start_job(
        self,
        request: GenerationRequest,
        *,
        team_id: str,
        channel_id: str,
        user_id: str,
        thread_ts: str | None = None,
        references: Collected | None = None,
        request_key: str | None = None,
        notify: Notify | None = None,
        kit: KitApplication | None = None,
    ) -> Job:
        """Store, announce and queue a job: with the channel's kit, or (`kit`) the one a job it repeats
        recorded (see domain/kits.py). Raises CapReachedError, NotInChannelError, StatusPostError,
        QuotaExceededError (a CapReachedError: today's images are used up, or the job would not fit),
        or store.DuplicateRequestError when `request_key` already made a job. Nothing is stored or posted
        when the bot could not deliver the images into `channel_id` (see ChannelAccess). When the channel
        is so busy that the status message must wait its turn, `notify` first tells the user it is coming."""
        if self._access is not None:
            try:
                await self._access.check(channel_id)
            except SlackError:
                raise NotInChannelError() from None
        request, applied = await self._kit_for(request, channel_id, references, kit)
        new_job = self._new_job(
            request,
            kit=applied,
            team_id=team_id,
            channel_id=channel_id,
            user_id=user_id,
            thread_ts=thread_ts,
            references=references,
            request_key=request_key,
        )
        lines: list[str | None] = []
        quota = None
        if self._quotas is not None:
            quotas, now = self._quotas, self._clock()

            def admit(user_used: int, channel_used: int) -> None:
                usage = Usage(user_used, channel_used)
                lines.append(quotas.admit(usage, n=new_job.n, size=new_job.size, now=now))

            quota = QuotaGate(quotas.day_start(now), quotas.weight_4k, admit)
        # A second delivery of the same Slack request is a duplicate, not a job over the cap: the store
        # looks for it first, in the transaction that counts today's images and stores the job.
        job, images = await self._store.insert_job(new_job, self._runner.hold(), quota)
        [ticket] = await self._runner.tickets([job])
        left_line = lines[-1] if lines else None
        if notify is not None:
            await self.tell_if_busy(channel_id, notify)
        accepted = await self.accept(ticket, job, images)
        if notify is not None and left_line is not None:
            await notify(views.quota_left(left_line))
        return accepted

    async def admit_set(
        self,
        requests: Sequence[GenerationRequest],
        *,
        team_id: str,
        channel_id: str,
        user_id: str,
        request_key: str,
        params: dict[str, Any],
        store: StoreSet,
    ) -> AdmittedSet:
        """Admit a permutation set as a whole, or refuse it whole: the channel is checked, then
        `store(jobs, hold, quota)` stores them in one transaction that first counts every combination
        against today's quota (QuotaExceededError naming what would fit) and the user's waiting jobs
        (QueueRoomError when they do not all fit). The jobs' request keys are `request_key#1`, `#2`, ….
        Every combination without `--seed` gets the same seed, drawn once, so the variants compare.
        Raises NotInChannelError, or DuplicateRequestError for a redelivered request. Nothing is stored
        when anything is refused. The channel's kit applies to every combination, as to any job."""
        if self._access is not None:
            try:
                await self._access.check(channel_id)
            except SlackError:
                raise NotInChannelError() from None
        new_jobs = []
        for number, asked in enumerate(requests, start=1):
            request, applied = await self._kit_for(asked, channel_id, None, None)
            job = self._new_job(
                request, kit=applied, team_id=team_id, channel_id=channel_id, user_id=user_id,
                thread_ts=None, references=None, request_key=f"{request_key}#{number}",
            )  # fmt: skip
            new_jobs.append(replace(job, params={**job.params, **params}))
        drawn = [job for job in new_jobs if not job.seed_given]
        if drawn:
            low, high = min((self.limits_for(job.model).seed_range for job in drawn), key=lambda r: r[1])
            seed = random.randint(low, high - max(job.n for job in drawn) + 1)
            new_jobs = [job if job.seed_given else replace(job, seed=seed) for job in new_jobs]
        lines: list[str | None] = []
        quota = None
        if self._quotas is not None:
            quotas, now = self._quotas, self._clock()
            costs = [job.n * quotas.weight(job.size) for job in new_jobs]
            has_4k = any(quotas.weight(job.size) > 1 for job in new_jobs)

            def admit(user_used: int, channel_used: int) -> None:
                usage = Usage(user_used, channel_used)
                refusal = quota_refusal(quotas, usage, costs, now=now, has_4k=has_4k)
                if refusal is not None:
                    raise QuotaExceededError(refusal)
                # The costs are already weighted: asked as that many 2K images (weight 1), for the line.
                lines.append(quotas.admit(usage, n=sum(costs), size="2K", now=now))

            quota = QuotaGate(quotas.day_start(now), quotas.weight_4k, admit)
        hold = self._runner.hold()
        try:
            stored = await store(new_jobs, hold, quota)
        except (QueueRoomError, QuotaExceededError):
            raise
        except CapReachedError as exc:  # the store's count of the user's waiting jobs
            room = max(0, (hold.max_waiting or 0) - exc.queued)
            raise QueueRoomError(room, len(new_jobs)) from None
        tickets = await self._runner.tickets([job for job, _ in stored])
        return AdmittedSet(tickets, stored, lines[-1] if lines else None)

    async def accept(self, ticket: Ticket, job: Job, images: list[JobImage]) -> Job:
        """Announce an admitted, stored job and put it in line; raises NotInChannelError or
        StatusPostError (the job is then discarded and its place given back)."""
        try:
            return await self._runner.accept(ticket, job, images)
        except SlackError as exc:
            if exc.kind in (SlackErrorKind.NOT_IN_CHANNEL, SlackErrorKind.ARCHIVED):
                raise NotInChannelError(archived=exc.kind is SlackErrorKind.ARCHIVED) from None
            raise StatusPostError(exc) from None

    async def tell_if_busy(self, channel_id: str, notify: Notify) -> None:
        """When a new status message in `channel_id` would wait longer than BUSY_AFTER for its turn,
        tell the user at once that it is coming."""
        wait = self._backlog(channel_id) if self._backlog is not None else 0.0
        if wait > BUSY_AFTER:
            await notify(
                views.notice(
                    f"{BUSY_NOTICE}: Slack lets Dreamboard post about once a second here, so your request's "
                    f"status message will appear in about {wait:.0f} s. No need to send it again."
                )
            )

    async def _kit_for(
        self,
        request: GenerationRequest,
        channel_id: str,
        references: Collected | None,
        recorded: KitApplication | None,
    ) -> tuple[GenerationRequest, KitApplication | None]:
        """The request with the kit's defaults, and what the kit gives the job (its pins after the job's
        own references, within the model's limit)."""
        own = len(references.sources) if references is not None else 0
        limits = self.limits_for(self.model_for(request))
        if recorded is not None:
            return request, reapply(request, recorded, own_references=own, limits=limits)
        if self._kits is None:
            return request, None
        return apply_kit(request, await self._kits(channel_id), own_references=own, limits=limits)

    def _new_job(
        self,
        request: GenerationRequest,
        *,
        team_id: str,
        channel_id: str,
        user_id: str,
        thread_ts: str | None,
        references: Collected | None,
        request_key: str | None,
        kit: KitApplication | None,
    ) -> NewJob:
        model = self.model_for(request)
        aspect_ratio = request.aspect_ratio
        if references and references.sources and aspect_ratio is None:
            aspect_ratio = "match_input_image"
        params: dict[str, Any] = {}
        if references is not None:
            params["references"] = [source.to_json() for source in references.sources]
            params["left_out"] = references.left_out
            params["skipped"] = references.skipped
        if kit is not None and kit.to_params():
            params["kit"] = kit.to_params()
        if request.seed is None:
            low, high = self.limits_for(model).seed_range
            seed = random.randint(low, high - request.n + 1)
        else:
            seed = request.seed
        return NewJob(
            id=secrets.token_hex(5),
            team_id=team_id,
            channel_id=channel_id,
            user_id=user_id,
            prompt=request.prompt,
            model=model,
            size=request.size or self._default_size,
            aspect_ratio=aspect_ratio,
            seed=seed,
            seed_given=request.seed is not None,
            n=request.n,
            thread_ts=thread_ts,
            parent_id=references.parent_id if references else None,
            params=params,
            request_key=request_key,
        )
