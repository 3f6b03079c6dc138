"""Thread replies, @mentions and DMs: each may start an iteration (see bot/features/iterations.py), or
open a vote (`@Dreamboard vote 15m`, bot/features/votes.py), never both."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncBoltContext

from bot.app.bolt import Listeners
from bot.app.services import Services


def register(app: Listeners, services: Services) -> None:
    """Listen to every message and to mentions; edits and deletions are dropped cheaply."""

    async def on_message(event: dict[str, Any], context: AsyncBoltContext) -> None:
        team_id, bot_user_id = str(context.team_id), context.bot_user_id
        if await services.votes.handle_message(event, team_id=team_id, bot_user_id=bot_user_id):
            return
        await services.iterations.handle(event, team_id=team_id, bot_user_id=bot_user_id)

    app.event("message")(on_message)
    app.event("app_mention")(on_message)
