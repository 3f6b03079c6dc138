"""Whether Dreamboard can deliver into a conversation, asked before anything is paid for.

Without `chat:write.public` (manifest.yaml does not ask for it) the status message is the check: Slack
refuses it with `not_in_channel` in a channel the bot is not in, before Oxen is called. A token that has
the scope anyway (an install from an older manifest) can post the status message into a public channel it
has not joined, but the image upload there fails and no thread reply from there reaches the bot, so for such
a token the bot first asks whether it is a member, with a read its history scopes already allow.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.errors import SlackError, SlackErrorKind, call

log = logging.getLogger(__name__)

PUBLIC_WRITE = "chat:write.public"
MEMBERSHIP_TTL = 600.0
"""How long a confirmed membership (and the token's scope list) is trusted before it is asked again."""


class ChannelAccess:
    """Membership checks for a token that may post where it is not a member; cached per channel."""

    def __init__(
        self,
        client: AsyncWebClient,
        *,
        ttl: float = MEMBERSHIP_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._ttl = ttl
        self._clock = clock
        self._scopes: frozenset[str] | None = None
        self._scopes_at = 0.0
        self._asking = asyncio.Lock()
        """One auth.test at a time: a burst of first requests shares its answer."""
        self._members: dict[str, float] = {}

    async def check(self, channel_id: str) -> None:
        """Raise SlackError(NOT_IN_CHANNEL) when the bot could post the status message into `channel_id`
        without being able to deliver the images there. Costs no call for a token without
        chat:write.public; otherwise one `conversations.history` per channel per TTL (Slack answers it
        `not_in_channel` / `channel_not_found` where the bot is not a member). When Slack cannot answer,
        the job goes ahead: the status post and upload report what goes wrong then."""
        if not await self._posts_without_joining():
            return
        now = self._clock()
        if now - self._members.get(channel_id, -self._ttl) < self._ttl:
            return
        try:
            await call(self._client.conversations_history(channel=channel_id, limit=1))
        except SlackError as exc:
            if exc.kind is SlackErrorKind.NOT_IN_CHANNEL:
                self._members.pop(channel_id, None)
                raise
            log.warning("could not check membership of %s (%s); going ahead", channel_id, exc)
            return
        self._members[channel_id] = now

    async def _posts_without_joining(self) -> bool:
        """Whether the token has chat:write.public: every Web API answer lists the token's scopes in
        X-OAuth-Scopes (https://api.slack.com/legacy/oauth-scopes, "Working with scopes"). When Slack
        cannot say, assume it has (and check membership)."""
        async with self._asking:
            return await self._scopes_allow_public_write()

    async def _scopes_allow_public_write(self) -> bool:
        now = self._clock()
        if self._scopes is None or now - self._scopes_at >= self._ttl:
            try:
                response = await call(self._client.auth_test())
            except SlackError as exc:
                log.warning("auth.test failed (%s); checking channel membership to be safe", exc)
                return True
            headers = {key.lower(): value for key, value in (response.headers or {}).items()}
            granted = headers.get("x-oauth-scopes")
            if granted is None:  # not Slack as documented: assume the scope, so membership is checked
                granted = PUBLIC_WRITE
            self._scopes = frozenset(scope.strip() for scope in str(granted).split(",") if scope.strip())
            self._scopes_at = now
        return PUBLIC_WRITE in self._scopes
