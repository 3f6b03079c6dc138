"""build_app: the Bolt AsyncApp with Dreamboard's middleware, error handler and handlers."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.logger.messages import warning_token_skipped
from slack_bolt.middleware.ignoring_self_events.async_ignoring_self_events import AsyncIgnoringSelfEvents
from slack_bolt.response import BoltResponse
from slack_sdk.web.async_client import AsyncWebClient

from bot.app.listener_errors import listener_error_handler
from bot.app.services import Services
from bot.app.tasks import Tasks
from bot.slack.gateway import redacted_replies
from bot.store.database import PRE_ACK_PATIENCE, write_patience
from bot.store.errors import StoreUnavailableError

Listener = TypeVar("Listener", bound=Callable[..., Awaitable[None]])

log = logging.getLogger(__name__)

_BOLT_ACK_POLL = 0.01
"""How often Bolt's dispatcher looks for the listener's ack (slack_bolt/listener/asyncio_runner.py)."""


class Listeners:
    """Registers listeners on the Bolt app so that each invocation is tracked until it ends.

    Bolt runs a listener (its ack and everything after) in a task it keeps no reference to
    (`asyncio.ensure_future` in slack_bolt/listener/asyncio_runner.py), so shutdown could not wait
    for work acked a moment before SIGTERM. The wrapper adds that task, `asyncio.current_task()`
    inside the listener, to `tasks`; the error handler runs in the same task, so it is covered too.
    Bolt injects arguments by the names of the wrapped function (`inspect.unwrap`).

    It also works around a Bolt 1.30 race: when a listener fails after acking, Bolt's runner sets
    `ack.response = None` once the error handler returns. If that happens before the dispatcher's
    next look at the ack (every 10 ms), the ack given is lost and Slack gets a 404 after 3 s. So a
    listener that acked and then failed first waits out one such poll (asyncio runs timers in
    deadline order, so the dispatcher has taken the ack by then) and only then lets Bolt handle the
    error."""

    def __init__(self, app: AsyncApp, tasks: Tasks) -> None:
        self._app = app
        self._tasks = tasks

    def command(self, command: str | re.Pattern[str]) -> Callable[[Listener], Listener]:
        """Like `AsyncApp.command`."""
        return self._through(self._app.command(command))

    def event(
        self,
        event: str | re.Pattern[str],
        matchers: Sequence[Callable[..., Awaitable[bool]]] | None = None,
    ) -> Callable[[Listener], Listener]:
        """Like `AsyncApp.event` (with its `matchers`)."""
        return self._through(self._app.event(event, matchers=list(matchers) if matchers else None))

    def action(self, constraints: str | re.Pattern[str]) -> Callable[[Listener], Listener]:
        """Like `AsyncApp.action`."""
        return self._through(self._app.action(constraints))

    def view(self, constraints: str | re.Pattern[str]) -> Callable[[Listener], Listener]:
        """Like `AsyncApp.view`."""
        return self._through(self._app.view(constraints))

    def _through(self, register: Callable[..., object]) -> Callable[[Listener], Listener]:
        def decorate(listener: Listener) -> Listener:
            @functools.wraps(listener)
            async def tracked(*args: Any, **kwargs: Any) -> None:
                task = asyncio.current_task()
                if task is not None:
                    task.set_name(f"{listener.__name__}-{id(task):x}")
                    self._tasks.adopt(task)
                try:
                    await listener(*args, **kwargs)
                except Exception:
                    ack = kwargs.get("ack")
                    if isinstance(ack, AsyncAck) and ack.response is not None:
                        await asyncio.sleep(_BOLT_ACK_POLL * 1.5)
                    raise

            register(tracked)
            return listener

        return decorate


def is_own_file_share(body: Mapping[str, Any], *, bot_user_id: str | None, bot_id: str | None) -> bool:
    """Whether a request is the bot's own `message` event of subtype file_share (its upload landed)."""
    event = body.get("event") or {}
    if event.get("type") != "message" or event.get("subtype") != "file_share":
        return False
    return bool(
        (bot_user_id and event.get("user") == bot_user_id) or (bot_id and event.get("bot_id") == bot_id)
    )


