"""The App Home tab: published when a user opens it (and refreshed after their jobs for a while)."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncBoltContext

from bot.app.bolt import Listeners
from bot.app.services import Services


def register(app: Listeners, services: Services) -> None:
    """Register the `app_home_opened` listener."""

    async def on_home_opened(event: dict[str, Any], context: AsyncBoltContext) -> None:
        if event.get("tab", "home") == "home":
            services.history.opened_home(str(context.team_id), str(event["user"]))

    app.event("app_home_opened")(on_home_opened)
