"""FakeSlack's channel registry, scopes, trigger ids, ack deadline and file redirect answer like Slack."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.errors import SlackError, SlackErrorKind
from bot.slack.membership import MEMBERSHIP_TTL, ChannelAccess
from tests.fakes.manifest import bot_scopes
from tests.fakes.slack import ACK_DEADLINE, TRIGGER_LIFETIME, FakeSlack, NotDeliveredError


@pytest.fixture
async def api(fake_slack: FakeSlack) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the fake's Web API with the bot token."""
    headers = {"Authorization": f"Bearer {fake_slack.bot_token}"}
    async with httpx.AsyncClient(base_url=fake_slack.api_url, headers=headers) as http:
        yield http


async def call(api: httpx.AsyncClient, method: str, **params: Any) -> dict[str, Any]:
    answer: dict[str, Any] = (await api.post(method, data=params)).json()
    return answer


async def share(api: httpx.AsyncClient, channel: str) -> dict[str, Any]:
    reserved = await call(api, "files.getUploadURLExternal", filename="a.png", length=3)
    async with httpx.AsyncClient() as raw:
        await raw.post(reserved["upload_url"], content=b"png")
    files = json.dumps([{"id": reserved["file_id"]}])
    return await call(api, "files.completeUploadExternal", files=files, channel_id=channel)


def test_the_default_scopes_are_the_manifests() -> None:
    scopes = bot_scopes()
    assert {"chat:write", "files:write", "channels:history"} <= scopes
    assert "chat:write.public" not in scopes
    assert "reactions:write" not in scopes


async def test_every_answer_names_the_tokens_scopes(fake_slack: FakeSlack, api: httpx.AsyncClient) -> None:
    answer = await api.post("auth.test")
    assert set(answer.headers["X-OAuth-Scopes"].split(", ")) == set(fake_slack.scopes)
    refused = await api.post("reactions.add", data={"channel": "C1", "timestamp": "1.0", "name": "x"})
    assert refused.json() == {
        "ok": False,
        "error": "missing_scope",
        "needed": "reactions:write",
        "provided": ",".join(sorted(fake_slack.scopes)),
    }
    assert "X-OAuth-Scopes" in refused.headers


async def test_a_public_channel_without_the_bot(fake_slack: FakeSlack, api: httpx.AsyncClient) -> None:
    fake_slack.add_channel("C9", member=False)
    assert (await call(api, "chat.postMessage", channel="C9", text="x"))["error"] == "not_in_channel"
    assert (await call(api, "conversations.history", channel="C9"))["error"] == "not_in_channel"
    fake_slack.scopes.add("chat:write.public")
    assert (await call(api, "chat.postMessage", channel="C9", text="x"))["ok"] is True
    # chat:write.public is for chat.postMessage only: files, ephemeral messages and reads need membership.
    assert (await share(api, "C9"))["error"] == "not_in_channel"
    ephemeral = await call(api, "chat.postEphemeral", channel="C9", user="U1", text="x")
    assert ephemeral["error"] == "not_in_channel"
    assert (await call(api, "conversations.history", channel="C9"))["error"] == "not_in_channel"
    with pytest.raises(NotDeliveredError):
        await fake_slack.send_event("http://127.0.0.1:9/", fake_slack.human_message("C9", "hi"))
    reaction = fake_slack.reaction_event("repeat", user="U1", channel="C9", ts="1.0")
    with pytest.raises(NotDeliveredError):
        await fake_slack.send_event("http://127.0.0.1:9/", reaction)


async def test_private_unknown_and_archived_channels(fake_slack: FakeSlack, api: httpx.AsyncClient) -> None:
    fake_slack.scopes.add("chat:write.public")
    fake_slack.add_channel("G1", private=True, member=False)
    fake_slack.remove_channel("C404")
    for channel in ("G1", "C404"):
        assert (await call(api, "chat.postMessage", channel=channel, text="x"))[
            "error"
        ] == "channel_not_found"
        assert (await call(api, "conversations.info", channel=channel))["error"] == "missing_scope"
    fake_slack.add_channel("C5", archived=True)
    posted = await call(api, "chat.postMessage", channel="C5", text="x")
    assert posted["error"] == "is_archived"
    assert (await share(api, "C5"))["error"] == "is_archived"
    assert (await call(api, "chat.postEphemeral", channel="C5", user="U1", text="x"))[
        "error"
    ] == "is_archived"
    assert (await call(api, "chat.update", channel="C5", ts="1.0", text="x"))["error"] == "is_inactive"
    assert (await call(api, "conversations.history", channel="C5"))["ok"] is True
    fake_slack.scopes.add("channels:read")
    info = await call(api, "conversations.info", channel="C5")
    assert (info["channel"]["is_archived"], info["channel"]["is_member"]) == (True, True)


