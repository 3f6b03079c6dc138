"""Which messages Dreamboard answers."""

from __future__ import annotations

from typing import Any

import pytest

from bot.features.iterations import is_noise, strip_mention

BOT = "U0BOT"


def message(**fields: Any) -> dict[str, Any]:
    return {"type": "message", "user": "U1", "text": "a fox", "ts": "1.1", "channel": "C1", **fields}


@pytest.mark.parametrize(
    "event",
    [
        message(bot_id="B1"),
        message(user=BOT),
        message(subtype="bot_message"),
        message(subtype="message_changed"),
        message(subtype="message_deleted"),
        message(subtype="channel_join"),
        message(text=":tada:"),
        message(text=" :tada: :fire:  "),
        message(text=f"<@{BOT}> :+1:"),
        message(text=""),
        message(user=None),
    ],
)
def test_noise(event: dict[str, Any]) -> None:
    assert is_noise(event, BOT)


@pytest.mark.parametrize(
    "event",
    [
        message(),
        message(subtype="file_share", text="", files=[{"id": "F1"}]),
        message(subtype="thread_broadcast"),
        message(text=":tada: party poster"),
        message(text=f"<@{BOT}> a fox"),
    ],
)
def test_not_noise(event: dict[str, Any]) -> None:
    assert not is_noise(event, BOT)


def test_strip_mention_removes_only_the_bot() -> None:
    assert strip_mention(f"<@{BOT}> portrait of <@U2> <@{BOT}|dreamboard>", BOT) == "portrait of <@U2>"
