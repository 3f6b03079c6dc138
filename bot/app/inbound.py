"""Checking what reaches the bot before Bolt sees it: the signature of an HTTP request on its raw
body, the content type, and whether the body has a shape Slack sends (HTTP and Socket Mode alike);
refusals are logged at most once a minute per kind.

Facts relied on (../shared/docs/slack.md §1.6 and https://api.slack.com/docs/verifying-requests-from-slack):
Slack signs every request it sends with `X-Slack-Signature: v0=<hex HMAC-SHA256>` over
`v0:{X-Slack-Request-Timestamp}:{raw body}`, the body is UTF-8, and a timestamp more than five minutes
from now is to be refused (slack_sdk.signature.SignatureVerifier checks both). Slash commands and
interactive payloads arrive as `application/x-www-form-urlencoded` (interactions as one `payload`
field holding JSON), Events API deliveries as `application/json` (slack.md §3.5; Bolt's
`parse_body` in slack_bolt/request/internals.py reads exactly these two).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from slack_sdk.signature import SignatureVerifier

log = logging.getLogger(__name__)

STALE_AFTER = 60 * 5
"""Slack's replay window: a request signed more than five minutes from now is refused."""
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
SLACK_CONTENT_TYPES = frozenset({FORM, JSON})
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")
_COMMAND_FIELDS = ("command", "team_id", "user_id", "channel_id")
"""Fields every slash command invocation carries (payloads/slash_command.json) and the bot relies on."""


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused: the HTTP status, a kind (one log line a minute each) and the reason,
    which names no value from the request."""

    status: int
    kind: str
    reason: str


def unsigned(headers: Mapping[str, str], raw: bytes, verifier: SignatureVerifier) -> Refusal | None:
    """Whether an HTTP request fails Slack's signature check (checked before anything parses the body)."""
    timestamp = headers.get("X-Slack-Request-Timestamp", "")
    signature = headers.get("X-Slack-Signature", "")
    if not _TIMESTAMP.fullmatch(timestamp) or not _SIGNATURE.fullmatch(signature):
        return Refusal(401, "unsigned", "no well-formed X-Slack-Signature and X-Slack-Request-Timestamp")
    if abs(verifier.clock.now() - int(timestamp)) > STALE_AFTER:
        return Refusal(401, "stale", "signed more than five minutes from now")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Refusal(400, "malformed", "the body is not UTF-8")
    if not verifier.is_valid(body=text, timestamp=timestamp, signature=signature):
        return Refusal(401, "bad-signature", "the signature does not match the body")
    return None


def parse_signed_body(content_type: str, text: str) -> dict[str, Any] | Refusal:
    """The body of a signed request as Bolt would read it, or why Slack would never send it."""
    if content_type not in SLACK_CONTENT_TYPES:
        return Refusal(415, "content-type", "Slack sends only form-encoded or JSON bodies")
    if content_type == JSON:
        try:
            body = json.loads(text)
        except ValueError:
            return Refusal(400, "malformed", "the JSON body does not parse")
    else:
        # A literal "{" cannot start a form (it would be %7B), and Bolt would read such a body as JSON.
        if text.startswith("{"):
            return Refusal(400, "malformed", "a form body that is not form-encoded")
        pairs = parse_qsl(text, keep_blank_values=True)
        fields = dict(pairs)
        if len(fields) != len(pairs):
            return Refusal(400, "malformed", "a form field is repeated")
        if "payload" not in fields:
            body = fields
        else:
            try:
                body = json.loads(fields["payload"])
            except ValueError:
                return Refusal(400, "malformed", "the payload field is not JSON")
    problem = shape_problem(body)
    return Refusal(400, "malformed", problem) if problem else body


def shape_problem(body: object) -> str | None:
    """What makes `body` (an Events API body, an interaction payload or a slash command's fields) unlike
    anything Slack sends, or None."""
    if not isinstance(body, dict):
        return "the body is not an object"
    if "command" in body or "type" not in body:
        if "ssl_check" in body:
            return None
        missing = [name for name in _COMMAND_FIELDS if not (isinstance(body.get(name), str) and body[name])]
        if missing:
            return "neither an event nor an interaction, nor a command with " + ", ".join(missing)
        return None
    if not isinstance(body["type"], str):
        return "`type` is not a string"
    for name in ("event", "user", "team", "view", "container", "channel", "enterprise", "message"):
        if name in body and body[name] is not None and not isinstance(body[name], dict):
            return f"`{name}` is not an object"
    event = body.get("event")
    if "event" in body:
        if not (isinstance(event, dict) and isinstance(event.get("type"), str)):
            return "`event` is not an object with a type"
        if problem := _event_problem(event):
            return problem
    if "actions" in body and not (
        isinstance(body["actions"], list) and all(isinstance(action, dict) for action in body["actions"])
    ):
        return "`actions` is not a list of objects"
    if "authorizations" in body and not (
        isinstance(body["authorizations"], list) and all(isinstance(a, dict) for a in body["authorizations"])
    ):
        return "`authorizations` is not a list of objects"
    if body["type"] in _INTERACTIONS:
        return _interaction_problem(body)
    return None