class IgnoringSelfEventsButUploads(AsyncIgnoringSelfEvents):
    """Bolt's self-event filter (ignoring_self_events_enabled, slack_bolt/middleware/ignoring_self_events),
    except for the bot's own file_share messages: they carry the ts of each upload message, which
    completeUploadExternal does not return (slack.md §2.2). Every other event of the bot's own is still
    acked and dropped here, before the dedupe middleware writes anything; listeners keep ignoring bot
    messages (features/iterations.is_noise) in any case."""

    @classmethod
    def _is_self_event(
        cls,
        auth_result: AuthorizeResult,
        user_id: str | None,
        bot_id: str | None,
        body: dict[str, Any],
    ) -> bool:
        if auth_result is not None and is_own_file_share(
            body, bot_user_id=auth_result.bot_user_id, bot_id=auth_result.bot_id
        ):
            return False
        return bool(super()._is_self_event(auth_result, user_id, bot_id, body))


Register = Callable[[Listeners, Services], None]
"""Wires listeners onto the app (handlers.register)."""


class _TokenKeptByAuthorize(logging.Filter):
    """Drops Bolt's start-up warning that the token "will be ignored" once `authorize` is given: the
    token is not ignored, `one_workspace` hands it to every request."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != warning_token_skipped()


_TOKEN_KEPT = _TokenKeptByAuthorize()


def one_workspace(client: AsyncWebClient) -> Callable[[], Awaitable[AuthorizeResult]]:
    """Bolt's `authorize` for this single-workspace app: one `auth.test`, through the paced client, shared
    by every request. Bolt's own single-team authorization asks `auth.test` on a fresh, unpaced client per
    request until one answer is cached, so a burst of first requests can be rate-limited into Bolt's
    "please try again" answer and lost."""
    lock = asyncio.Lock()
    cached: list[AuthorizeResult] = []

    async def authorize() -> AuthorizeResult:
        async with lock:
            if not cached:
                response = await client.auth_test()
                cached.append(
                    AuthorizeResult.from_auth_test_response(
                        auth_test_response=response, bot_token=client.token
                    )
                )
        return cached[0]

    return authorize


def build_app(services: Services, *, register: Register) -> AsyncApp:
    """An AsyncApp on the services' Web API client; `register` wires the listeners (handlers/), each
    tracked in `services.listeners`; a listener failing after its ack is answered to the user."""
    settings = services.settings
    secret = settings.slack_signing_secret
    logging.getLogger("slack_bolt.AsyncApp").addFilter(_TOKEN_KEPT)
    app = AsyncApp(
        client=services.slack,
        authorize=one_workspace(services.slack),
        signing_secret=secret.get_secret_value() if secret else "",
        request_verification_enabled=not settings.socket_mode,
        raise_error_for_unhandled_request=False,
        ignoring_self_events_enabled=False,
    )
    app.use(redacted_replies(services.gateway.redactor))
    app.use(IgnoringSelfEventsButUploads())

    @app.middleware
    async def drop_duplicate_events(
        body: dict[str, Any],
        context: AsyncBoltContext,
        next: Callable[[], Awaitable[None]],
    ) -> BoltResponse | None:
        # The bot's own file_share events need no claim: recording their ts is idempotent.
        # This runs before the event's ack, so the claim may only wait PRE_ACK_PATIENCE for a locked or
        # full database; then the event goes on unclaimed (only a late ack makes Slack deliver it again),
        # and a listener whose own writes fail tells the user (listener_errors).
        own = is_own_file_share(body, bot_user_id=context.bot_user_id, bot_id=context.bot_id)
        event_id = body.get("event_id")
        if not own and isinstance(event_id, str):
            try:
                with write_patience(PRE_ACK_PATIENCE):
                    fresh = await services.store.claim_event(f"event:{event_id}")
            except StoreUnavailableError as exc:
                log.warning("event %s handled without its dedupe claim: %s", event_id, exc.reason)
                fresh = True
            if not fresh:
                return BoltResponse(status=200, body="")
        await next()
        return None

    app.error(listener_error_handler(services.gateway))
    register(Listeners(app, services.listeners), services)
    return app
