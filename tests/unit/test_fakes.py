"""The fakes behave like the real services where Dreamboard relies on it."""

from __future__ import annotations

import asyncio
import socket
from urllib.parse import urlencode

import aiohttp
import httpx
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.oxen import FakeOxen
from tests.fakes.signing import slack_signature
from tests.fakes.slack import FakeSlack


def test_signatures_verify_with_slack_sdk() -> None:
    verifier = SignatureVerifier("secret")
    body = urlencode({"command": "/imagine", "text": "fox"})
    timestamp = str(int(verifier.clock.now()))
    assert verifier.is_valid(body, timestamp, slack_signature("secret", timestamp, body))
    assert not verifier.is_valid(body, timestamp, slack_signature("other", timestamp, body))


async def test_slack_sdk_upload_v2_works_against_the_fake(fake_slack: FakeSlack) -> None:
    client = AsyncWebClient(token=fake_slack.bot_token, base_url=fake_slack.api_url)
    posted = await client.chat_postMessage(channel="C1", text="root")
    response = await client.files_upload_v2(
        file_uploads=[
            {"file": b"\x89PNG one", "filename": "a.png"},
            {"file": b"\x89PNG two", "filename": "b.png"},
        ],
        channel="C1",
        thread_ts=posted["ts"],
        initial_comment="two files",
    )
    file_ids = [entry["id"] for entry in response["files"]]
    info = await client.files_info(file=file_ids[0])
    assert info["file"]["shares"]["public"]["C1"][0]["thread_ts"] == posted["ts"]
    assert [fake_slack.uploaded_files[i].content for i in file_ids] == [b"\x89PNG one", b"\x89PNG two"]


async def test_web_api_requires_the_bot_token(fake_slack: FakeSlack) -> None:
    client = AsyncWebClient(token="xoxb-wrong", base_url=fake_slack.api_url)
    with pytest.raises(SlackApiError) as refused:
        await client.auth_test()
    assert refused.value.response["error"] == "invalid_auth"


async def test_private_files_need_the_token_and_answer_html_otherwise(fake_slack: FakeSlack) -> None:
    file = fake_slack.add_file(b"\x89PNG bytes")
    async with aiohttp.ClientSession() as session:
        async with session.get(file["url_private_download"]) as anonymous:
            assert anonymous.content_type == "text/html"
        headers = {"Authorization": f"Bearer {fake_slack.bot_token}"}
        async with session.get(file["url_private_download"], headers=headers) as authorised:
            assert await authorised.read() == b"\x89PNG bytes"
        fake_slack.serve_html_instead(file["id"])
        async with session.get(file["url_private_download"], headers=headers) as blocked:
            assert blocked.content_type == "text/html"
    assert [call.params["authorization"] for call in fake_slack.calls_to("file_download")] == [
        None,
        headers["Authorization"],
        headers["Authorization"],
    ]


async def test_slack_faults_answer_like_slack(fake_slack: FakeSlack) -> None:
    fake_slack.fault("chat.postMessage", status=429, retry_after=3)
    fake_slack.set_channel_error("C9", "not_in_channel")
    headers = {"Authorization": f"Bearer {fake_slack.bot_token}"}
    async with httpx.AsyncClient() as http:
        limited = await http.post(
            fake_slack.api_url + "chat.postMessage", data={"channel": "C1", "text": "x"}, headers=headers
        )
        refused = await http.post(
            fake_slack.api_url + "chat.postMessage", data={"channel": "C9", "text": "x"}, headers=headers
        )
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "3")
    assert refused.json() == {"ok": False, "error": "not_in_channel"}


async def test_oxen_queue_lifecycle_and_strict_schema(fake_oxen: FakeOxen) -> None:
    headers = {"Authorization": f"Bearer {fake_oxen.api_key}"}
    fake_oxen.hold()
    async with httpx.AsyncClient(base_url=fake_oxen.url, headers=headers) as http:
        good = (
            await http.post("/ai/queue", json={"model": "bytedance-seedream-4-5", "prompt": "fox"})
        ).json()
        stale = (
            await http.post("/ai/queue", json={"model": "bytedance-seedream-4-5", "prompt": "x", "seed": 1})
        ).json()
        [good_id, stale_id] = [
            good["generations"][0]["generation_id"],
            stale["generations"][0]["generation_id"],
        ]
        assert (await http.get(f"/ai/queue/{good_id}")).json()["status"] == "processing"
        fake_oxen.release()
        row = (await http.get(f"/ai/queue/{good_id}")).json()
        assert (row["status"], row["model_name"]) == ("succeeded", "bytedance-seedream-4-5")
        image = await http.get(row["result_url"])
        assert image.content.startswith(b"\x89PNG")
        failed = (await http.get(f"/ai/queue/{stale_id}")).json()
        assert failed["status"] == "failed"
        assert "Extra inputs are not permitted: seed" in failed["error_message"]
        missing = await http.get("/ai/queue/nope")
        assert missing.json()["error"]["type"] == "resource_not_found"
        unknown = await http.post("/ai/queue", json={"model": "nope", "prompt": "x"})
        assert (unknown.status_code, unknown.json()) == (404, {"error": {"message": "Model not found: nope"}})
        too_many = await http.post(
            "/ai/queue", json={"model": "bytedance-seedream-4-5", "prompt": "x", "num_generations": 5}
        )
        assert "between 1 and 4" in too_many.json()["error"]["detail"]
    async with httpx.AsyncClient(base_url=fake_oxen.url) as anonymous:
        assert (await anonymous.get("/ai/models/bytedance-seedream-4-5")).status_code == 401


async def test_oxen_schema_fixtures(fake_oxen: FakeOxen) -> None:
    headers = {"Authorization": f"Bearer {fake_oxen.api_key}"}
    async with httpx.AsyncClient(base_url=fake_oxen.url, headers=headers) as http:
        current = (await http.get("/ai/models/bytedance-seedream-4-5")).json()["request_schema"]["properties"]
        fake_oxen.schema = "april"
        april = (await http.get("/ai/models/bytedance-seedream-4-5")).json()["request_schema"]["properties"]
    assert "seed" not in current
    assert "aspect_ratio" not in current
    assert current["input_image"]["maxItems"] == 14
    assert april["seed"] == {
        "type": "integer",
        "x-order": 4,
        "description": "Random seed. Set for reproducible generation",
    }
    assert april["size"]["default"] == "4K"


async def test_tests_cannot_reach_the_network() -> None:
    with socket.socket() as sock, pytest.raises(OSError, match="must not use the network"):
        sock.connect(("10.255.255.1", 9))
    with pytest.raises(OSError, match="must not use the network"):
        await asyncio.open_connection("192.0.2.1", 80)
