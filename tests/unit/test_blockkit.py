"""The fake's Block Kit validator refuses what Slack refuses, and passes what Slack accepts."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from tests.fakes import blockkit


def ready(_: Mapping[str, Any]) -> str | None:
    return None


def processing(_: Mapping[str, Any]) -> str | None:
    return "invalid slack file"


def section(text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}, **extra}


def button(action_id: str = "a", text: str = "Go", value: str = "v") -> dict[str, Any]:
    return {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": text, "emoji": True},
        "value": value,
    }


def image(file_id: str = "F0123456789") -> dict[str, Any]:
    return {"type": "image", "slack_file": {"id": file_id}, "alt_text": "a fox"}


GOOD_MESSAGE = [
    {"type": "header", "text": {"type": "plain_text", "text": "Title"}},
    section("*bold*", block_id="one"),
    {"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 10},
    {"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 10},
    section("with thumb", accessory=image()),
    image(),
    {"type": "actions", "block_id": "two", "elements": [button("a"), button("b")]},
]


def test_a_valid_message_passes_as_a_list_or_as_the_json_a_form_body_carries() -> None:
    assert blockkit.message_errors(GOOD_MESSAGE, ready) == []
    assert blockkit.message_errors(json.dumps(GOOD_MESSAGE), ready) == []
    assert blockkit.message_errors(None, ready) == []


@pytest.mark.parametrize(
    ("blocks", "pointer"),
    [
        ([section("x" * 3001)], "/blocks/0/text/text"),
        ([{"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 11}], "/blocks/0/fields"),
        (
            [{"type": "section", "fields": [{"type": "mrkdwn", "text": "f" * 2001}]}],
            "/blocks/0/fields/0/text",
        ),
        ([{"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 11}], "/blocks/0/elements"),
        ([{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}], "/blocks/0/text/text"),
        ([{"type": "actions", "elements": [button(text="b" * 76)]}], "/blocks/0/elements/0/text/text"),
        ([{"type": "actions", "elements": [button(value="v" * 2001)]}], "/blocks/0/elements/0/value"),
        ([{"type": "actions", "elements": [button(action_id="a" * 256)]}], "/blocks/0/elements/0/action_id"),
        ([{"type": "actions", "elements": [button("a"), button("a")]}], "/blocks/0/elements/1"),
        ([{**image(), "alt_text": "a" * 2001}], "/blocks/0/alt_text"),
        ([section(block_id="same"), section(block_id="same")], "/blocks/1/block_id"),
        ([section()] * 51, "/blocks"),
        ([section(bogus=1)], "/blocks/0"),
        ([{"type": "no_such_block"}], "/blocks/0"),
        (
            [
                {
                    "type": "input",
                    "label": {"type": "plain_text", "text": "P"},
                    "element": {"type": "plain_text_input", "action_id": "v"},
                }
            ],
            "/blocks/0/type",
        ),
    ],
)
def test_each_limit_is_refused_at_its_json_pointer(blocks: list[dict[str, Any]], pointer: str) -> None:
    errors = blockkit.message_errors(blocks, ready)
    assert any(error.endswith(f"[json-pointer:{pointer}]") for error in errors), errors
    assert all(error.startswith("[ERROR] ") for error in errors)


def test_an_image_whose_file_slack_is_still_processing_is_refused_wherever_it_sits() -> None:
    blocks = [image(), section(accessory=image())]
    assert blockkit.message_errors(blocks, processing) == [
        "[ERROR] invalid slack file [json-pointer:/blocks/0/slack_file]",
        "[ERROR] invalid slack file [json-pointer:/blocks/1/accessory/slack_file]",
    ]


def test_a_view_is_checked_whole_with_block_ids_unique_across_it() -> None:
    good = {"type": "home", "blocks": [section(block_id=f"b{n}") for n in range(100)]}
    assert blockkit.view_errors(good, ready) == []
    assert blockkit.view_errors(json.dumps(good), ready) == []
    too_many = {"type": "home", "blocks": [section() for _ in range(101)]}
    assert "[ERROR] must have at most 100 items [json-pointer:/view/blocks]" in blockkit.view_errors(
        too_many, ready
    )
    repeated = {"type": "home", "blocks": [section(block_id="x"), section(block_id="x")]}
    assert blockkit.view_errors(repeated, ready) == [
        "[ERROR] duplicate block_id x [json-pointer:/view/blocks/1/block_id]"
    ]


def test_a_modal_checks_its_title_and_inputs() -> None:
    modal: dict[str, Any] = {
        "type": "modal",
        "callback_id": "c",
        "title": {"type": "plain_text", "text": "Edit and run"},
        "blocks": [
            {
                "type": "input",
                "block_id": "prompt",
                "label": {"type": "plain_text", "text": "Prompt"},
                "element": {"type": "plain_text_input", "action_id": "value", "initial_value": "p" * 3000},
            }
        ],
    }
    assert blockkit.view_errors(modal, ready) == []
    modal["blocks"][0]["element"]["initial_value"] = "p" * 3001
    modal["title"] = {"type": "plain_text", "text": "t" * 25}
    errors = blockkit.view_errors(modal, ready)
    assert any("/view/blocks/0/element/initial_value]" in error for error in errors), errors
    assert any("/view/title/text]" in error for error in errors), errors


def test_refusals_have_the_shapes_slack_answers_with() -> None:
    errors = ["[ERROR] invalid slack file [json-pointer:/blocks/0/slack_file]"]
    assert blockkit.invalid_blocks(errors) == {
        "ok": False,
        "error": "invalid_blocks",
        "errors": ["invalid slack file [json-pointer:/blocks/0/slack_file]"],
        "response_metadata": {"messages": errors},
    }
    assert blockkit.invalid_arguments(errors) == {
        "ok": False,
        "error": "invalid_arguments",
        "response_metadata": {"messages": errors},
    }
