"""Requests nobody signed, stale or malformed ones, bodies Slack never sends and odd Socket Mode envelopes
are refused fast (HTTP) or acked (Socket Mode): never a 500, never a traceback, one WARNING a burst."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import pytest

from bot.app.inbound import Refusal, RefusalLog, shape_problem
from bot.features.reference_hosting import SignedUrlHost
from bot.views.blocks import EDIT_CALLBACK
from tests.fakes.oxen import FakeOxen
from tests.fakes.signing import slack_signature
from tests.fakes.slack import FakeSlack, example
from tests.scenarios.harness import Harness, is_card
from tests.scenarios.test_actions import button
from tests.scenarios.test_kill_matrix import BotProcess

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
BURST = 50


@pytest.fixture
async def bot(fake_slack: FakeSlack, fake_oxen: FakeOxen, tmp_path: Path) -> AsyncIterator[BotProcess]:
    """`python -m bot` in HTTP mode (tests/scenarios/test_kill_matrix.py), killed after the test."""
    process = BotProcess(fake_slack, fake_oxen, tmp_path / "data")
    try:
        yield process
    finally:
        await process.close()


def signed_headers(
    slack: FakeSlack, body: bytes, *, content_type: str | None, timestamp: str | None = None
) -> dict[str, str]:
    """Headers of a request signed with the app's signing secret (at `timestamp`, now by default)."""
    stamp = timestamp or str(int(time.time()))
    headers = {
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": slack_signature(slack.signing_secret, stamp, body.decode("utf-8", "replace")),
    }
    if content_type is not None:
        headers["Content-Type"] = content_type
    return headers


def command_form(slack: FakeSlack, text: str = "a fox") -> bytes:
    return urlencode(slack.command_payload(text)).encode()


def hostile(slack: FakeSlack) -> list[tuple[str, bytes, dict[str, str], int]]:
    """(what, body, headers, expected status) for each kind of request the bot must refuse."""
    now = str(int(time.time()))
    event = json.dumps(slack.event_envelope(slack.human_message("C1", "hi"))).encode()

    def signed(body: bytes, content_type: str | None = JSON) -> dict[str, str]:
        return signed_headers(slack, body, content_type=content_type)

    def json_body(value: object) -> bytes:
        return json.dumps(value).encode()

    odd_enterprise = json_body({**json.loads(event), "enterprise": 5})
    odd_event = json_body({**json.loads(event), "event": "message"})
    odd_authorizations = json_body({**json.loads(event), "authorizations": 3})
    form_without_command = urlencode({"text": "a fox", "user_id": "U1"}).encode()
    form_with_bad_payload = urlencode({"payload": "{not json"}).encode()
    form_array_payload = urlencode({"payload": "[1, 2]"}).encode()
    command = command_form(slack)
    return [
        ("unsigned malformed JSON", b"{not json", {"Content-Type": JSON}, 401),
        ("unsigned JSON array", b"[1, 2]", {"Content-Type": JSON}, 401),
        ("unsigned command", command, {"Content-Type": FORM}, 401),
        (
            "non-numeric timestamp",
            event,
            {
                "Content-Type": JSON,
                "X-Slack-Request-Timestamp": "soon",
                "X-Slack-Signature": "v0=" + "0" * 64,
            },
            401,
        ),
        (
            "huge timestamp",
            event,
            {"Content-Type": JSON, "X-Slack-Request-Timestamp": "9" * 5000, "X-Slack-Signature": "v0=00"},
            401,
        ),
        ("wrong signature", event, {**signed(event), "X-Slack-Signature": "v0=" + "a" * 64}, 401),
        ("non-ASCII signature", event, {**signed(event), "X-Slack-Signature": "v0=é" + "a" * 63}, 401),
        (
            "stale",
            event,
            signed_headers(slack, event, content_type=JSON, timestamp=str(int(now) - 301)),
            401,
        ),
        ("signed malformed JSON", b"{not json", signed(b"{not json"), 400),
        ("signed JSON array", b"[1, 2]", signed(b"[1, 2]"), 400),
        ("signed non-object event", odd_event, signed(odd_event), 400),
        ("signed odd enterprise", odd_enterprise, signed(odd_enterprise), 400),
        ("signed odd authorizations", odd_authorizations, signed(odd_authorizations), 400),
        ("signed non-UTF-8 body", b"\xff\xfe{}", signed(b"\xff\xfe{}"), 400),
        ("signed command as text/plain", command, signed(command, "text/plain"), 415),
        ("signed command without a content type", command, signed(command, None), 415),
        ("signed form without command", form_without_command, signed(form_without_command, FORM), 400),
        ("signed form, payload not JSON", form_with_bad_payload, signed(form_with_bad_payload, FORM), 400),
        ("signed form, payload an array", form_array_payload, signed(form_array_payload, FORM), 400),
    ]


