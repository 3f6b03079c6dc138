"""Where the bot can deliver: channels it is not in (with and without chat:write.public), archived channels,
and Enterprise Grid's file-host redirect."""

from __future__ import annotations

import pytest

from tests.scenarios.harness import Harness, is_card
from tests.scenarios.test_threads import png


async def invite_answer(harness: Harness, channel: str) -> str:
    """Run `/imagine a fox` in `channel` and return the ephemeral answer's text."""
    response = await harness.command("a fox", channel_id=channel)
    assert response.status == 200
    [reply] = await harness.slack.wait_for("response_url")
    assert reply.params["response_type"] == "ephemeral"
    return str(reply.params["text"])


@pytest.mark.parametrize("public_write", [False, True], ids=["manifest-scopes", "with-chat-write-public"])
async def test_a_public_channel_without_the_bot_is_refused_before_anything_is_paid(
    harness: Harness, public_write: bool
) -> None:
    if public_write:
        harness.slack.scopes.add("chat:write.public")
    harness.slack.add_channel("C9", member=False)
    await harness.start()
    assert "/invite" in await invite_answer(harness, "C9")
    assert harness.slack.messages("C9") == []
    assert await harness.jobs() == []
    assert harness.oxen.submissions == []
    posts = harness.slack.calls_to("chat.postMessage")
    if public_write:  # the token could post there: the bot asked first and did not
        assert posts == []
        [probe] = harness.slack.calls_to("conversations.history")
        assert probe.params["channel"] == "C9"
    else:  # the status post is the check, refused by Slack
        assert [call.params["channel"] for call in posts] == ["C9"]
        assert harness.slack.calls_to("conversations.history") == []


async def test_with_chat_write_public_a_member_channel_is_checked_once(harness: Harness) -> None:
    harness.slack.scopes.add("chat:write.public")
    await harness.start()
    await harness.generate("a fox")
    await harness.generate("a hare")
    [probe] = harness.slack.calls_to("conversations.history")
    assert probe.params["channel"] == "C1"
    assert len(harness.oxen.submissions) == 2


async def test_without_chat_write_public_no_membership_check_is_made(harness: Harness) -> None:
    await harness.start()
    await harness.generate("a fox")
    assert harness.slack.calls_to("conversations.history") == []


async def test_an_archived_channel_is_named_as_archived(harness: Harness) -> None:
    harness.slack.add_channel("C5", archived=True)
    await harness.start()
    text = await invite_answer(harness, "C5")
    assert "archived" in text
    assert "/invite" not in text
    assert await harness.jobs() == []
    assert harness.oxen.submissions == []


async def test_a_grid_redirect_to_an_allowed_file_host_is_followed_with_the_token(harness: Harness) -> None:
    await harness.start_at_own_url(slack_file_hosts=f"{harness.slack.file_host},{harness.slack.origin_host}")
    root = await harness.generate("a lighthouse")
    sketch = png("yellow")
    file = harness.slack.add_file(sketch, name="sketch.png")
    harness.slack.redirect_files()
    await harness.send(harness.slack.human_message("C1", "make it dusk", thread_ts=root, files=[file]))
    await harness.slack.wait_for("chat.update", where=is_card, count=2)
    assert sketch in harness.oxen.fetched_references[-1]
    downloads = harness.slack.calls_to("file_download")
    assert [call.params["host"] for call in downloads] == [harness.slack.file_host, harness.slack.origin_host]
    assert {call.params["authorization"] for call in downloads} == {f"Bearer {harness.slack.bot_token}"}


@pytest.mark.parametrize("target", ["origin", "files.example.com"])
async def test_a_redirect_to_another_host_is_refused_by_name(harness: Harness, target: str) -> None:
    await harness.start_at_own_url()
    root = await harness.generate("a lighthouse")
    file = harness.slack.add_file(png("red"), name="moodboard.png")
    harness.slack.redirect_files(target)
    await harness.send(harness.slack.human_message("C1", "use this", thread_ts=root, files=[file]))
    [ephemeral] = await harness.slack.wait_for("chat.postEphemeral")
    host = harness.slack.origin_host if target == "origin" else target
    assert f"Slack sent “moodboard.png” on to {host}" in ephemeral.params["text"]
    assert "files:read" not in ephemeral.params["text"]
    [download] = harness.slack.calls_to("file_download")  # the redirect target never saw a request
    assert download.params["host"] == harness.slack.file_host
    assert len(await harness.jobs()) == 1


async def test_a_redirect_to_the_sign_in_page_still_says_sign_in(harness: Harness) -> None:
    await harness.start_at_own_url()
    root = await harness.generate("a lighthouse")
    file = harness.slack.add_file(png("red"), name="moodboard.png")
    harness.slack.redirect_files("dreamteam.slack.com/?redir=%2Ffiles-pri%2Fx")
    await harness.send(harness.slack.human_message("C1", "use this", thread_ts=root, files=[file]))
    [ephemeral] = await harness.slack.wait_for("chat.postEphemeral")
    assert "sign-in page instead of “moodboard.png”" in ephemeral.params["text"]
    assert len(harness.slack.calls_to("file_download")) == 1
