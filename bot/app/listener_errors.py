"""Bolt's global error handler: a listener that fails after its ack is answered to the user.

After the ack, Slack has nothing left to show, so without an answer the user waits for a reply that
never comes. The answer says what failed and in what way, with a short reference that is also in
the ERROR log line (with the traceback); it never contains exception text, which could carry
payloads, URLs or tokens. Failures before the ack keep Bolt's 500, which Slack shows (commands) or
retries (events), and are only logged.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import httpx
from slack_bolt.async_app import AsyncBoltContext, AsyncRespond
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError

from bot.backends.base import BackendError
from bot.slack.errors import SlackError, classify
from bot.slack.gateway import SlackGateway
from bot.store.errors import StoreUnavailableError

log = logging.getLogger(__name__)

_SHOWN_COMMAND = 60


ListenerErrorHandler = Callable[..., Awaitable[None]]


def listener_error_handler(gateway: SlackGateway) -> ListenerErrorHandler:
    """Bolt's error handler (`app.error`), answering through `gateway`."""

    async def answer_listener_error(
        error: Exception,
        body: dict[str, Any],
        response: BoltResponse | None,
        context: AsyncBoltContext,
        respond: AsyncRespond,
    ) -> None:
        """Log the failure under a new reference and, if the request was already acked (Bolt passes no
        response then), tell the user; never raises."""
        reference = secrets.token_hex(4)
        try:
            kind, cause = request_kind(body), failure_cause(error)
            if response is not None:
                log.error(
                    "%s failed before its ack (ref %s): %s; Slack gets an error response",
                    kind,
                    reference,
                    cause,
                    exc_info=error,
                )
                return
            log.error("%s failed after its ack (ref %s): %s", kind, reference, cause, exc_info=error)
            if isinstance(error, StoreUnavailableError):
                text = (
                    f":warning: Dreamboard could not save {what_failed(body)} ({error.reason}). Try again in "
                    "a few minutes; if it keeps failing, tell whoever runs Dreamboard (reference "
                    f"`{reference}` in its logs)."
                )
            else:
                text = (
                    f":warning: Dreamboard could not finish {what_failed(body)}: {cause}. Please try again; "
                    f"if it keeps failing, an admin can find the details in the logs under reference "
                    f"`{reference}`."
                )
            await _tell(text, body, context, respond, gateway)
        except Exception as exc:
            log.warning(
                "could not answer the user about failure %s: %s", reference, failure_cause(exc), exc_info=exc
            )

    return answer_listener_error


def request_kind(body: dict[str, Any]) -> str:
    """What the request was, for the log line (no user text)."""
    if "command" in body:
        kind = f"command {body['command']}"
    elif body.get("type") in ("block_actions", "view_submission"):
        action = (body.get("actions") or [{}])[0]
        view = body.get("view") or {}
        kind = f"{body['type']} {action.get('action_id') or view.get('callback_id') or ''}".strip()
    else:
        kind = f"event {(body.get('event') or {}).get('type', body.get('type', 'unknown'))}"
    user = body.get("user_id") or (body.get("user") or {}).get("id") or (body.get("event") or {}).get("user")
    return f"{kind} from {user}" if user else kind


def what_failed(body: dict[str, Any]) -> str:
    """The user's own action, as they would name it."""
    if "command" in body:
        shown = " ".join(f"{body['command']} {body.get('text') or ''}".split()).replace("`", "'")
        if len(shown) > _SHOWN_COMMAND:
            shown = shown[: _SHOWN_COMMAND - 1] + "…"
        return f"`{shown}`"
    if body.get("type") == "block_actions":
        action = (body.get("actions") or [{}])[0]
        label = (action.get("text") or {}).get("text")
        return f"the *{label}* button" if label else "that button"
    if body.get("type") == "view_submission":
        title = ((body.get("view") or {}).get("title") or {}).get("text")
        return f"the *{title}* form" if title else "that form"
    event = body.get("event") or {}
    kind = event.get("type")
    if kind == "reaction_added":
        return f"your :{event.get('reaction')}: reaction"
    if kind == "reaction_removed":
        return f"removing your :{event.get('reaction')}: reaction"
    if kind == "app_home_opened":
        return "your App Home tab"
    if kind in ("message", "app_mention"):
        return "your message"
    return "your request"


def failure_cause(error: BaseException) -> str:
    """In what way it failed, in words that are safe to show (no exception text)."""
    if isinstance(error, SlackApiError):
        error = classify(error)
    if isinstance(error, SlackError):
        return f"Slack refused a request (`{error.code}`)"
    if isinstance(error, BackendError):
        return f"Oxen.ai refused it ({error.user_message.rstrip('.')})"
    if isinstance(error, TimeoutError):
        return "a request timed out"
    if isinstance(error, (aiohttp.ClientError, httpx.HTTPError, ConnectionError)):
        return "a network request failed"
    if isinstance(error, StoreUnavailableError):
        return error.reason
    if isinstance(error, sqlite3.Error):
        return "its database could not be used"
    return f"an internal error ({type(error).__name__})"


async def _tell(
    text: str,
    body: dict[str, Any],
    context: AsyncBoltContext,
    respond: AsyncRespond,
    gateway: SlackGateway,
) -> None:
    """Ephemeral through the response_url (commands, message buttons); otherwise in the event's
    channel or thread (events), or by DM (App Home buttons)."""
    if context.response_url:
        await respond(text=text, response_type="ephemeral", replace_original=False)
        return
    event = body.get("event")
    if isinstance(event, dict):
        user = event.get("user")
        channel = event.get("channel") or (event.get("item") or {}).get("channel")
        if not user or not channel or event.get("bot_id") or user == context.bot_user_id:
            log.info("no one to answer about a failed %s event", event.get("type"))
            return
        thread_ts = event.get("thread_ts")
        if thread_ts is None and event.get("type") in ("message", "app_mention"):
            thread_ts = event.get("ts")
        await gateway.ephemeral_or_raise(channel, user, thread_ts, {"text": text})
        return
    user = (body.get("user") or {}).get("id")
    if user:
        await gateway.post(user, {"text": text})
