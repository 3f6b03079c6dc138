"""Slack failures as a handful of domain errors: the gateway converts every SlackApiError, aiohttp
error and timeout at its boundary, so nothing above it catches a transport library's exceptions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from enum import StrEnum
from typing import TypeVar

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError

_T = TypeVar("_T")


class SlackErrorKind(StrEnum):
    """What a failed Slack call means for the user."""

    NOT_IN_CHANNEL = "not_in_channel"
    ARCHIVED = "archived"
    RATE_LIMITED = "rate_limited"
    UNAVAILABLE = "unavailable"
    NOT_FOUND = "not_found"
    REFUSED = "refused"


class SlackError(Exception):
    """A Slack call that did not succeed; `code` is Slack's error code or the transport failure."""

    def __init__(self, kind: SlackErrorKind, code: str) -> None:
        super().__init__(f"{kind}: {code}")
        self.kind = kind
        self.code = code

    @property
    def invalid_payload(self) -> bool:
        """Whether Slack refused the blocks or view themselves (`invalid_blocks`, `invalid_arguments`)."""
        return self.code in ("invalid_blocks", "invalid_arguments")

    @property
    def maybe_done(self) -> bool:
        """Whether Slack may have carried the call out although it failed (the answer was lost)."""
        return self.kind is SlackErrorKind.UNAVAILABLE


_KINDS = {
    "not_in_channel": SlackErrorKind.NOT_IN_CHANNEL,
    "channel_not_found": SlackErrorKind.NOT_IN_CHANNEL,
    "is_archived": SlackErrorKind.ARCHIVED,
    "is_inactive": SlackErrorKind.ARCHIVED,  # chat.update in a frozen, archived or deleted channel
    "ratelimited": SlackErrorKind.RATE_LIMITED,
    "rate_limited": SlackErrorKind.RATE_LIMITED,
    "internal_error": SlackErrorKind.UNAVAILABLE,
    "fatal_error": SlackErrorKind.UNAVAILABLE,
    "service_unavailable": SlackErrorKind.UNAVAILABLE,
    "request_timeout": SlackErrorKind.UNAVAILABLE,
    "file_not_found": SlackErrorKind.NOT_FOUND,
    "message_not_found": SlackErrorKind.NOT_FOUND,
    "thread_not_found": SlackErrorKind.NOT_FOUND,
}


def classify(exc: BaseException) -> SlackError:
    """The domain error for any exception a Slack call raised."""
    if isinstance(exc, SlackError):
        return exc
    if isinstance(exc, SlackApiError):
        status = int(getattr(exc.response, "status_code", 200) or 200)
        # A SlackResponse's data is not a dict when Slack answered with a page instead of JSON (a 5xx).
        data = getattr(exc.response, "data", exc.response)
        code = str((data.get("error", "") if isinstance(data, dict) else "") or f"http_{status}")
        if status == 429:
            return SlackError(SlackErrorKind.RATE_LIMITED, code)
        if status >= 500:
            return SlackError(SlackErrorKind.UNAVAILABLE, code)
        return SlackError(_KINDS.get(code, SlackErrorKind.REFUSED), code)
    if isinstance(exc, aiohttp.ClientError | TimeoutError | asyncio.TimeoutError | SlackClientError):
        return SlackError(SlackErrorKind.UNAVAILABLE, type(exc).__name__)
    if isinstance(exc, json.JSONDecodeError):
        return SlackError(SlackErrorKind.UNAVAILABLE, "unreadable_response")
    raise exc


async def call(awaitable: Awaitable[_T]) -> _T:
    """Await one Slack call, converting its failure into a SlackError."""
    try:
        return await awaitable
    except (SlackApiError, SlackClientError, aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as exc:
        raise classify(exc) from None
