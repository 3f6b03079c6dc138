"""Answering a command or button through its response_url, checked: a refused answer reaches the user
another way."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import aiohttp
from slack_bolt.async_app import AsyncRespond

from bot.app.services import Services
from bot.views import blocks as views

log = logging.getLogger(__name__)


async def answer(
    services: Services,
    respond: AsyncRespond,
    message: Mapping[str, Any],
    *,
    user_id: str,
    channel_id: str | None,
    replace_original: bool | None = None,
) -> bool:
    """Show `message` to the user only, through the response_url.

    Slack answers a response_url post it cannot show with an error status (HTTP 404 and
    `{"ok":false,"error":"invalid_blocks"}` when a `slack_file` is still processing, java-slack-sdk#1349),
    and Bolt's `respond()` returns that answer without raising. So: when the refused message has images,
    it is sent again without them; when the response_url still fails (expired, used up, unreachable),
    the message goes out as chat.postEphemeral; when that fails too, the failure is logged. Returns
    whether the user was answered."""
    problem = await _post(respond, message, replace_original)
    if problem is not None and "invalid_blocks" in problem and views.has_images(message):
        log.warning("response_url refused the answer to %s (%s); sending it without images", user_id, problem)
        problem = await _post(respond, views.without_images(message), replace_original)
    if problem is None:
        return True
    log.warning("response_url could not answer %s: %s; trying chat.postEphemeral", user_id, problem)
    if channel_id and await services.gateway.ephemeral(
        channel_id, user_id, None, views.without_images(message)
    ):
        return True
    log.error(
        "could not answer %s in %s: response_url %s, and no ephemeral was possible",
        user_id,
        channel_id,
        problem,
    )
    return False


async def _post(
    respond: AsyncRespond, message: Mapping[str, Any], replace_original: bool | None
) -> str | None:
    """Post through the response_url; None when Slack took it, else what went wrong."""
    try:
        response = await respond(response_type="ephemeral", replace_original=replace_original, **message)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return type(exc).__name__
    if response.status_code == 200:
        return None
    return f"HTTP {response.status_code} {response.body[:200]}"
