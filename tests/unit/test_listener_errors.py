"""What a user is told when a listener fails: what failed, how, and nothing from the exception text."""

from __future__ import annotations

import sqlite3
from typing import Any

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError

from bot.app.listener_errors import failure_cause, request_kind, what_failed


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (
            SlackApiError("boom", {"ok": False, "error": "not_in_channel"}),  # type: ignore[no-untyped-call]
            "Slack refused a request (`not_in_channel`)",
        ),
        (TimeoutError("xoxb-secret-1"), "a request timed out"),
        (aiohttp.ClientConnectionError("http://user:xoxb-secret-1@host"), "a network request failed"),
        (sqlite3.ProgrammingError("Cannot operate on a closed database."), "its database could not be used"),
        (RuntimeError("token xoxb-secret-1 in a message"), "an internal error (RuntimeError)"),
    ],
)
def test_the_cause_is_named_without_the_exception_text(error: Exception, cause: str) -> None:
    assert failure_cause(error) == cause


@pytest.mark.parametrize(
    ("body", "what", "kind"),
    [
        (
            {"command": "/imagine", "text": "history   export", "user_id": "U1"},
            "`/imagine history export`",
            "command /imagine from U1",
        ),
        (
            {"command": "/imagine", "text": "a `fox` " + "very " * 20, "user_id": "U1"},
            "`/imagine a 'fox' very very very very very very very very ve…`",
            "command /imagine from U1",
        ),
        (
            {
                "type": "block_actions",
                "user": {"id": "U2"},
                "actions": [{"action_id": "dreamboard:reroll:0", "text": {"text": "🎲 Reroll"}}],
            },
            "the *🎲 Reroll* button",
            "block_actions dreamboard:reroll:0 from U2",
        ),
        (
            {
                "type": "view_submission",
                "user": {"id": "U2"},
                "view": {"callback_id": "edit", "title": {"text": "Edit"}},
            },
            "the *Edit* form",
            "view_submission edit from U2",
        ),
        (
            {
                "type": "event_callback",
                "event": {"type": "reaction_added", "user": "U3", "reaction": "repeat"},
            },
            "your :repeat: reaction",
            "event reaction_added from U3",
        ),
        (
            {"type": "event_callback", "event": {"type": "app_mention", "user": "U3"}},
            "your message",
            "event app_mention from U3",
        ),
        (
            {"type": "event_callback", "event": {"type": "app_home_opened"}},
            "your App Home tab",
            "event app_home_opened",
        ),
    ],
)
def test_what_failed_is_named_as_the_user_knows_it(body: dict[str, Any], what: str, kind: str) -> None:
    assert what_failed(body) == what
    assert request_kind(body) == kind
