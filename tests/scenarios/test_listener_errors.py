"""A listener that fails after its ack still answers the user, with a reference that is in the log."""

from __future__ import annotations

import logging
import re

import pytest

from tests.fakes.recorder import Call
from tests.scenarios.harness import Harness


def failure_answer(call: Call) -> bool:
    return "could not finish" in str(call.params.get("text"))


def reference_in(text: str) -> str:
    found = re.search(r"reference `([0-9a-f]{8})`", text)
    assert found, text
    return found.group(1)


def logged_failure(caplog: pytest.LogCaptureFixture, reference: str) -> logging.LogRecord:
    [record] = [
        r for r in caplog.records if r.name == "bot.app.listener_errors" and reference in r.getMessage()
    ]
    return record


async def test_a_command_failing_after_its_ack_gets_an_ephemeral_answer_with_a_reference(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    await harness.start()
    harness.slack.fault("chat.postMessage", error="internal_error")
    response = await harness.command("history export")
    assert "direct message" in response.text

    [answer] = await harness.slack.wait_for("response_url", where=failure_answer)
    text = answer.params["text"]
    assert answer.params["response_type"] == "ephemeral"
    assert answer.params["replace_original"] is False
    assert "`/imagine history export`" in text
    assert "Slack refused a request (`internal_error`)" in text
    assert "Traceback" not in text
    assert harness.slack.bot_token not in text
    record = logged_failure(caplog, reference_in(text))
    assert record.levelno == logging.ERROR
    assert "command /imagine from U1 failed after its ack" in record.getMessage()
    assert record.exc_info is not None


async def test_a_stale_button_is_answered_instead_of_failing_silently(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    await harness.start()
    message = {"type": "message", "ts": "1700000000.000100", "text": "an old card"}
    button = {
        "action_id": "dreamboard:renamed_long_ago:0",
        "text": {"type": "plain_text", "text": "Sparkle"},
        "value": "0123456789:0",
    }
    payload = harness.slack.button_payload(button, user_id="U1", channel_id="C1", message=message)
    response = await harness.slack.send_action(harness.events_url, payload)
    assert response.status == 200

    [answer] = await harness.slack.wait_for("response_url", where=failure_answer)
    assert "the *Sparkle* button" in answer.params["text"]
    assert "an internal error (ValueError)" in answer.params["text"]
    assert "renamed_long_ago" not in answer.params["text"]
    logged_failure(caplog, reference_in(answer.params["text"]))


async def test_a_thread_reply_slack_will_not_let_us_read_is_answered_in_the_thread(harness: Harness) -> None:
    await harness.start()
    root = await harness.generate("a red fox")
    harness.slack.fault("conversations.replies", error="internal_error")
    await harness.send(harness.slack.human_message("C1", "now at night", thread_ts=root))

    [answer] = await harness.slack.wait_for(
        "chat.postEphemeral", where=lambda call: "read this thread" in str(call.params.get("text"))
    )
    assert (answer.params["channel"], answer.params["user"], answer.params["thread_ts"]) == ("C1", "U2", root)
    assert "`internal_error`" in answer.params["text"]
    assert "nothing was started" in answer.params["text"]
    assert len(await harness.jobs()) == 1


async def reaction_on_the_card_with_a_failing_dm(harness: Harness) -> None:
    """✉️ on a result card while Slack refuses the DM it asks for (an error no listener handles)."""
    await harness.generate("a red fox")
    [(job, _)] = await harness.jobs()
    assert job.card_ts is not None
    harness.slack.fault("chat.postMessage", error="internal_error")
    await harness.send(harness.slack.reaction_event("envelope", user="U2", channel="C1", ts=job.card_ts))


async def test_a_reaction_failing_after_its_ack_is_answered_in_the_channel(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    await harness.start()
    await reaction_on_the_card_with_a_failing_dm(harness)

    [answer] = await harness.slack.wait_for("chat.postEphemeral", where=failure_answer)
    assert (answer.params["channel"], answer.params["user"]) == ("C1", "U2")
    assert "your :envelope: reaction" in answer.params["text"]
    assert "Slack refused a request (`internal_error`)" in answer.params["text"]
    record = logged_failure(caplog, reference_in(answer.params["text"]))
    assert "event reaction_added from U2 failed after its ack" in record.getMessage()


async def test_when_the_answer_fails_too_it_is_logged_and_nothing_escapes(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    await harness.start()
    harness.slack.fault("chat.postEphemeral", error="channel_not_found")
    await reaction_on_the_card_with_a_failing_dm(harness)
    await harness.slack.wait_for("chat.postEphemeral")
    await harness.stop()  # waits for the listener (and its error handler) to end

    [failure] = [r for r in caplog.records if "failed after its ack" in r.getMessage()]
    reference = reference_in(f"reference `{failure.getMessage().split('(ref ')[1][:8]}`")
    [unanswered] = [r for r in caplog.records if "could not answer the user" in r.getMessage()]
    assert reference in unanswered.getMessage()
    assert "channel_not_found" in unanswered.getMessage()
    assert not [r for r in caplog.records if r.name == "bot.app.tasks" and r.levelno >= logging.ERROR]
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]
