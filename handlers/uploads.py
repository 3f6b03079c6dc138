"""The bot's own file_share messages: each names the upload message of a job (bot/jobs/uploads.py)."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncBoltContext

from bot.app.bolt import Listeners, is_own_file_share
from bot.app.services import Services


def register(app: Listeners, services: Services) -> None:
    """Register the listener for the bot's own file_share events (before the other message listeners:
    Bolt runs only the first listener that matches)."""

    async def own_file_share(body: dict[str, Any], context: AsyncBoltContext) -> bool:
        return is_own_file_share(body, bot_user_id=context.bot_user_id, bot_id=context.bot_id)

    async def on_own_file_share(event: dict[str, Any]) -> None:
        await services.uploads.observed(event)
        await services.permutations.observed(event)

    app.event("message", matchers=[own_file_share])(on_own_file_share)
