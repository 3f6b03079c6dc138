"""Socket Mode transport with a watchdog: the SDK client can go deaf after reconnects (slack.md §8)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.adapter.socket_mode.async_internals import send_async_response
from slack_bolt.adapter.socket_mode.internals import build_headers
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from bot.app.inbound import Refusal, RefusalLog, shape_problem

log = logging.getLogger(__name__)


class CheckedSocketModeClient(SocketModeClient):
    """The SDK's aiohttp Socket Mode client, except that an envelope whose payload is neither an object
    nor a string (which the SDK's SocketModeRequest refuses with a logged traceback, acking nothing)
    is acked and logged through `refusals`."""

    def __init__(self, app: AsyncApp, app_token: str, refusals: RefusalLog) -> None:
        super().__init__(app_token=app_token, logger=app.logger, web_client=app.client)
        self._refusals = refusals

    async def run_message_listeners(self, message: dict[str, Any], raw_message: str) -> None:
        """Ack an envelope the SDK cannot read; hand everything else to the SDK."""
        payload = message.get("payload")
        if "envelope_id" in message and "payload" in message and not isinstance(payload, dict | str):
            await refuse_envelope(
                self, self._refusals, message.get("type"), message["envelope_id"], "payload"
            )
            return
        await super().run_message_listeners(message, raw_message)


async def refuse_envelope(
    client: AsyncBaseSocketModeClient, refusals: RefusalLog, kind: object, envelope_id: object, problem: str
) -> None:
    """Ack an envelope that is not what Slack sends (so it is not delivered again) and log it."""
    refusal = Refusal(400, "malformed", problem)
    refusals.refused(f"a Socket Mode {str(kind)[:40]!r} envelope (acked)", refusal)
    await client.send_socket_mode_response(SocketModeResponse(envelope_id=str(envelope_id)))


class CheckedSocketModeHandler(AsyncSocketModeHandler):
    """Bolt's Socket Mode handler on a CheckedSocketModeClient, except that an envelope whose payload
    is not something Slack sends is acked at once (so Slack does not deliver it again) and logged
    through `refusals`, instead of reaching Bolt, which would fail on it (logging a traceback, acking
    nothing) or answer 404."""

    def __init__(self, app: AsyncApp, app_token: str, refusals: RefusalLog) -> None:
        # Not super().__init__: it would build a second client (with its own session and task).
        self.app = app
        self.app_token = app_token
        self.client = CheckedSocketModeClient(app, app_token, refusals)
        self.client.socket_mode_request_listeners.append(self.handle)
        self._refusals = refusals

    async def handle(self, client: AsyncBaseSocketModeClient, req: SocketModeRequest) -> None:
        """Check the envelope's payload, then dispatch it as Bolt's own handler does."""
        started = time.time()
        problem = shape_problem(req.payload)
        bolt_request: AsyncBoltRequest | None = None
        if problem is None:
            try:
                bolt_request = AsyncBoltRequest(
                    mode="socket_mode", body=req.payload, headers=build_headers(req)
                )
            except Exception:  # Bolt's context extraction assumes Slack's field types throughout
                problem = "Bolt cannot read its fields"
        if bolt_request is None:
            await refuse_envelope(client, self._refusals, req.type, req.envelope_id, problem or "payload")
            return
        answer = await self.app.async_dispatch(bolt_request)
        await send_async_response(client, req, answer, started)


class SocketModeTransport:
    """Keeps one Socket Mode connection alive; rebuilds the handler when it is disconnected or silent."""

    def __init__(
        self, app: AsyncApp, app_token: str, *, check_every: float = 15.0, max_silence: float = 90.0
    ) -> None:
        self._app = app
        self._token = app_token
        self._check_every = check_every
        self._max_silence = max_silence
        self._handler: AsyncSocketModeHandler | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._refusals = RefusalLog()

    async def start(self) -> None:
        """Connect, then watch the connection in the background."""
        await self._connect()
        self._watchdog = asyncio.create_task(self._watch(), name="socket-mode-watchdog")

    async def is_connected(self) -> bool:
        """Whether the socket is connected and has exchanged a ping recently (for /healthz)."""
        return self._handler is not None and await self._healthy(self._handler)

    async def close(self) -> None:
        """Stop the watchdog and close the connection."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
        if self._handler is not None:
            await self._handler.client.close()
            self._handler = None

    async def _connect(self) -> None:
        self._handler = CheckedSocketModeHandler(self._app, self._token, self._refusals)
        await self._handler.client.connect()

    async def _healthy(self, handler: AsyncSocketModeHandler) -> bool:
        client = handler.client
        last_ping = client.last_ping_pong_time
        silent = last_ping is not None and time.time() - last_ping > self._max_silence
        return bool(await client.is_connected()) and not silent

    async def _watch(self) -> None:
        strikes = 0
        while True:
            await asyncio.sleep(self._check_every)
            try:
                healthy = self._handler is not None and await self._healthy(self._handler)
            except Exception:
                log.warning("socket mode health check failed", exc_info=True)
                healthy = False
            if healthy:
                strikes = 0
                continue
            strikes += 1
            if strikes < 2:
                continue
            log.warning("socket mode connection unhealthy; reconnecting")
            strikes = 0
            try:
                if self._handler is not None:
                    await self._handler.client.close()
                await self._connect()
            except Exception:
                log.exception("socket mode reconnect failed; will retry")
