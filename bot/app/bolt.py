"""build_app: the Bolt AsyncApp with Dreamboard's middleware and handlers."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.response import BoltResponse

from bot.app.services import Services

Register = Callable[[AsyncApp, Services], None]
"""Wires listeners onto the app (handlers.register)."""


def build_app(services: Services, *, register: Register) -> AsyncApp:
    """An AsyncApp on the services' Web API client; `register` wires the listeners (handlers/)."""
    settings = services.settings
    secret = settings.slack_signing_secret
    app = AsyncApp(
        client=services.slack,
        signing_secret=secret.get_secret_value() if secret else "",
        request_verification_enabled=not settings.socket_mode,
        raise_error_for_unhandled_request=False,
    )

    @app.middleware
    async def measure_ack(body: dict[str, Any], next: Callable[[], Awaitable[BoltResponse]]) -> BoltResponse:
        started = time.perf_counter()
        response = await next()
        kind = "command" if "command" in body else str(body.get("type", "unknown"))
        services.metrics.inc("dreamboard_acks_total", kind=kind)
        services.metrics.observe("dreamboard_ack_seconds", time.perf_counter() - started, kind=kind)
        return response

    @app.middleware
    async def drop_duplicate_events(
        body: dict[str, Any],
        next: Callable[[], Awaitable[BoltResponse]],
    ) -> BoltResponse:
        event_id = body.get("event_id")
        if isinstance(event_id, str) and not await services.store.claim_event(f"event:{event_id}"):
            return BoltResponse(status=200, body="")
        return await next()

    register(app, services)
    return app
