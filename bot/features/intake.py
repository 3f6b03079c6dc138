"""Intake: turning a validated request into a stored, announced and queued job."""

from __future__ import annotations

import random
import secrets
from typing import Any

from slack_sdk.errors import SlackApiError

from bot.app.config import Settings
from bot.backends.oxen import OxenClient
from bot.domain.requests import GenerationRequest, Limits
from bot.features.references import Collected
from bot.jobs.runner import JobRunner
from bot.slack.messages import NOT_A_MEMBER, SlackMessages, slack_error
from bot.store.model import Job, NewJob
from bot.store.sqlite import Store


class CapReachedError(Exception):
    """The user already has the maximum number of jobs waiting."""

    def __init__(self, queued: int) -> None:
        super().__init__(f"{queued} jobs queued")
        self.queued = queued


class NotInChannelError(Exception):
    """Slack refused to let the bot post in the conversation."""


class Intake:
    """Creates jobs: checks caps, draws seeds, stores, posts the status message, queues."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        oxen: OxenClient,
        runner: JobRunner,
        messages: SlackMessages,
    ) -> None:
        self._settings = settings
        self._store = store
        self._oxen = oxen
        self._runner = runner
        self._messages = messages

    def model_for(self, request: GenerationRequest) -> str:
        """The model a request will run on."""
        return request.model or self._settings.oxen_model

    def limits_for(self, model: str | None = None) -> Limits:
        """Validation bounds from the model's cached schema, or defaults before it is fetched."""
        schema = self._oxen.cached_schema(model or self._settings.oxen_model)
        return schema.limits if schema else Limits()

    async def start_job(
        self,
        request: GenerationRequest,
        *,
        team_id: str,
        channel_id: str,
        user_id: str,
        thread_ts: str | None = None,
        references: Collected | None = None,
    ) -> Job:
        """Store and queue a job; raises CapReachedError or NotInChannelError."""
        queued = self._runner.queued_for(team_id, user_id)
        if queued >= self._settings.max_queued_per_user:
            raise CapReachedError(queued)
        model = self.model_for(request)
        limits = self.limits_for(model)
        aspect_ratio = request.aspect_ratio
        if references and references.sources and aspect_ratio is None:
            aspect_ratio = "match_input_image"
        params: dict[str, Any] = {}
        if references is not None:
            params["references"] = [source.to_json() for source in references.sources]
            params["left_out"] = references.left_out
            params["skipped"] = references.skipped
        if request.seed is None:
            low, high = limits.seed_range
            seed = random.randint(low, high - request.n + 1)
        else:
            seed = request.seed
        job = await self._store.insert_job(
            NewJob(
                id=secrets.token_hex(5),
                team_id=team_id,
                channel_id=channel_id,
                user_id=user_id,
                prompt=request.prompt,
                model=model,
                size=request.size or self._settings.oxen_size,
                aspect_ratio=aspect_ratio,
                seed=seed,
                seed_given=request.seed is not None,
                n=request.n,
                thread_ts=thread_ts,
                parent_id=references.parent_id if references else None,
                params=params,
            )
        )
        try:
            ts = await self._messages.post_status(job, position=self._runner.reserve_position())
        except SlackApiError as exc:
            self._runner.release_position()
            await self._store.discard_unstarted(job.id)
            if slack_error(exc) in NOT_A_MEMBER:
                raise NotInChannelError from None
            raise
        await self._store.set_status_ts(job.id, ts, thread_ts=thread_ts or ts)
        stored = await self._store.get_job(job.id)
        assert stored is not None
        self._runner.submit(stored)
        return stored
