"""build_app: the Bolt AsyncApp with Dreamboard's middleware, error handler and handlers."""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_bolt.response import BoltResponse

from bot.app.listener_errors import listener_error_handler
from bot.app.services import Services
from bot.app.tasks import Tasks

Listener = TypeVar("Listener", bound=Callable[..., Awaitable[None]])

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

    def event(self, event: str | re.Pattern[str]) -> Callable[[Listener], Listener]:
        """Like `AsyncApp.event`."""
        return self._through(self._app.event(event))

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


Register = Callable[[Listeners, Services], None]
"""Wires listeners onto the app (handlers.register)."""


def build_app(services: Services, *, register: Register) -> AsyncApp:
    """An AsyncApp on the services' Web API client; `register` wires the listeners (handlers/), each
    tracked in `services.listeners`; a listener failing after its ack is answered to the user."""
    settings = services.settings
    secret = settings.slack_signing_secret
    app = AsyncApp(
        client=services.slack,
        signing_secret=secret.get_secret_value() if secret else "",
        request_verification_enabled=not settings.socket_mode,
        raise_error_for_unhandled_request=False,
    )

    @app.middleware
    async def drop_duplicate_events(
        body: dict[str, Any],
        next: Callable[[], Awaitable[None]],
    ) -> BoltResponse | None:
        event_id = body.get("event_id")
        if isinstance(event_id, str) and not await services.store.claim_event(f"event:{event_id}"):
            return BoltResponse(status=200, body="")
        await next()
        return None

    app.error(listener_error_handler(services.gateway))
    register(Listeners(app, services.listeners), services)
    return app
