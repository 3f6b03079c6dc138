"""One redaction for everything that leaves the process: every configured secret, planted in upstream
error texts and in a prompt, reaches neither Slack (Web API calls, ack bodies, response_url posts,
uploaded files) nor the log."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from bot.app.logs import JobFilter, RedactingJsonFormatter
from bot.domain.secrets import Redactor
from tests.fakes.recorder import Call
from tests.scenarios.harness import Harness

APP_TOKEN = "xapp-1-A0SECRET-1234567890-abcdef"
"""Socket Mode's token cannot be configured in an HTTP-mode run; its shape is redacted all the same."""


def is_failure_reply(call: Call) -> bool:
    return " failed: " in str(call.params.get("text"))


@pytest.fixture
def log_output(harness: Harness) -> Iterator[io.StringIO]:
    """What the process writes to its log, formatted as configure_logging does."""
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    handler.setFormatter(RedactingJsonFormatter(harness.settings().secret_values))
    handler.addFilter(JobFilter())
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield output
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


def everything_slack_received(harness: Harness, acks: list[str]) -> str:
    calls = [{"method": call.method, "params": call.params} for call in harness.slack.calls]
    uploads = [
        {"name": file.filename, "title": file.title, "content": file.content.decode("utf-8", "replace")}
        for file in harness.slack.uploaded_files.values()
    ]
    return json.dumps([calls, uploads, acks], ensure_ascii=False, default=str)


async def test_no_configured_secret_leaves_the_process(harness: Harness, log_output: io.StringIO) -> None:
    settings = harness.settings()
    secrets = [*settings.secret_values, APP_TOKEN]
    assert len(secrets) == 4
    everything = " ".join(f"<{secret}>" for secret in secrets)
    await harness.start()

    # An upstream (Oxen) failure whose error text quotes every secret, for a prompt that contains one.
    harness.oxen.fail_generations(f"upstream rejected the request: {everything}")
    acks = [
        (
            await harness.command(f"a fox holding a sign saying {settings.oxen_api_key.get_secret_value()}")
        ).text
    ]
    await harness.slack.wait_for("chat.postMessage", where=is_failure_reply, timeout=10)

    # A Slack error string carrying the secrets, told to the user through the response_url.
    harness.slack.fault("chat.postMessage", error=f"invalid_auth {everything}")
    acks.append((await harness.command("a heron")).text)
    await harness.slack.wait_for("response_url")

    # A bad flag value echoed in the ack body.
    acks.append((await harness.command(f"a cat --ar {everything}")).text)

    # The history export (prompts, as CSV) uploaded as a file.
    acks.append((await harness.command("history export")).text)
    await harness.slack.wait_for("files.completeUploadExternal")

    sent = everything_slack_received(harness, acks)
    logged = log_output.getvalue()
    assert "rejected the request" in logged
    assert "[redacted]" in sent
    assert "rejected the request" in sent
    assert "Preparing your CSV" in sent
    for secret in secrets:
        assert secret not in sent
        assert secret not in logged


def test_every_configured_secret_is_redacted_in_nested_payloads(harness: Harness) -> None:
    settings = harness.settings(slack_app_token=APP_TOKEN)
    assert APP_TOKEN in settings.secret_values
    redactor = Redactor(settings.secret_values)
    payload = {
        "text": " ".join(settings.secret_values),
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": settings.secret_values[-1]}}],
        "files": ({"title": settings.secret_values[0]},),
        "n": 4,
    }
    redacted = json.dumps(redactor.redact_payload(payload))
    assert all(secret not in redacted for secret in settings.secret_values)
    assert redactor.redact_payload(payload)["n"] == 4
