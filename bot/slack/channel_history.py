"""Reading a channel's recent top-level messages back, to find one the bot tagged with metadata.

conversations.history is the only way to see top-level messages again, and it is rate-limited hard for
some apps (1 request a minute and at most 15 messages, slack.md §3.4): callers use it only to recover
after a crash, read one page of at most 15 messages from a known time on, and accept "not found".
Metadata is in the answer only with include_all_metadata
(https://docs.slack.dev/reference/methods/conversations.history).
"""

from __future__ import annotations

from typing import Any

from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.errors import call

PAGE_LIMIT = 15


class ChannelHistory:
    """Finds the bot's own tagged messages among a channel's latest top-level messages."""

    def __init__(self, client: AsyncWebClient) -> None:
        self._client = client

    async def find_tagged(
        self, channel: str, *, after_ts: str | None, event_type: str, payload: dict[str, Any]
    ) -> str | None:
        """The ts of a message posted after the message `after_ts` (any time when None) whose metadata
        has `event_type` and includes `payload`, among the PAGE_LIMIT newest; raises SlackError."""
        page = await call(
            self._client.conversations_history(
                channel=channel, oldest=after_ts, limit=PAGE_LIMIT, include_all_metadata=True
            )
        )
        for message in page.get("messages") or []:
            metadata = message.get("metadata") or {}
            found = metadata.get("event_payload") or {}
            if metadata.get("event_type") == event_type and all(
                found.get(k) == v for k, v in payload.items()
            ):
                return str(message["ts"])
        return None
