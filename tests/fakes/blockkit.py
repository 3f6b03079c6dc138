"""Block Kit validation for FakeSlack: what Slack refuses in `blocks` and `view`, and how it says so.

Two layers, as Slack has (DESIGN.md, "Test harness"; issue 11):
- slack_sdk's own models: every block must survive `Block.parse(b).to_dict() == b` and a view
  `View(**v).to_dict() == v`. `to_dict()` runs slack_sdk's validators on the whole tree, and the
  comparison catches keys or element types the models do not know (`validate_json()` on the outer
  object alone does not descend into elements).
- explicit limits, each with its source, walked with a JSON pointer so the message names the spot the
  way Slack's do (`[ERROR] must be less than 3001 characters [json-pointer:/blocks/1/text/text]`,
  metabase/metabase#74943). Some limits slack_sdk checks too; others (field text, plain_text_input
  initial_value, block_id uniqueness) it does not.

`slack_file` images are refused while Slack is still processing the file (python-slack-sdk#1521,
#1658, bolt-python#1251: `invalid slack file [json-pointer:/blocks/0/slack_file]` right after upload);
the caller says which files are ready through `file_problem`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

FileProblem = Callable[[Mapping[str, Any]], str | None]
"""Given a `slack_file` object, why Slack cannot show it yet (None when it can)."""

MESSAGE_BLOCKS = 50
VIEW_BLOCKS = 100
# slack.md §4 ("Message limits": 50 blocks per message, 100 in modals and the Home tab) and §4 "Buttons"
# (slack_sdk's block_elements.py / blocks.py limits); the rest from the Block Kit reference pages for each
# block and element (docs.slack.dev/reference/block-kit/...), as slack_sdk's validators encode them.
SECTION_TEXT = 3000
SECTION_FIELDS = 10
FIELD_TEXT = 2000
CONTEXT_ELEMENTS = 10
ACTIONS_ELEMENTS = 25
HEADER_TEXT = 150
BLOCK_ID = 255
BUTTON_TEXT = 75
BUTTON_VALUE = 2000
ACTION_ID = 255
URL = 3000
ALT_TEXT = 2000
IMAGE_TITLE = 2000
INPUT_INITIAL_VALUE = 3000
INPUT_LABEL = 2000
OPTION_TEXT = 75
OPTION_VALUE = 150
SELECT_OPTIONS = 100
VIEW_TITLE = 24
PRIVATE_METADATA = 3000
CALLBACK_ID = 255
# Blocks a message may not carry: an `input` block posted with chat.postMessage is `invalid_blocks`
# (python-slack-sdk#1257); inputs belong in modals and App Home.
VIEW_ONLY_BLOCKS = frozenset({"input"})


def _too_long(limit: int, pointer: str) -> str:
    return f"[ERROR] must be less than {limit + 1} characters [json-pointer:{pointer}]"


def _too_many(limit: int, pointer: str) -> str:
    return f"[ERROR] must have at most {limit} items [json-pointer:{pointer}]"


class _Walker:
    """Collects every problem of one surface (a message or a view); block_ids are unique per surface."""

    def __init__(self, file_problem: FileProblem, *, message: bool) -> None:
        self.errors: list[str] = []
        self._file_problem = file_problem
        self._message = message
        self._block_ids: set[str] = set()

    def text(self, obj: Any, limit: int, pointer: str) -> None:
        if isinstance(obj, Mapping):
            value = obj.get("text")
            if isinstance(value, str) and len(value) > limit:
                self.errors.append(_too_long(limit, pointer + "/text"))

    def string(self, value: Any, limit: int, pointer: str) -> None:
        if isinstance(value, str) and len(value) > limit:
            self.errors.append(_too_long(limit, pointer))

    def blocks(self, blocks: Any, pointer: str, limit: int) -> None:
        if not isinstance(blocks, list):
            self.errors.append(f"[ERROR] must be an array [json-pointer:{pointer}]")
            return
        if len(blocks) > limit:
            self.errors.append(_too_many(limit, pointer))
        for index, block in enumerate(blocks):
            self.block(block, f"{pointer}/{index}")

    def block(self, block: Any, pointer: str) -> None:
        if not isinstance(block, Mapping):
            self.errors.append(f"[ERROR] must be an object [json-pointer:{pointer}]")
            return
        kind = block.get("type")
        if self._message and kind in VIEW_ONLY_BLOCKS:
            self.errors.append(f"[ERROR] unsupported type: {kind} [json-pointer:{pointer}/type]")
        block_id = block.get("block_id")
        if block_id is not None:
            self.string(block_id, BLOCK_ID, pointer + "/block_id")
            # "block_id … should be unique for each message and each iteration of a message" (Block Kit
            # reference, every block's block_id field); a view repeating one is refused (slack-go/slack#725,
            # `invalid_arguments` from views.open). The message text is the fake's own.
            if block_id in self._block_ids:
                self.errors.append(f"[ERROR] duplicate block_id {block_id} [json-pointer:{pointer}/block_id]")
            self._block_ids.add(str(block_id))
        self._model(block, pointer)
        if kind == "section":
            self.text(block.get("text"), SECTION_TEXT, pointer + "/text")
            fields = block.get("fields") or []
            if len(fields) > SECTION_FIELDS:
                self.errors.append(_too_many(SECTION_FIELDS, pointer + "/fields"))
            for index, item in enumerate(fields):
                self.text(item, FIELD_TEXT, f"{pointer}/fields/{index}")
            if "accessory" in block:
                self.element(block["accessory"], pointer + "/accessory")
        elif kind == "context":
            elements = block.get("elements") or []
            if len(elements) > CONTEXT_ELEMENTS:
                self.errors.append(_too_many(CONTEXT_ELEMENTS, pointer + "/elements"))
            for index, item in enumerate(elements):
                item_pointer = f"{pointer}/elements/{index}"
                if isinstance(item, Mapping) and item.get("type") == "image":
                    self.image(item, item_pointer)
                else:
                    self.text(item, SECTION_TEXT, item_pointer)
        elif kind == "actions":
            elements = block.get("elements") or []
            if len(elements) > ACTIONS_ELEMENTS:
                self.errors.append(_too_many(ACTIONS_ELEMENTS, pointer + "/elements"))
            # action_id "should be unique among all other action_ids in the containing block" (Block Kit
            # reference, interactive elements).
            seen: set[str] = set()
            for index, item in enumerate(elements):
                self.element(item, f"{pointer}/elements/{index}")
                action_id = item.get("action_id") if isinstance(item, Mapping) else None
                if action_id is not None and action_id in seen:
                    self.errors.append(
                        f"[ERROR] duplicate action_id: {action_id} [json-pointer:{pointer}/elements/{index}]"
                    )
                seen.add(str(action_id))
        elif kind == "header":
            self.text(block.get("text"), HEADER_TEXT, pointer + "/text")
        elif kind == "image":
            self.image(block, pointer)
        elif kind == "input":
            self.text(block.get("label"), INPUT_LABEL, pointer + "/label")
            self.element(block.get("element"), pointer + "/element")

    def element(self, element: Any, pointer: str) -> None:
        if not isinstance(element, Mapping):
            return
        kind = element.get("type")
        if "action_id" in element:
            self.string(element["action_id"], ACTION_ID, pointer + "/action_id")
        if kind == "button":
            self.text(element.get("text"), BUTTON_TEXT, pointer + "/text")
            self.string(element.get("value"), BUTTON_VALUE, pointer + "/value")
            self.string(element.get("url"), URL, pointer + "/url")
        elif kind == "image":
            self.image(element, pointer)
        elif kind == "plain_text_input":
            self.string(element.get("initial_value"), INPUT_INITIAL_VALUE, pointer + "/initial_value")
        elif kind == "static_select":
            options = element.get("options") or []
            if len(options) > SELECT_OPTIONS:
                self.errors.append(_too_many(SELECT_OPTIONS, pointer + "/options"))
            for index, option in enumerate([*options, element.get("initial_option")]):
                if isinstance(option, Mapping):
                    option_pointer = f"{pointer}/options/{index}"
                    self.text(option.get("text"), OPTION_TEXT, option_pointer + "/text")
                    self.string(option.get("value"), OPTION_VALUE, option_pointer + "/value")

    def image(self, image: Mapping[str, Any], pointer: str) -> None:
        self.string(image.get("alt_text"), ALT_TEXT, pointer + "/alt_text")
        self.string(image.get("image_url"), URL, pointer + "/image_url")
        self.text(image.get("title"), IMAGE_TITLE, pointer + "/title")
        slack_file = image.get("slack_file")
        if isinstance(slack_file, Mapping):
            problem = self._file_problem(slack_file)
            if problem is not None:
                self.errors.append(f"[ERROR] {problem} [json-pointer:{pointer}/slack_file]")

    def _model(self, block: Mapping[str, Any], pointer: str) -> None:
        try:
            parsed = Block.parse(dict(block))
            if parsed is None:
                self.errors.append(f"[ERROR] unsupported type: {block.get('type')} [json-pointer:{pointer}]")
            elif parsed.to_dict() != block:
                self.errors.append(f"[ERROR] failed to match all allowed schemas [json-pointer:{pointer}]")
        except (SlackObjectFormationError, TypeError, ValueError, KeyError, AttributeError) as exc:
            self.errors.append(f"[ERROR] {exc} [json-pointer:{pointer}]")


def _decoded(value: Any) -> Any:
    """A `blocks`/`view` argument as sent: a JSON string in a form body, or already decoded."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def message_errors(blocks: Any, file_problem: FileProblem) -> list[str]:
    """Why Slack would refuse these message `blocks` (chat.*, response_url, command ack); [] when valid."""
    blocks = _decoded(blocks)
    if blocks is None or blocks == "":
        return []
    walker = _Walker(file_problem, message=True)
    walker.blocks(blocks, "/blocks", MESSAGE_BLOCKS)
    return walker.errors


