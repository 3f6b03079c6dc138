"""FakeSlack validates every blocks/view the way Slack answers: chat.*, views.*, response_url, acks."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack import FakeSlack


def section(block_id: str) -> dict[str, object]:
    return {"type": "section", "block_id": block_id, "text": {"type": "mrkdwn", "text": "hi"}}


async def test_a_file_still_processing_makes_chat_calls_invalid_blocks(
    fake_slack: FakeSlack,
) -> None:
    client = AsyncWebClient(token=fake_slack.bot_token, base_url=fake_slack.api_url)
    # Off: this test posts into C1 faster than its per-channel limit to check validation, with a client that
    # does not pace (tests/unit/test_ratelimits.py covers the limits).
    fake_slack.rate_limits.enabled = False
    fake_slack.file_processing_delay = 600.0
    upload = await client.files_upload_v2(file=b"\x89PNG", filename="a.png", channel="C1")
    blocks = [{"type": "image", "slack_file": {"id": upload["file"]["id"]}, "alt_text": "a"}]
    with pytest.raises(SlackApiError) as refused:
        await client.chat_postMessage(channel="C1", text="t", blocks=blocks)
    assert refused.value.response["error"] == "invalid_blocks"
    assert refused.value.response["response_metadata"]["messages"] == [
        "[ERROR] invalid slack file [json-pointer:/blocks/0/slack_file]"
    ]
    posted = await client.chat_postMessage(channel="C1", text="no image")
    with pytest.raises(SlackApiError):
        await client.chat_update(channel="C1", ts=posted["ts"], text="t", blocks=blocks)
    assert fake_slack.message("C1", posted["ts"])["text"] == "no image"
    with pytest.raises(SlackApiError):
        await client.chat_postEphemeral(channel="C1", user="U1", text="t", blocks=blocks)
    assert [r.surface for r in fake_slack.rejections] == [
        "chat.postMessage",
        "chat.update",
        "chat.postEphemeral",
    ]
    fake_slack.rejections.clear()

    fake_slack.file_processing_delay = 0.0  # Slack has processed it now
    assert (await client.chat_postMessage(channel="C1", text="t", blocks=blocks))["ok"]
    unknown = [{"type": "image", "slack_file": {"id": "F0NOSUCHFILE"}, "alt_text": "a"}]
    with pytest.raises(SlackApiError):
        await client.chat_postMessage(channel="C1", text="t", blocks=unknown)
    fake_slack.rejections.clear()


@pytest.mark.parametrize("method", ["views_publish", "views_update"])
async def test_views_repeating_a_block_id_are_invalid_arguments(fake_slack: FakeSlack, method: str) -> None:
    client = AsyncWebClient(token=fake_slack.bot_token, base_url=fake_slack.api_url)
    view = {"type": "home", "blocks": [section("x"), section("x")]}
    target = {"user_id": "U1"} if method == "views_publish" else {"view_id": "V1"}
    with pytest.raises(SlackApiError) as refused:
        await getattr(client, method)(view=view, **target)
    assert refused.value.response["error"] == "invalid_arguments"
    assert refused.value.response["response_metadata"]["messages"] == [
        "[ERROR] duplicate block_id x [json-pointer:/view/blocks/1/block_id]"
    ]
    fake_slack.rejections.clear()
    view = {"type": "home", "blocks": [section("x"), section("y")]}
    assert (await getattr(client, method)(view=view, **target))["ok"]


async def test_the_response_url_refuses_invalid_blocks_with_a_404(fake_slack: FakeSlack) -> None:
    url = fake_slack.new_response_url()
    async with aiohttp.ClientSession() as session:
        bad = {"text": "t", "blocks": [section("x"), section("x")]}
        async with session.post(url, json=bad) as response:
            assert (response.status, await response.json()) == (404, {"ok": False, "error": "invalid_blocks"})
        async with session.post(url, json={"text": "t", "blocks": [section("x")]}) as response:
            assert (response.status, await response.text()) == (200, "ok")
    assert [r.surface for r in fake_slack.rejections] == ["response_url"]
    fake_slack.rejections.clear()


async def test_users_info_reports_the_users_time_zone(fake_slack: FakeSlack) -> None:
    client = AsyncWebClient(token=fake_slack.bot_token, base_url=fake_slack.api_url)
    fake_slack.user_zones["U7"] = "Asia/Tokyo"
    user = (await client.users_info(user="U7"))["user"]
    assert (user["tz"], user["tz_label"], user["tz_offset"]) == ("Asia/Tokyo", "JST", 9 * 3600)
    default = (await client.users_info(user="U1"))["user"]
    offset = datetime.now(ZoneInfo("America/Los_Angeles")).utcoffset()
    assert offset is not None
    assert (default["tz"], default["tz_offset"]) == ("America/Los_Angeles", int(offset.total_seconds()))