async def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    """POST exactly these bytes and headers (aiohttp adds no content type to raw bytes)."""
    async with (
        aiohttp.ClientSession(skip_auto_headers=["Content-Type"]) as session,
        session.post(url, data=body, headers=headers) as response,
    ):
        await response.read()
        return response.status


def records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.levelno >= level]


async def test_the_real_process_refuses_hostile_requests_without_a_traceback(bot: BotProcess) -> None:
    await bot.start()
    url = f"http://127.0.0.1:{bot.port}/slack/events"
    for what, body, headers, status in hostile(bot.slack):
        assert await post(url, body, headers) == status, what
    too_big = b"x" * (1024 * 1024 + 1)
    assert await post(url, too_big, signed_headers(bot.slack, too_big, content_type=JSON)) == 413
    for _ in range(BURST):
        assert await post(url, b"[]", {"Content-Type": JSON}) == 401

    await bot.command("a fox after the noise")
    [(job, _)] = await bot.settled()
    assert job.prompt == "a fox after the noise"
    log = bot.log()
    assert "Traceback" not in log
    entries = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert not [entry for entry in entries if entry["level"] in ("ERROR", "CRITICAL")], log
    refused = Counter(
        entry["message"].split("(")[1].split(")")[0]
        for entry in entries
        if entry["level"] == "WARNING" and entry["message"].startswith("refused ")
    )
    assert refused == {"unsigned": 1, "bad-signature": 1, "stale": 1, "malformed": 1, "content-type": 1}


