"""Thin Bolt listeners: parse → ack → validate → persist → enqueue → reply."""

from __future__ import annotations

from bot.app.bolt import Listeners
from bot.app.services import Services
from handlers import actions, commands, home, messages, reactions, uploads


def register(app: Listeners, services: Services) -> None:
    """Wire every listener onto `app` (each invocation is tracked, so shutdown waits for it)."""
    commands.register(app, services)
    uploads.register(app, services)
    messages.register(app, services)
    reactions.register(app, services)
    actions.register(app, services)
    home.register(app, services)
