"""Posting and updating Dreamboard's own messages: status, result cards and replies."""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.store.model import Job
from bot.views import blocks as views

log = logging.getLogger(__name__)

NOT_A_MEMBER = frozenset({"not_in_channel", "channel_not_found", "is_archived"})


def slack_error(exc: SlackApiError) -> str:
    """The `error` code of a failed Web API call."""
    return str(exc.response.get("error", "unknown_error"))


class SlackMessages:
    """Thin typed wrapper over the chat.* calls the job flow needs."""

    def __init__(self, client: AsyncWebClient) -> None:
        self._client = client

    async def post_status(self, job: Job, *, position: int) -> str:
        """Post the status message (a new root, or a reply when the job lives in a thread); returns its ts."""
        response = await self._client.chat_postMessage(
            channel=job.channel_id,
            thread_ts=job.thread_ts,
            unfurl_links=False,
            **views.status(job, position=position),
        )
        return str(response["ts"])

    async def update_status(self, job: Job, *, problem: str | None = None) -> None:
        """Rewrite the status message for the job's current state; failures are logged, not raised."""
        if job.status_ts is None:
            return
        await self._quietly(
            "chat_update", channel=job.channel_id, ts=job.status_ts, **views.status(job, problem=problem)
        )

    async def post_in_thread(self, job: Job, message: dict[str, Any]) -> str:
        """Post a reply in the job's thread; returns its ts."""
        response = await self._client.chat_postMessage(
            channel=job.channel_id, thread_ts=job.thread_ts or job.status_ts, unfurl_links=False, **message
        )
        return str(response["ts"])

    async def post_in_thread_quietly(self, job: Job, message: dict[str, Any]) -> None:
        """Like post_in_thread, but a Slack failure is only logged (used on failure paths)."""
        await self._quietly(
            "chat_postMessage", channel=job.channel_id, thread_ts=job.thread_ts or job.status_ts, **message
        )

    async def _quietly(self, method: str, **kwargs: Any) -> None:
        try:
            await getattr(self._client, method)(**kwargs)
        except SlackApiError as exc:
            log.warning("slack %s failed: %s", method, slack_error(exc))
