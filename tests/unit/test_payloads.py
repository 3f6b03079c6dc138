"""FakeSlack builds what the bot receives from Slack's documented examples (tests/fakes/payloads/)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest

from tests.fakes.slack import FakeSlack, example


def missing_keys(example_value: Any, built: Any, path: str = "") -> list[str]:
    """Keys of the documented example (nested objects, and the first item of lists of objects) that the
    built payload lacks."""
    if isinstance(example_value, dict):
        if not isinstance(built, dict):
            return [path or "(top)"]
        missing = [f"{path}.{key}".lstrip(".") for key in example_value if key not in built]
        for key, value in example_value.items():
            if key in built and key not in ("blocks", "message", "files", "event", "values"):
                missing += missing_keys(value, built[key], f"{path}.{key}")
        return missing
    if isinstance(example_value, list) and example_value and isinstance(example_value[0], dict):
        if not isinstance(built, list) or not built:
            return [path]
        return missing_keys(example_value[0], built[0], f"{path}[0]")
    return []


@pytest.fixture
def slack() -> FakeSlack:
    fake = FakeSlack()
    fake.url = "http://127.0.0.1:1"
    return fake


def test_a_command_has_every_documented_field_and_survives_form_encoding(slack: FakeSlack) -> None:
    payload = slack.command_payload("a red fox", user_id="U7", channel_id="C7")
    assert missing_keys(example("slash_command"), payload) == []
    assert dict(parse_qsl(urlencode(payload))) == payload
    assert (payload["text"], payload["user_id"], payload["channel_id"]) == ("a red fox", "U7", "C7")


def test_a_button_click_has_every_documented_key(slack: FakeSlack) -> None:
    button = {
        "type": "button",
        "action_id": "dreamboard:reroll:x",
        "text": {"type": "plain_text", "text": "R"},
    }
    message = {
        "ts": "1.2",
        "text": "card",
        "blocks": [{"type": "actions", "block_id": "acts", "elements": [button]}],
    }
    payload = slack.button_payload(button, user_id="U2", channel_id="C1", message=message)
    assert missing_keys(example("block_actions"), payload) == []
    assert payload["actions"][0]["block_id"] == "acts"
    assert payload["container"]["message_ts"] == "1.2"
    assert (
        payload["trigger_id"]
        != slack.button_payload(button, user_id="U2", channel_id="C1", message=message)["trigger_id"]
    )


def test_a_view_submission_has_every_documented_key(slack: FakeSlack) -> None:
    view = {
        "type": "modal",
        "callback_id": "edit",
        "title": {"type": "plain_text", "text": "Edit"},
        "blocks": [],
    }
    values = {"prompt": {"value": {"type": "plain_text_input", "value": "a fox"}}}
    payload = slack.view_submission_payload(view, values, user_id="U2")
    assert missing_keys(example("view_submission"), payload) == []
    assert payload["view"]["callback_id"] == "edit"
    assert payload["view"]["state"] == {"values": values}


def test_messages_mentions_and_stubs_have_every_documented_key(slack: FakeSlack) -> None:
    root = slack.human_message("C1", "root", user="U3")
    plain = slack.human_message("C1", "hello", thread_ts=root["ts"])
    assert missing_keys(example("message"), plain) == []
    assert (plain["thread_ts"], plain["parent_user_id"]) == (root["ts"], "U3")

    file = slack.add_file(b"png", name="sketch.png")
    stub = slack.file_stub(file)
    assert missing_keys(example("file_stub_check_file_info"), stub) == []
    shared = slack.human_message("C1", "with a file", files=[stub])
    assert missing_keys(example("message_file_share"), shared) == []
    assert shared["files"] == [{"id": file["id"], "file_access": "check_file_info"}]
    [stored] = [m for m in slack.messages("C1") if m["ts"] == shared["ts"]]
    assert stored["files"][0]["url_private_download"], "conversations.replies shows the full file object"

    mention = slack.app_mention(slack.human_message("C1", f"<@{slack.bot_user_id}> hi", thread_ts=root["ts"]))
    assert missing_keys(example("app_mention"), mention) == []
    assert (mention["type"], mention["thread_ts"]) == ("app_mention", root["ts"])


def test_reactions_and_the_envelope_have_every_documented_key(slack: FakeSlack) -> None:
    event = slack.reaction_event("repeat", user="U2", channel="C1", ts="1.2")
    assert missing_keys(example("reaction_added"), event) == []
    assert event["item"] == {"type": "message", "channel": "C1", "ts": "1.2", "channel_type": "channel"}
    removed = slack.reaction_event("repeat", user="U2", channel="C1", ts="1.2", removed=True)
    assert missing_keys(example("reaction_removed"), removed) == []
    assert (removed["type"], removed["item"]) == ("reaction_removed", event["item"])
    envelope = slack.event_envelope(event)
    assert missing_keys(example("event_callback"), envelope) == []
    assert envelope["event"] is event
    assert envelope["authorizations"][0]["user_id"] == slack.bot_user_id


def test_the_key_check_can_fail() -> None:
    assert missing_keys({"a": 1, "b": {"c": 2}, "d": [{"e": 3}]}, {"a": 1, "b": {}, "d": [{}]}) == [
        "b.c",
        "d[0].e",
    ]
