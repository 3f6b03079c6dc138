"""Start and stop a whole Dreamboard process: services, Bolt app, HTTP server, transport, runner."""

from __future__ import annotations

import asyncio
import contextlib
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
from bot.features.votes import Clock
from bot.jobs.uploads import ShareTiming

log = logging.getLogger(__name__)

DEDUPE_WINDOW = 24 * 3600.0
REFERENCE_CACHE_DAYS = 7
HOUSEKEEPING_INTERVAL = 3600.0


@dataclass
class Runtime:
    """A running Dreamboard: what `python -m bot` holds between start and shutdown."""

    services: Services
    web: web.AppRunner
    port: int
    socket: SocketModeTransport | None
    housekeeping: asyncio.Task[None]

    async def close(self, grace: float = 20.0) -> None:
        """Shut down in order:
        1. stop taking requests: close the Socket Mode connection, then the HTTP server (which lets
           requests in progress, whose ack is at most 3 s away, finish);
        2. stop housekeeping (cancelled and awaited);
        3. `Services.aclose`: wait up to `grace` for listener work after ack (so an acked command is
           stored), stop the runner (letting uploads finish, up to `grace`), let App Home publishes
           under way finish, then close every client and the store."""
        if self.socket is not None:
            await self.socket.close()
        await self.web.cleanup()
        self.housekeeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.housekeeping
        await self.services.aclose(grace)


async def start(
    settings: Settings,
    *,
    register: Register,
    oxen_retry: RetryPolicy | None = None,
    housekeeping_interval: float = HOUSEKEEPING_INTERVAL,
    share_timing: ShareTiming | None = None,
    vote_clock: Clock | None = None,
) -> Runtime:
    """Build everything, wire the listeners with `register`, resume unfinished jobs and start listening;
    housekeeping runs at once and then every `housekeeping_interval` seconds. The vote deadline task
    starts with the runner (overdue votes close at once), on `vote_clock` (tests pass their own)."""
    services = await Services.build(
        settings, oxen_retry=oxen_retry, share_timing=share_timing, vote_clock=vote_clock
    )
    socket: SocketModeTransport | None = None
    web_runner: web.AppRunner | None = None
    try:
        try:
            await services.oxen.model_schema(settings.oxen_model)
        except BackendError as exc:
            log.warning(
                "could not fetch the %s schema yet (%s); will retry per job", settings.oxen_model, exc
            )
        bolt = build_app(services, register=register)
        if settings.slack_app_token is not None:
            socket = SocketModeTransport(bolt, settings.slack_app_token.get_secret_value())
        app = build_web_app(services, bolt, socket_connected=socket.is_connected if socket else None)
        web_runner, port = await start_server(app, settings.host, settings.port)
        services.backend.start()
        await services.permutations.resume()
        await services.runner.start()
        services.votes.start(services.spawn)
        if socket is not None:
            await socket.start()
    except BaseException:
        if socket is not None:
            await socket.close()
        if web_runner is not None:
            await web_runner.cleanup()
        await services.aclose(grace=0.0)
        raise
    log.info(
        "dreamboard ready: %s, http on %s:%d, model %s, reference hosting: %s",
        "socket mode" if socket else "http mode (POST /slack/events)",
        settings.host,
        port,
        settings.oxen_model,
        services.references.host_description,
    )
    housekeeping = services.spawn(_housekeeping(services, housekeeping_interval), name="housekeeping")
    return Runtime(services, web_runner, port, socket, housekeeping)


async def _housekeeping(services: Services, interval: float) -> None:
    """Forget dedupe keys once Slack can no longer retry them (its last retry comes after ~5 minutes),
    and drop cached reference images (and the stored copies of hosted ones) nobody used for a week. A
    failing step is logged and tried again next round; the loop only ends when it is cancelled."""
    while True:
        try:
            await services.store.prune_events(older_than=time.time() - DEDUPE_WINDOW)
        except Exception:
            log.exception("housekeeping: pruning old dedupe keys failed; next try in %gs", interval)
        try:
            await asyncio.to_thread(
                services.references.prune_cache, time.time() - REFERENCE_CACHE_DAYS * 86400
            )
        except Exception:
            log.exception("housekeeping: pruning the reference cache failed; next try in %gs", interval)
        try:
            await services.store.prune_reference_blobs(older_than=time.time() - REFERENCE_CACHE_DAYS * 86400)
        except Exception:
            log.exception("housekeeping: pruning stored references failed; next try in %gs", interval)
        await asyncio.sleep(interval)
