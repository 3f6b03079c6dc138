"""SlackGateway: the Web API calls the use cases make, typed, each failure a SlackError; and the
redaction of the two ways text reaches Slack around the Web API client: Bolt's `ack` bodies and
`respond` (response_url) posts.

The job engine's own messages live in messages.py and its uploads in files.py; everything else a
feature or listener asks of Slack is here, so no module above bot/slack calls the SDK client. Web API
calls are redacted by the client itself (pacing.PacedWebClient); a text file's content, which the
SDK sends to its upload URL itself, is redacted here.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from slack_bolt.async_app import AsyncBoltContext
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_bolt.response import BoltResponse
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook import WebhookResponse

from bot.domain.secrets import Redactor
from bot.slack.errors import SlackError, call
from bot.slack.paging import message_pages

log = logging.getLogger(__name__)

Message = Mapping[str, Any]


class SlackGateway:
    """Messages, views, users and threads, for the use cases."""

    def __init__(self, client: AsyncWebClient, redactor: Redactor | None = None) -> None:
        self._client = client
        self.redactor = redactor or Redactor(())
        self._workspace_url: str | None = None

    async def workspace_url(self) -> str:
        """The workspace's base URL (from auth.test, asked once)."""
        if self._workspace_url is None:
            self._workspace_url = str((await call(self._client.auth_test()))["url"])
        return self._workspace_url

    async def post(self, channel: str, message: Message, *, thread_ts: str | None = None) -> tuple[str, str]:
        """Post a message; (channel, ts) as Slack reports them (a user id as channel opens the DM)."""
        response = await call(
            self._client.chat_postMessage(channel=channel, thread_ts=thread_ts, unfurl_links=False, **message)
        )
        return str(response["channel"]), str(response["ts"])

    async def ephemeral(self, channel: str, user: str, thread_ts: str | None, message: Message) -> bool:
        """Show `message` to one user; False (logged) when Slack refused."""
        return await self.quietly(
            self.ephemeral_or_raise(channel, user, thread_ts, message),
            what=f"ephemeral reply to {user} in {channel}",
        )

    async def ephemeral_or_raise(
        self, channel: str, user: str, thread_ts: str | None, message: Message
    ) -> None:
        """Show `message` to one user; raises SlackError."""
        await call(
            self._client.chat_postEphemeral(channel=channel, user=user, thread_ts=thread_ts, **message)
        )

    async def update(self, channel: str, ts: str, message: Message) -> bool:
        """Rewrite one of the bot's messages; False (logged) when Slack refused."""
        return await self.quietly(
            self._client.chat_update(channel=channel, ts=ts, **message), what=f"chat.update {ts}"
        )

    async def delete_message(self, channel: str, ts: str) -> bool:
        """Delete one of the bot's messages; False (logged) when Slack refused."""
        return await self.quietly(self._client.chat_delete(channel=channel, ts=ts), what=f"chat.delete {ts}")

    async def delete_file(self, file_id: str) -> bool:
        """Delete one of the bot's files; False (logged) when Slack refused."""
        return await self.quietly(self._client.files_delete(file=file_id), what=f"files.delete {file_id}")

    async def is_admin(self, user: str) -> bool:
        """Whether the user is a workspace admin or owner (False when Slack cannot tell)."""
        try:
            profile = (await call(self._client.users_info(user=user)))["user"]
        except SlackError as exc:
            log.warning("users.info for %s failed: %s", user, exc)
            return False
        return bool(profile.get("is_admin") or profile.get("is_owner"))

    async def user_zone(self, user: str) -> tuple[str | None, int]:
        """The user's time zone as users.info reports it: (`tz`, `tz_offset` in seconds east of UTC);
        (None, 0), logged, when Slack cannot tell."""
        try:
            profile = (await call(self._client.users_info(user=user)))["user"]
        except SlackError as exc:
            log.warning("users.info for %s failed, counting the day in UTC: %s", user, exc)
            return None, 0
        zone = profile.get("tz")
        return (str(zone) if zone else None), int(profile.get("tz_offset") or 0)

    async def publish_home_or_raise(self, user: str, view: dict[str, Any]) -> None:
        """Publish a user's App Home tab; raises SlackError."""
        await call(self._client.views_publish(user_id=user, view=view))

    async def publish_home(self, user: str, view: dict[str, Any]) -> bool:
        """Publish a user's App Home tab; False (logged) when Slack refused."""
        return await self.quietly(
            self._client.views_publish(user_id=user, view=view), what=f"views.publish for {user}"
        )

    async def open_view(self, trigger_id: str, view: dict[str, Any]) -> None:
        """Open a modal (the trigger id is valid for 3 s)."""
        await call(self._client.views_open(trigger_id=trigger_id, view=view))

    async def upload_text(self, channel: str, *, content: str, filename: str, title: str) -> None:
        """Share a text file (a CSV export) in a conversation."""
        redact = self.redactor.redact
        await call(
            self._client.files_upload_v2(
                channel=channel, content=redact(content), filename=redact(filename), title=redact(title)
            )
        )

    async def upload_image(
        self, channel: str, *, content: bytes, filename: str, title: str, alt_text: str
    ) -> None:
        """Share an image the bot drew (the usage chart) in a conversation, with its alt text (at most
        1000 characters, slack.md); raises SlackError."""
        redact = self.redactor.redact
        await call(
            self._client.files_upload_v2(
                channel=channel,
                file=content,
                filename=filename,
                title=redact(title),
                alt_txt=redact(alt_text),
            )
        )

    async def thread_messages(self, channel: str, ts: str) -> list[dict[str, Any]]:
        """Every message of a thread, oldest first, read 200 at a time."""
        pages = message_pages(
            lambda cursor: self._client.conversations_replies(
                channel=channel, ts=ts, limit=200, cursor=cursor
            )
        )
        return [message async for page in pages for message in page]

    async def find_tagged(
        self, channel: str, *, oldest: float, event_type: str, payload: Message
    ) -> str | None:
        """The ts of the first channel message since `oldest` whose metadata is `event_type` with this
        payload (a message posted before a crash or a lost answer), or None."""
        pages = message_pages(
            lambda cursor: self._client.conversations_history(
                channel=channel, oldest=f"{oldest:.6f}", include_all_metadata=True, limit=200, cursor=cursor
            )
        )
        async with contextlib.aclosing(pages):
            async for page in pages:
                for message in page:
                    metadata = message.get("metadata") or {}
                    if metadata.get("event_type") == event_type and metadata.get("event_payload") == payload:
                        return str(message["ts"])
        return None

    async def reacted_message(self, channel: str, ts: str) -> dict[str, Any]:
        """The message a reaction is on, with its files: reactions.get with full=True, which works for
        thread replies too and is not held to conversations.history's limits (slack.md §3.4)."""
        response = await call(self._client.reactions_get(channel=channel, timestamp=ts, full=True))
        return dict(response.get("message") or {})

    async def file_info(self, file_id: str) -> dict[str, Any]:
        """A file object (for events that carry a stub)."""
        return dict((await call(self._client.files_info(file=file_id)))["file"])

    @staticmethod
    async def quietly(request: Awaitable[object], *, what: str) -> bool:
        """Await a call whose failure is only logged; whether it succeeded."""
        try:
            await call(request)
        except SlackError as exc:
            log.warning("%s failed: %s", what, exc)
            return False
        return True