async def test_a_burst_of_each_kind_logs_one_warning_per_kind(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    await harness.start()
    caplog.set_level(logging.INFO)
    for what, body, headers, status in hostile(harness.slack):
        assert await post(harness.events_url, body, headers) == status, what
    for _ in range(BURST):
        assert await post(harness.events_url, b"{not json", {"Content-Type": JSON}) == 401
    warnings = [r.getMessage() for r in records(caplog, logging.WARNING) if r.name == "bot.app.inbound"]
    assert len(warnings) == 5, warnings
    assert not records(caplog, logging.ERROR)
    assert "Traceback" not in caplog.text
    assert not await harness.jobs()


def test_the_refusal_log_counts_what_it_kept_quiet(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    refusals = RefusalLog(every=60.0, clock=lambda: now[0])
    unsigned = Refusal(401, "unsigned", "no signature")
    caplog.set_level(logging.WARNING)
    for _ in range(BURST):
        refusals.refused("a request", unsigned)
    refusals.refused("a request", Refusal(400, "malformed", "not JSON"))
    now[0] = 59.9
    refusals.refused("a request", unsigned)
    assert [r.getMessage() for r in caplog.records] == [
        "refused a request (unsigned): no signature",
        "refused a request (malformed): not JSON",
    ]
    now[0] = 60.0
    refusals.refused("a request", unsigned)
    assert caplog.records[-1].getMessage() == (
        f"refused a request (unsigned): no signature ({BURST} more of this kind since the last such line)"
    )


async def test_a_command_whose_text_says_payload_is_still_a_command(harness: Harness) -> None:
    """Bolt's own form parsing reads any form body containing "payload" as an interaction."""
    await harness.start()
    response = await harness.command("a payload of apples")
    assert response.status == 200
    await harness.slack.wait_for("chat.update", where=is_card)
    [(job, _)] = await harness.jobs()
    assert job.prompt == "a payload of apples"


async def test_socket_mode_acks_odd_envelopes_and_keeps_serving(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    await harness.start(slack_app_token=harness.slack.app_token, slack_signing_secret=None)
    await harness.slack.wait_socket_connected(timeout=5)
    caplog.set_level(logging.INFO)
    command = harness.slack.command_payload("x")
    del command["user_id"]
    odd: list[tuple[str, object]] = [
        ("slash_commands", ["not", "an", "object"]),
        ("slash_commands", "text=a+fox"),
        ("slash_commands", command),
        ("interactive", {"type": 5}),
        ("interactive", {"type": "block_actions", "actions": "click", "user": {"id": "U1"}}),
        ("interactive", {"type": "block_actions", "user": "U1"}),
        ("events_api", {"type": "event_callback", "event": ""}),
        ("events_api", {"type": "event_callback", "event": {"type": "message"}, "enterprise": 7}),
    ]
    for _ in range(3):
        for envelope_type, payload in odd:
            ack = await harness.slack.socket_send(envelope_type, payload, accepts_response_payload=True)  # type: ignore[arg-type]
            assert set(ack) == {"envelope_id"}, (envelope_type, payload)
    warnings = [r.getMessage() for r in records(caplog, logging.WARNING) if r.name == "bot.app.inbound"]
    assert len(warnings) == 1, warnings
    assert not records(caplog, logging.ERROR)
    assert "Traceback" not in caplog.text

    await harness.slack.socket_send(
        "slash_commands", harness.slack.command_payload("a fox after all"), accepts_response_payload=True
    )
    await harness.slack.wait_for("chat.update", where=is_card)
    [(job, _)] = await harness.jobs()
    assert job.prompt == "a fox after all"


@pytest.mark.parametrize(
    "name",
    ["a" * 10_000, "a" * 300 + ".png", "nul\x00.png", "..", ".", "...png", "é.png", "%00", "a b.png"],
)
async def test_reference_names_of_any_shape_resolve_to_nothing(tmp_path: Path, name: str) -> None:
    host = SignedUrlHost("http://bot.example", b"secret", tmp_path)
    expires = int(time.time()) + 60
    signature = host._sign(name, expires)
    assert await host.resolve(name, str(expires), signature) is None
    assert await host.resolve(name, "9" * 5000, signature) is None
    assert await host.resolve(name, str(expires), "é" * 64) is None


async def test_the_reference_route_answers_odd_names_with_403_or_404(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """Names up to aiohttp's 8 kB request line reach the route; a longer line is answered 400 by aiohttp's
    parser before any route, and logged as one WARNING instead of its ERROR traceback."""
    await harness.start_at_own_url()
    caplog.set_level(logging.INFO)
    query = f"?exp={int(time.time()) + 60}&sig=" + "0" * 64
    async with aiohttp.ClientSession() as session:
        for name in ("a" * 8000, "..", "%00", "x%00.png", "%2e%2e", "a" * 255 + ".png", "%C3%A9.png"):
            async with session.get(f"{harness.url}/refs/{name}{query}") as response:
                assert response.status in (403, 404), name
        async with session.get(f"{harness.url}/refs/x.png?exp=soon&sig=%C3%A9") as response:
            assert response.status == 403
        for _ in range(3):
            async with session.get(f"{harness.url}/refs/{'a' * 10_000}{query}") as response:
                assert response.status == 400
    assert not records(caplog, logging.ERROR)
    assert "Traceback" not in caplog.text
    warnings = [r.getMessage() for r in records(caplog, logging.WARNING) if r.name == "bot.app.inbound"]
    assert len(warnings) <= 1, warnings  # the filter's RefusalLog is per process


# -- what the fuzzer found (tests/unit/test_fuzz_payloads.py), each as a plain regression test -------------


async def test_signed_payloads_missing_what_slack_always_sends_are_refused(harness: Harness) -> None:
    await harness.start()
    slack = harness.slack
    no_channel = slack.command_payload("a fox")
    no_channel["channel_id"] = ""
    assert (await slack.send_command_payload(harness.events_url, no_channel)).status == 400
    await harness.generate("a fox")
    [(job, _)] = await harness.jobs()
    card = slack.message("C1", str(job.status_ts))
    edit = button(card, "edit")
    click = slack.button_payload(edit, user_id="U2", channel_id="C1", message=card)
    for field, value in (("message", 1.5), ("user", None), ("actions", [{"value": "x"}])):
        assert (await slack.send_action(harness.events_url, {**click, field: value})).status == 400, field
    reaction = slack.event_envelope(slack.reaction_event("repeat", user="U2", channel="C1", ts="1.0"))
    reaction["event"]["item"] = 7
    response = await slack.post_signed(harness.events_url, json.dumps(reaction), content_type=JSON)
    assert response.status == 400


async def test_an_edit_click_without_a_conversation_is_answered(harness: Harness) -> None:
    """Found by the fuzzer: with no channel in the payload the Edit button did nothing at all."""
    await harness.start()
    slack = harness.slack
    await harness.generate("a fox")
    [(job, _)] = await harness.jobs()
    card = slack.message("C1", str(job.status_ts))
    edit = button(card, "edit")
    click = slack.button_payload(edit, user_id="U2", channel_id="C1", message=card)
    click["channel"] = None
    assert (await slack.send_action(harness.events_url, click)).status == 200
    [answer] = await slack.wait_for("response_url")
    assert "Edit works on a result card" in json.dumps(answer.params)
    assert not slack.calls_to("views.open")


async def test_an_edit_form_whose_metadata_is_not_the_bots_is_answered_under_its_input(
    harness: Harness,
) -> None:
    """Found by the fuzzer: private_metadata that is not the bot's JSON failed before the ack."""
    await harness.start()
    view = {"callback_id": EDIT_CALLBACK, "private_metadata": "not json", "blocks": []}
    values = {"prompt": {"value": {"type": "plain_text_input", "value": "a fox"}}}
    for metadata in ("not json", "[1]"):
        payload = harness.slack.view_submission_payload(
            {**view, "private_metadata": metadata}, values, user_id="U2"
        )
        response = await harness.slack.send_action(harness.events_url, payload)
        assert response.status == 200
        assert json.loads(response.text)["response_action"] == "errors"


async def test_slacks_own_checks_still_pass(harness: Harness) -> None:
    """The URL verification of the Events API and the SSL check of slash commands are signed bodies of
    their own shapes (slack.md §1.6; Bolt answers both in its built-in middleware)."""
    await harness.start()
    challenge = json.dumps({"type": "url_verification", "token": "x", "challenge": "c-123"})
    answer = await harness.slack.post_signed(harness.events_url, challenge, content_type=JSON)
    assert (answer.status, json.loads(answer.text)) == (200, {"challenge": "c-123"})
    ssl_check = urlencode({"ssl_check": "1", "token": "x"})
    assert (await harness.slack.post_signed(harness.events_url, ssl_check, content_type=FORM)).status == 200
    assert not await harness.jobs()


@pytest.mark.parametrize("name", ["app_mention", "message", "message_file_share", "reaction_added"])
def test_every_recorded_event_has_slacks_shape(name: str) -> None:
    """The shape check refuses only what Slack never sends: the recorded payloads all pass it."""
    assert shape_problem({**example("event_callback"), "event": example(name)}) is None


@pytest.mark.parametrize("name", ["slash_command", "block_actions", "view_submission"])
def test_every_recorded_request_has_slacks_shape(name: str) -> None:
    assert shape_problem(example(name)) is None
