"""The naive baseline: generate inside the slash-command listener and only then acknowledge,
as small Slack bots do. Run as `python -m bench.baseline` with the same settings as the bot."""

from __future__ import annotations

import asyncio
import logging

import httpx
from aiohttp import web
from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot.app.config import load_settings


async def main() -> None:
    """Serve /slack/events until killed."""
    settings = load_settings()
    slack = AsyncWebClient(token=settings.slack_bot_token.get_secret_value(), base_url=settings.slack_api_url)
    secret = settings.slack_signing_secret.get_secret_value() if settings.slack_signing_secret else ""
    app = AsyncApp(client=slack, signing_secret=secret, process_before_response=True)
    oxen = httpx.AsyncClient(
        base_url=settings.oxen_api_url,
        headers={"Authorization": f"Bearer {settings.oxen_api_key.get_secret_value()}"},
        timeout=300,
    )

    @app.command("/imagine")
    async def imagine(ack: AsyncAck, command: dict[str, str]) -> None:
        body = {"model": settings.oxen_model, "prompt": command["text"], "size": settings.oxen_size}
        answer = (await oxen.post("/ai/images/generate", json=body)).json()
        image = (await oxen.get(answer["images"][0]["url"])).content
        await slack.files_upload_v2(channel=command["channel_id"], file=image, filename="image.png")
        await ack()

    runner = web.AppRunner(app.web_app(path="/slack/events"), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    port = runner.addresses[0][1]
    logging.basicConfig(level=logging.WARNING)
    print(f"baseline ready: http on {settings.host}:{port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