_EVENT_STRINGS = (
    "user",
    "channel",
    "ts",
    "thread_ts",
    "text",
    "reaction",
    "channel_type",
    "subtype",
    "bot_id",
)
_EVENT_OBJECTS = ("item", "message", "previous_message")
_EVENT_REQUIRED = {
    "message": ("channel", "ts"),
    "app_mention": ("channel", "ts", "user"),
    "reaction_added": ("user", "reaction", "item"),
    "reaction_removed": ("user", "reaction", "item"),
    "app_home_opened": ("user",),
}
"""The events the bot listens to (manifest.yaml) and the fields each always carries (payloads/*.json,
slack.md §3); in these, the fields of _EVENT_STRINGS are strings and those of _EVENT_OBJECTS objects."""


def _event_problem(event: dict[str, Any]) -> str | None:
    if event["type"] not in _EVENT_REQUIRED:
        return None  # not one the bot listens to (in other events `user` may be an object: team_join)
    for name in _EVENT_STRINGS:
        if name in event and event[name] is not None and not isinstance(event[name], str):
            return f"the event's `{name}` is not a string"
    for name in _EVENT_OBJECTS:
        if name in event and event[name] is not None and not isinstance(event[name], dict):
            return f"the event's `{name}` is not an object"
    files = event.get("files")
    if files is not None and not (isinstance(files, list) and all(isinstance(f, dict) for f in files)):
        return "the event's `files` is not a list of objects"
    missing = [name for name in _EVENT_REQUIRED.get(event["type"], ()) if not event.get(name)]
    if event["type"] == "message" and not event.get("subtype") and not event.get("bot_id"):
        missing += [] if event.get("user") else ["user"]
    return f"the {event['type']} event has no " + ", ".join(missing) if missing else None


_INTERACTIONS = frozenset({"block_actions", "view_submission", "view_closed", "shortcut", "message_action"})
"""Interaction payloads: each names the person who acted (`user`, with the team in `user.team_id` or
`team.id`; payloads/block_actions.json, view_submission.json)."""


def _has_id(value: object, key: str = "id") -> bool:
    return isinstance(value, dict) and isinstance(value.get(key), str) and bool(value[key])


def _interaction_problem(body: dict[str, Any]) -> str | None:
    user = body.get("user")
    if not _has_id(user):
        return "`user` is not an object with an id"
    if not (_has_id(user, "team_id") or _has_id(body.get("team"))):
        return "neither `user.team_id` nor `team.id` is given"
    for name in ("trigger_id", "response_url"):
        if name in body and not isinstance(body[name], str):
            return f"`{name}` is not a string"
    if body["type"] == "block_actions":
        actions = body.get("actions")
        if not (isinstance(actions, list) and actions and all(_has_id(a, "action_id") for a in actions)):
            return "`actions` is not a list of actions with an action_id"
        if any(not isinstance(a.get("value", ""), str) for a in actions):
            return "an action's `value` is not a string"
    if body["type"] == "view_submission":
        view = body.get("view")
        if not (
            isinstance(view, dict) and _has_id(view, "callback_id") and isinstance(view.get("state"), dict)
        ):
            return "`view` is not a view with a callback_id and a state"
        if not isinstance(view.get("private_metadata", ""), str):
            return "`view.private_metadata` is not a string"
        values = view["state"].get("values", {})
        if not (isinstance(values, dict) and all(isinstance(block, dict) for block in values.values())):
            return "`view.state.values` is not an object of blocks"
        if not all(isinstance(item, dict) for block in values.values() for item in block.values()):
            return "`view.state.values` holds an input that is not an object"
    return None


class RefusalLog:
    """One WARNING per kind of refusal per `every` seconds, counting the ones it kept quiet."""

    def __init__(self, *, every: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._every = every
        self._clock = clock
        self._last: dict[str, float] = {}
        self._quiet: dict[str, int] = {}

    def refused(self, where: str, refusal: Refusal) -> None:
        """Note a refused request; logs it unless this kind was logged less than `every` seconds ago."""
        now = self._clock()
        last = self._last.get(refusal.kind)
        if last is not None and now - last < self._every:
            self._quiet[refusal.kind] = self._quiet.get(refusal.kind, 0) + 1
            return
        self._last[refusal.kind] = now
        quiet = self._quiet.pop(refusal.kind, 0)
        also = f" ({quiet} more of this kind since the last such line)" if quiet else ""
        log.warning("refused %s (%s): %s%s", where, refusal.kind, refusal.reason, also)
