"""Posting and updating Dreamboard's own messages about a job: status, result card, replies.

Every call goes through `errors.call`, so callers see only SlackError. The status message carries
message metadata naming its job, so after a lost answer or a crash it can be found instead of being
posted twice (slack.md, message metadata; read back with `include_all_metadata`). The result card is
the status message rewritten in place, its metadata switched to CARD_EVENT.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.secrets import Redactor
from bot.slack.errors import SlackError, call
from bot.slack.paging import message_pages
from bot.store.model import Job
from bot.views import blocks as views

log = logging.getLogger(__name__)

CARD_EVENT = "dreamboard_result"
"""The metadata event_type of a result card; its payload names the job."""
STATUS_EVENT = "dreamboard_status"
"""The metadata event_type of a status message; its payload names the job."""
LOOKBACK = 120.0
"""How long before a job was created its status message may carry a ts (clock skew with Slack)."""


class SlackMessages:
    """Typed wrapper over the chat.* calls the job flow needs."""

    def __init__(self, client: AsyncWebClient, redactor: Redactor) -> None:
        self._client = client
        self._redactor = redactor

    async def post_status(self, job: Job, *, position: int, generating: bool = False) -> str:
        """Post the status message (a new root, or a reply when the job lives in a thread), as queued or,
        for a job that starts at once, `generating`; its ts."""
        response = await call(
            self._client.chat_postMessage(
                channel=job.channel_id,
                thread_ts=job.thread_ts,
                unfurl_links=False,
                metadata=_tag(STATUS_EVENT, job),
                **views.status(job, position=position, generating=generating),
            )
        )
        return str(response["ts"])

    async def find_status(self, job: Job) -> str | None:
        """The ts of this job's status message if Slack holds it (after a lost answer or a crash):
        in its thread, or among the channel's messages since the job was created."""
        if job.thread_ts is not None:
            return await self._find_in_thread(job, job.thread_ts, STATUS_EVENT)
        pages = message_pages(
            lambda cursor: self._client.conversations_history(
                channel=job.channel_id,
                oldest=f"{job.created_at - LOOKBACK:.6f}",
                include_all_metadata=True,
                limit=200,
                cursor=cursor,
            )
        )
        return await _first_tagged(pages, STATUS_EVENT, job)

    async def update_status(self, job: Job, *, problem: str | None = None) -> None:
        """Rewrite the status message for the job's current state; failures are logged, not raised."""
        if job.status_ts is None:
            return
        message = views.status(job, problem=self._redactor.redact(problem) if problem else None)
        try:
            await call(self._client.chat_update(channel=job.channel_id, ts=job.status_ts, **message))
        except SlackError as exc:
            log.warning("job %s: updating the status message failed (%s)", job.id, exc)

    async def show_card(self, job: Job, card: dict[str, Any]) -> None:
        """Rewrite the status message into the result card, tagged as the card (idempotent); raises
        SlackError."""
        await call(
            self._client.chat_update(
                channel=job.channel_id, ts=str(job.status_ts), metadata=_tag(CARD_EVENT, job), **card
            )
        )

    async def find_card(self, job: Job) -> str | None:
        """The ts of a result card an earlier version posted separately into the thread, if any."""
        return await self._find_in_thread(job, str(job.root_ts), CARD_EVENT)

    async def _find_in_thread(self, job: Job, thread_ts: str, event_type: str) -> str | None:
        pages = message_pages(
            lambda cursor: self._client.conversations_replies(
                channel=job.channel_id, ts=thread_ts, include_all_metadata=True, limit=200, cursor=cursor
            )
        )
        return await _first_tagged(pages, event_type, job)

    async def post_failure(self, job: Job, problem: str) -> None:
        """Explain a failed job in its thread; a Slack failure here is only logged."""
        message = views.failure_reply(job, self._redactor.redact(problem))
        try:
            await call(
                self._client.chat_postMessage(
                    channel=job.channel_id, thread_ts=job.root_ts, unfurl_links=False, **message
                )
            )
        except SlackError as exc:
            log.warning("job %s: posting the failure reply failed (%s)", job.id, exc)


def _tag(event_type: str, job: Job) -> dict[str, Any]:
    return {"event_type": event_type, "event_payload": {"job_id": job.id}}


async def _first_tagged(
    pages: AsyncGenerator[list[dict[str, Any]], None], event_type: str, job: Job
) -> str | None:
    """The ts of the first message tagged with `event_type` for `job`, reading no further pages."""
    async with contextlib.aclosing(pages):
        async for messages in pages:
            for message in messages:
                metadata = message.get("metadata") or {}
                payload = metadata.get("event_payload") or {}
                if metadata.get("event_type") == event_type and payload.get("job_id") == job.id:
                    return str(message["ts"])
    return None
