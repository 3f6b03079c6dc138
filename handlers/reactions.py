"""Reactions on results iterate, DM the recipe, cancel or delete (the table is bot/domain/controls.py)."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncBoltContext

from bot.app.bolt import Listeners
from bot.app.services import Services


def register(app: Listeners, services: Services) -> None:
    """Register the `reaction_added` listener."""

    async def on_reaction(event: dict[str, Any], context: AsyncBoltContext) -> None:
        await services.branching.react(event, team_id=str(context.team_id), bot_user_id=context.bot_user_id)

    app.event("reaction_added")(on_reaction)