def view_errors(view: Any, file_problem: FileProblem) -> list[str]:
    """Why Slack would refuse this `view` (views.open, views.publish, views.update); [] when valid."""
    view = _decoded(view)
    if not isinstance(view, Mapping):
        return ["[ERROR] must be an object [json-pointer:/view]"]
    walker = _Walker(file_problem, message=False)
    walker.blocks(view.get("blocks"), "/view/blocks", VIEW_BLOCKS)
    for key in ("title", "submit", "close"):
        walker.text(view.get(key), VIEW_TITLE, f"/view/{key}")
    walker.string(view.get("private_metadata"), PRIVATE_METADATA, "/view/private_metadata")
    walker.string(view.get("callback_id"), CALLBACK_ID, "/view/callback_id")
    try:
        if View(**dict(view)).to_dict() != view:
            walker.errors.append("[ERROR] failed to match all allowed schemas [json-pointer:/view]")
    except (SlackObjectFormationError, TypeError, ValueError, KeyError, AttributeError) as exc:
        walker.errors.append(f"[ERROR] {exc} [json-pointer:/view]")
    return walker.errors


def invalid_blocks(errors: list[str]) -> dict[str, Any]:
    """chat.postMessage / chat.update / chat.postEphemeral's refusal: `invalid_blocks`, the problems in
    `errors` (without the level) and in `response_metadata.messages` (python-slack-sdk#1658 quotes
    `{'ok': False, 'error': 'invalid_blocks', 'errors': ['invalid slack file [json-pointer:/blocks/0/
    slack_file]'], 'response_metadata': {'messages': ['[ERROR] invalid slack file …']}}`)."""
    return {
        "ok": False,
        "error": "invalid_blocks",
        "errors": [error.removeprefix("[ERROR] ") for error in errors],
        "response_metadata": {"messages": errors},
    }


def invalid_arguments(errors: list[str]) -> dict[str, Any]:
    """views.*'s refusal: `invalid_arguments` with the problems in `response_metadata.messages`
    (java-slack-sdk#302 and nicklambourne/slackblocks#36 quote views.open answers of this shape)."""
    return {"ok": False, "error": "invalid_arguments", "response_metadata": {"messages": errors}}
