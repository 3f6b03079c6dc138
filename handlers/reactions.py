"""Reactions: on results they iterate, DM the recipe, cancel or delete (the table is
bot/domain/controls.py).

Bolt runs only the first listener that matches an event, so each reaction event has exactly one
listener here, and it hands the event to every feature that reads reactions.
"""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncBoltContext

from bot.app.bolt import Listeners
from bot.app.services import Services


def register(app: Listeners, services: Services) -> None:
    """Register the `reaction_added` and `reaction_removed` listeners."""

    async def on_reaction_added(event: dict[str, Any], context: AsyncBoltContext) -> None:
        await services.branching.react(event, team_id=str(context.team_id), bot_user_id=context.bot_user_id)
        # Pins come from any image message (a person's upload too), so not only the bot's own.
        await services.kits.react(event, removed=False)

    async def on_reaction_removed(event: dict[str, Any], context: AsyncBoltContext) -> None:
        """Nothing undoes an iteration; features whose state a reaction holds act on its removal."""
        await services.kits.react(event, removed=True)

    app.event("reaction_added")(on_reaction_added)
    app.event("reaction_removed")(on_reaction_removed)
