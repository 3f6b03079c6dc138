"""The aiohttp server: `POST /slack/events` (HTTP mode), `GET /healthz`, `GET /metrics` and, with public_url
hosting, `GET /refs/{name}` (both modes)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from prometheus_client import CONTENT_TYPE_LATEST
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.signature import SignatureVerifier

from bot.app.inbound import Refusal, RefusalLog, parse_signed_body, unsigned
from bot.app.services import Services
from bot.features.reference_hosting import SignedUrlHost


class BadHttpRequests(logging.Filter):
    """aiohttp answers a request it cannot parse (a request line over 8 kB, a malformed header) with 400
    itself, then logs it at ERROR with a traceback (aiohttp/web_protocol.py `log_exception`), so anyone
    who reaches the port could fill the log. Such records go through a RefusalLog instead."""

    def __init__(self) -> None:
        super().__init__()
        self._refusals = RefusalLog()

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, BadHttpMessage):
            refusal = Refusal(error.code, "bad-http", type(error).__name__)
            self._refusals.refused("an HTTP request aiohttp could not parse", refusal)
            return False
        return True


_BAD_HTTP = BadHttpRequests()


def reference_handler(host: SignedUrlHost) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """`GET /refs/{name}`: the bytes a signed reference URL names, from this machine's cache folder or
    else from the store (whichever replica signed it), or 403 when the link is invalid or expired."""

    async def reference(request: web.Request) -> web.StreamResponse:
        path = await host.resolve(
            request.match_info["name"], request.query.get("exp", ""), request.query.get("sig", "")
        )
        if path is None:
            raise web.HTTPForbidden(text="This reference link is invalid or has expired.")
        return web.FileResponse(path, headers={"Cache-Control": "private, max-age=300"})

    return reference


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

    refusals = RefusalLog()

    def refuse(refusal: Refusal) -> web.Response:
        refusals.refused("a request to /slack/events", refusal)
        return web.Response(status=refusal.status, text=f"Refused: {refusal.reason}.")

    async def events(request: web.Request) -> web.Response:
        """Verify the signature on the raw body, then check that it is something Slack sends, and only
        then hand it to Bolt, parsed. Bolt takes a parsed body only with mode "socket_mode", whose one
        other effect is to skip Bolt's own signature check, done here already; its own form parsing
        would read a command whose text holds the word "payload" as an empty body
        (slack_bolt/request/internals.py `parse_body`)."""
        started = time.perf_counter()
        raw = await request.read()  # over client_max_size: aiohttp answers 413
        if verifier is None:
            return refuse(Refusal(401, "unsigned", "no SLACK_SIGNING_SECRET is configured"))
        refusal = unsigned(request.headers, raw, verifier)
        if refusal is not None:
            return refuse(refusal)
        body = parse_signed_body(request.content_type, raw.decode("utf-8"))
        if isinstance(body, Refusal):
            return refuse(body)
        try:
            bolt_request = AsyncBoltRequest(
                body=body, query=request.query_string, headers=dict(request.headers), mode="socket_mode"
            )
        except Exception:  # Bolt's context extraction assumes Slack's field types throughout
            return refuse(Refusal(400, "malformed", "Bolt cannot read its fields"))
        answer = await bolt.async_dispatch(bolt_request)
        kind = "command" if "command" in body else str(body.get("type", "unknown"))
        services.metrics.inc("dreamboard_acks_total", kind=kind)
        services.metrics.observe("dreamboard_ack_seconds", time.perf_counter() - started, kind=kind)
        return await to_aiohttp_response(answer)

    secret = services.settings.slack_signing_secret
    verifier = SignatureVerifier(secret.get_secret_value()) if secret else None
    logging.getLogger("aiohttp.server").addFilter(_BAD_HTTP)  # once: addFilter skips a filter it has
    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    host = services.reference_host
    if isinstance(host, SignedUrlHost):
        app.router.add_get("/refs/{name}", reference_handler(host))
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
