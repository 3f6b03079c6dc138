"""Posting and updating Dreamboard's own messages about a job: status, result card, replies.

Every call goes through `errors.call`, so callers see only SlackError. The result card carries message
metadata naming its job, so after a lost answer or a crash the card can be found in the thread
instead of being posted twice (slack.md, message metadata; read back with `include_all_metadata`).
"""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.secrets import Redactor
from bot.slack.errors import SlackError, call
from bot.store.model import Job
from bot.views import blocks as views

log = logging.getLogger(__name__)

CARD_EVENT = "dreamboard_result"
"""The metadata event_type of a result card; its payload names the job."""


class SlackMessages:
    """Typed wrapper over the chat.* calls the job flow needs."""

    def __init__(self, client: AsyncWebClient, redactor: Redactor) -> None:
        self._client = client
        self._redactor = redactor

    async def post_status(self, job: Job, *, position: int) -> str:
        """Post the status message (a new root, or a reply when the job lives in a thread); its ts."""
        response = await call(
            self._client.chat_postMessage(
                channel=job.channel_id,
                thread_ts=job.thread_ts,
                unfurl_links=False,
                **views.status(job, position=position),
            )
        )
        return str(response["ts"])

    async def update_status(self, job: Job, *, problem: str | None = None) -> None:
        """Rewrite the status message for the job's current state; failures are logged, not raised."""
        if job.status_ts is None:
            return
        message = views.status(job, problem=self._redactor.redact(problem) if problem else None)
        try:
            await call(self._client.chat_update(channel=job.channel_id, ts=job.status_ts, **message))
        except SlackError as exc:
            log.warning("job %s: updating the status message failed (%s)", job.id, exc)

    async def post_card(self, job: Job, card: dict[str, Any]) -> str:
        """Post the result card into the job's thread, tagged with the job in its metadata; its ts."""
        response = await call(
            self._client.chat_postMessage(
                channel=job.channel_id,
                thread_ts=job.root_ts,
                unfurl_links=False,
                metadata={"event_type": CARD_EVENT, "event_payload": {"job_id": job.id}},
                **card,
            )
        )
        return str(response["ts"])

    async def find_card(self, job: Job) -> str | None:
        """The ts of this job's result card if it is already in the thread (read page by page)."""
        cursor: str | None = None
        while True:
            page = await call(
                self._client.conversations_replies(
                    channel=job.channel_id,
                    ts=str(job.root_ts),
                    include_all_metadata=True,
                    limit=200,
                    cursor=cursor,
                )
            )
            for message in page.get("messages") or []:
                metadata = message.get("metadata") or {}
                payload = metadata.get("event_payload") or {}
                if metadata.get("event_type") == CARD_EVENT and payload.get("job_id") == job.id:
                    return str(message["ts"])
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not page.get("has_more") or not cursor:
                return None

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

    async def ephemeral(self, channel: str, user: str, thread_ts: str | None, message: views.Message) -> bool:
        """Show `message` to one user; False (logged) when Slack refused."""
        try:
            await call(
                self._client.chat_postEphemeral(channel=channel, user=user, thread_ts=thread_ts, **message)
            )
        except SlackError as exc:
            log.warning("ephemeral reply to %s in %s failed (%s)", user, channel, exc)
            return False
        return True
