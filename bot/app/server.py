"""The aiohttp server: `POST /slack/events` (HTTP mode), `GET /healthz` and `GET /metrics` (both modes)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp

from bot.app.services import Services
from bot.features.reference_hosting import SignedUrlHost


def build_web_app(
    services: Services, bolt: AsyncApp, *, socket_connected: Callable[[], Awaitable[bool]] | None = None
) -> web.Application:
    """Routes for the HTTP server; events are only served when there is no Socket Mode connection."""

    async def healthz(_: web.Request) -> web.Response:
        store = services.store
        healthy = await store.writable()
        checks = {"store": "open" if healthy else "unwritable" if store.is_open else "closed"}
        if socket_connected is not None:
            connected = await socket_connected()
            checks["socket"] = "connected" if connected else "disconnected"
            healthy = healthy and connected
        return web.json_response({"ok": healthy, **checks}, status=200 if healthy else 503)

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=services.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def reference(request: web.Request) -> web.StreamResponse:
        assert isinstance(host, SignedUrlHost)
        path = host.resolve(
            request.match_info["name"], request.query.get("exp", ""), request.query.get("sig", "")
        )
        if path is None:
            raise web.HTTPForbidden(text="This reference link is invalid or has expired.")
        return web.FileResponse(path, headers={"Cache-Control": "private, max-age=300"})

    async def events(request: web.Request) -> web.Response:
        started = time.perf_counter()
        bolt_request = await to_bolt_request(request)
        answer = await bolt.async_dispatch(bolt_request)
        body = bolt_request.body
        kind = "command" if "command" in body else str(body.get("type", "unknown"))
        services.metrics.inc("dreamboard_acks_total", kind=kind)
        services.metrics.observe("dreamboard_ack_seconds", time.perf_counter() - started, kind=kind)
        return await to_aiohttp_response(answer)

    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    host = services.reference_host
    if isinstance(host, SignedUrlHost):
        app.router.add_get("/refs/{name}", reference)
    if socket_connected is None:
        app.router.add_post("/slack/events", events)
    return app


async def start_server(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start serving `app`; returns the runner (for cleanup) and the bound port (port 0 picks one)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound = int(sockets[0].getsockname()[1]) if sockets else port
    return runner, bound