async def test_set_channel_error_names_registry_states(fake_slack: FakeSlack, api: httpx.AsyncClient) -> None:
    for channel, error in [("C7", "not_in_channel"), ("C8", "channel_not_found"), ("C9", "is_archived")]:
        fake_slack.set_channel_error(channel, error)
        assert (await call(api, "chat.postMessage", channel=channel, text="x"))["error"] == error
    with pytest.raises(ValueError, match="fault"):
        fake_slack.set_channel_error("C1", "ratelimited")


async def test_trigger_ids_expire_and_are_used_once(fake_slack: FakeSlack, api: httpx.AsyncClient) -> None:
    section = {"type": "section", "text": {"type": "mrkdwn", "text": "x"}}
    view = json.dumps({"type": "modal", "title": {"type": "plain_text", "text": "x"}, "blocks": [section]})
    trigger = fake_slack.command_payload("x")["trigger_id"]
    assert (await call(api, "views.open", trigger_id=trigger, view=view))["ok"] is True
    again = await call(api, "views.open", trigger_id=trigger, view=view)
    assert again["error"] == "exchanged_trigger_id"
    late = fake_slack.command_payload("x")["trigger_id"]
    fake_slack.age_trigger(late, TRIGGER_LIFETIME + 0.1)
    assert (await call(api, "views.open", trigger_id=late, view=view))["error"] == "expired_trigger_id"
    unknown = await call(api, "views.open", trigger_id="1.made-up", view=view)
    assert unknown["error"] == "invalid_arguments"


async def test_a_late_answer_is_recorded_against_the_deadline(fake_slack: FakeSlack) -> None:
    now = [100.0]
    fake_slack.clock = lambda: now[0]

    async def slow_bot(_: web.Request) -> web.Response:
        now[0] += ACK_DEADLINE + 0.01
        return web.Response(status=404)

    app = web.Application()
    app.router.add_post("/slack/events", slow_bot)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
    try:
        await fake_slack.send_command(url, "a fox")
        await fake_slack.send_event(url, fake_slack.human_message("C1", "hi"))
    finally:
        await runner.cleanup()
    [late] = fake_slack.late_acks()
    assert (late.kind, late.status) == ("command", 404)
    assert [request.kind for request in fake_slack.signed] == ["command", "event"]


async def test_grid_file_hosts_redirect_and_want_the_token(fake_slack: FakeSlack) -> None:
    file = fake_slack.add_file(b"\x89PNG bytes")
    fake_slack.redirect_files()
    headers = {"Authorization": f"Bearer {fake_slack.bot_token}"}
    async with aiohttp.ClientSession() as session:
        async with session.get(file["url_private"], headers=headers, allow_redirects=False) as first:
            assert first.status == 302
            location = first.headers["Location"]
        assert location.startswith(f"http://{fake_slack.origin_host}:")
        async with session.get(location) as anonymous:
            assert anonymous.content_type == "text/html"
        async with session.get(location, headers=headers) as second:
            assert await second.read() == b"\x89PNG bytes"
    assert [call.params["host"] for call in fake_slack.calls_to("file_download")] == [
        "127.0.0.1",
        fake_slack.origin_host,
        fake_slack.origin_host,
    ]


async def test_channel_access_checks_only_a_token_that_can_post_anywhere(fake_slack: FakeSlack) -> None:
    now = [0.0]
    async with aiohttp.ClientSession() as http:
        client = AsyncWebClient(token=fake_slack.bot_token, base_url=fake_slack.api_url, session=http)
        fake_slack.add_channel("C9", member=False)
        await ChannelAccess(client).check("C9")  # without chat:write.public the status post is the check
        assert fake_slack.calls_to("conversations.history") == []
        fake_slack.scopes.add("chat:write.public")
        access = ChannelAccess(client, clock=lambda: now[0])
        with pytest.raises(SlackError) as refused:
            await access.check("C9")
        assert refused.value.kind is SlackErrorKind.NOT_IN_CHANNEL
        await access.check("C1")
        await access.check("C1")
        assert (
            len(
                fake_slack.calls_to(
                    "conversations.history",
                )
            )
            == 2
        )
        assert len(fake_slack.calls_to("auth.test")) == 2
        now[0] += MEMBERSHIP_TTL
        await access.check("C1")
        assert len(fake_slack.calls_to("conversations.history")) == 3
