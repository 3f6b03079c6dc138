"""Start and stop a whole Dreamboard process: services, Bolt app, HTTP server, transport, runner."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from aiohttp import web

from bot.app.bolt import Register, build_app
from bot.app.config import Settings
from bot.app.server import build_web_app, start_server
from bot.app.services import Services
from bot.app.socket_mode import SocketModeTransport
from bot.backends.base import BackendError
from bot.backends.oxen import RetryPolicy

log = logging.getLogger(__name__)

DEDUPE_WINDOW = 24 * 3600.0
REFERENCE_CACHE_DAYS = 7


@dataclass
class Runtime:
    """A running Dreamboard: what `python -m bot` holds between start and shutdown."""

    services: Services
    web: web.AppRunner
    port: int
    socket: SocketModeTransport | None
    housekeeping: asyncio.Task[None]

    async def close(self, grace: float = 20.0) -> None:
        """Stop taking work (socket, then HTTP), let running uploads finish, close every client."""
        self.housekeeping.cancel()
        if self.socket is not None:
            await self.socket.close()
        await self.web.cleanup()
        await self.services.aclose(grace)


async def start(settings: Settings, *, register: Register, oxen_retry: RetryPolicy | None = None) -> Runtime:
    """Build everything, wire the listeners with `register`, resume unfinished jobs and start listening."""
    services = await Services.build(settings, oxen_retry=oxen_retry)
    try:
        await services.oxen.model_schema(settings.oxen_model)
    except BackendError as exc:
        log.warning("could not fetch the %s schema yet (%s); will retry per job", settings.oxen_model, exc)
    bolt = build_app(services, register=register)
    socket = None
    if settings.slack_app_token is not None:
        socket = SocketModeTransport(bolt, settings.slack_app_token.get_secret_value())
    app = build_web_app(services, bolt, socket_connected=socket.is_connected if socket else None)
    runner, port = await start_server(app, settings.host, settings.port)
    services.backend.start()
    await services.runner.start()
    if socket is not None:
        await socket.start()
    log.info(
        "dreamboard ready: %s, http on %s:%d, model %s, reference hosting: %s",
        "socket mode" if socket else "http mode (POST /slack/events)",
        settings.host,
        port,
        settings.oxen_model,
        services.references.host_description,
    )
    return Runtime(services, runner, port, socket, asyncio.create_task(_housekeeping(services)))


async def _housekeeping(services: Services) -> None:
    """Forget dedupe keys once Slack can no longer retry them (its last retry comes after ~5 minutes),
    and drop cached reference images nobody used for a week."""
    while True:
        await services.store.prune_events(older_than=time.time() - DEDUPE_WINDOW)
        await asyncio.to_thread(services.references.prune_cache, time.time() - REFERENCE_CACHE_DAYS * 86400)
        await asyncio.sleep(3600)