class RedactedAck(AsyncAck):
    """Bolt's `ack` with every string of the answer redacted (the ack body is the HTTP response, or the
    Socket Mode envelope answer)."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._redactor = redactor

    async def __call__(self, *args: Any, **kwargs: Any) -> BoltResponse:
        """`ack(...)`, redacted."""
        redact = self._redactor.redact_payload
        return await super().__call__(*redact(args), **redact(kwargs))


class RedactedRespond(AsyncRespond):
    """Bolt's `respond` (a post to the response_url) with every string redacted."""

    def __init__(self, redactor: Redactor, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._redactor = redactor

    async def __call__(self, *args: Any, **kwargs: Any) -> WebhookResponse:
        """`respond(...)`, redacted."""
        redact = self._redactor.redact_payload
        return await super().__call__(*redact(args), **redact(kwargs))


def redacted_replies(
    redactor: Redactor,
) -> Callable[[AsyncBoltContext, Callable[[], Awaitable[None]]], Awaitable[None]]:
    """A Bolt middleware giving every listener (and the error handler) a redacted `ack` and `respond`."""

    async def middleware(context: AsyncBoltContext, next: Callable[[], Awaitable[None]]) -> None:
        context["ack"] = RedactedAck(redactor)
        context["respond"] = RedactedRespond(
            redactor, response_url=context.response_url, proxy=context.client.proxy, ssl=context.client.ssl
        )
        await next()

    return middleware
