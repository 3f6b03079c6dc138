"""Every user-supplied value echoed in a message is escaped: a table of user-controlled fields × the
messages that echo them, each fed Slack's special syntax, and everything Slack received is searched for
live mentions or links made from it. (tests/fakes/slack.py also fails any test that sends a live
`<!channel>`, `<!here>` or `<!everyone>`.)"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.fakes.recorder import Call
from tests.scenarios.harness import Harness, is_card

HOSTILE = ["<!channel>", "<!here|here>", "<@UEVIL123>", "<https://evil.example|x>", "&amp;"]
LIVE = ("<!channel", "<!here", "<!everyone", "<@UEVIL123", "<https://evil.example", "<http://evil")
"""What must never reach Slack: the live form of the values above (the bot's own mentions name U1/U2)."""


def slack_bound(harness: Harness, acks: list[str]) -> str:
    """Everything the bot sent Slack: Web API calls, response_url posts and ack bodies."""
    calls = [{"method": call.method, "params": call.params} for call in harness.slack.calls]
    return json.dumps([calls, acks], ensure_ascii=False, default=str)


def is_failure_reply(call: Call) -> bool:
    return " failed: " in str(call.params.get("text")) and not is_card(call)


async def flag_in_command(harness: Harness, value: str, flag: str) -> list[str]:
    return [(await harness.command(f"a cat --{flag} {value}")).text]


async def prompt_through_a_whole_job(harness: Harness, value: str) -> list[str]:
    """Status message, result card, upload comment and alt text, then the history page."""
    await harness.generate(f"a poster reading {value} in red")
    response = await harness.command("history")
    await harness.slack.wait_for("response_url")
    return [response.text]


async def history_search(harness: Harness, value: str) -> list[str]:
    response = await harness.command(f"history 5 {value}")
    await harness.slack.wait_for("response_url")
    return [response.text]


async def upstream_error_for_the_prompt(harness: Harness, value: str) -> list[str]:
    """Oxen's error text (quoting the prompt, as providers do) in the failure reply and status."""
    harness.oxen.fail_generations(f"prompt rejected: {value}")
    response = await harness.command(f"a sign reading {value}")
    await harness.slack.wait_for("chat.postMessage", where=is_failure_reply, timeout=10)
    return [response.text]


async def flag_in_a_thread_reply(harness: Harness, value: str) -> list[str]:
    root = await harness.generate("a lighthouse")
    await harness.send(harness.slack.human_message("C1", f"now at night --ar {value}", thread_ts=root))
    await harness.slack.wait_for("chat.postEphemeral")
    return []


async def attachment_name_in_a_thread_reply(harness: Harness, value: str) -> list[str]:
    root = await harness.generate("a lighthouse")
    file = harness.slack.add_file(b"%PDF-1.7", name="brief.pdf", mimetype="application/pdf")
    file["name"] = f"{value}.pdf"
    await harness.send(harness.slack.human_message("C1", "use this", thread_ts=root, files=[file]))
    await harness.slack.wait_for("chat.postEphemeral")
    return []


Flow = Callable[[Harness, str], Awaitable[list[str]]]
FLOWS: dict[str, Flow] = {
    "--ar in the ack": lambda harness, value: flag_in_command(harness, value, "ar"),
    "--size in the ack": lambda harness, value: flag_in_command(harness, value, "size"),
    "--seed in the ack": lambda harness, value: flag_in_command(harness, value, "seed"),
    "--n in the ack": lambda harness, value: flag_in_command(harness, value, "n"),
    "--model in the ack": lambda harness, value: flag_in_command(harness, value, "model"),
    "prompt in status, card, upload and history": prompt_through_a_whole_job,
    "history search text": history_search,
    "upstream error quoting the prompt": upstream_error_for_the_prompt,
    "--ar in a thread reply's ephemeral": flag_in_a_thread_reply,
    "attachment name in the refusal": attachment_name_in_a_thread_reply,
}


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("flow", list(FLOWS))
async def test_user_values_are_never_live_syntax_in_what_slack_receives(
    harness: Harness, flow: str, value: str
) -> None:
    await harness.start()
    acks: list[Any] = await FLOWS[flow](harness, value)
    sent = slack_bound(harness, acks)
    found = [live for live in LIVE if live in sent]
    assert found == [], f"{flow}: live syntax from user input reached Slack: {found}"
    assert harness.slack.broadcasts == []
