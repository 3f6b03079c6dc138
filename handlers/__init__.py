"""Thin Bolt listeners: parse → ack → validate → persist → enqueue → reply."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.app.services import Services
from handlers import actions, commands, home, messages, reactions


def register(app: AsyncApp, services: Services) -> None:
    """Wire every listener onto `app`."""
    commands.register(app, services)
    messages.register(app, services)
    reactions.register(app, services)
    actions.register(app, services)
    home.register(app, services)
