"""The fakes behave like the real services where Dreamboard relies on it."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from typing import Any
from urllib.parse import urlencode

import aiohttp
import httpx
import pytest
from aiohttp import web
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.images import render_png
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
    assert [fake_slack.uploaded_files[i].content for i in file_ids] == [b"\x89PNG one", b"\x89PNG two"]


async def test_a_share_happens_after_complete_upload_answers(fake_slack: FakeSlack) -> None:
    fake_slack.share_delay = 0.2
    client = AsyncWebClient(token=fake_slack.bot_token, base_url=fake_slack.api_url)
    posted = await client.chat_postMessage(channel="C1", text="root")
    response = await client.files_upload_v2(
        file=b"\x89PNG one", filename="a.png", channel="C1", thread_ts=posted["ts"], initial_comment="hi"
    )
    [answered] = response["files"]
    assert (answered["shares"], answered["mimetype"], "ts" in response) == ({}, "", False)
    before = (await client.files_info(file=answered["id"]))["file"]
    assert (before["shares"], before["mimetype"]) == ({}, "")
    assert [m["text"] for m in fake_slack.messages("C1")] == ["root"]

    await fake_slack.wait_shared()
    after = (await client.files_info(file=answered["id"]))["file"]
    [upload] = [m for m in fake_slack.messages("C1") if m.get("files")]
    assert after["shares"]["public"]["C1"] == [{"ts": upload["ts"], "thread_ts": posted["ts"]}]
    assert (after["mimetype"], upload["text"], upload["thread_ts"]) == ("image/png", "hi", posted["ts"])
    # Nobody to deliver to (no events URL, no socket): the event is dropped, and says so.
    [delivery] = fake_slack.delivered_events
    assert (delivery["via"], delivery["event"]["files"][0]["id"]) == (None, answered["id"])


@pytest.mark.parametrize("files", ["full", "stub"])
async def test_the_bots_own_file_share_event_is_delivered_signed(fake_slack: FakeSlack, files: str) -> None:
    received: list[tuple[dict[str, str], str]] = []

    async def events(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.text()))
        return web.Response()

    app = web.Application()
    app.router.add_post("/slack/events", events)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        fake_slack.events_url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
        fake_slack.share_delay, fake_slack.event_files = 0.05, files  # type: ignore[assignment]
        client = AsyncWebClient(token=fake_slack.bot_token, base_url=fake_slack.api_url)
        response = await client.files_upload_v2(file=b"\x89PNG", filename="a.png", channel="C1")
        await fake_slack.wait_shared()
    finally:
        await runner.cleanup()
    [(headers, raw)] = received
    assert SignatureVerifier(fake_slack.signing_secret).is_valid(
        raw, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
    )
    event = json.loads(raw)["event"]
    [upload] = [m for m in fake_slack.messages("C1") if m.get("files")]
    assert (event["type"], event["subtype"], event["user"], event["ts"]) == (
        "message",
        "file_share",
        fake_slack.bot_user_id,
        upload["ts"],
    )
    [file] = event["files"]
    assert file["id"] == response["files"][0]["id"]
    if files == "stub":
        assert (file["file_access"], "url_private" in file) == ("check_file_info", False)
    else:
        assert file["mimetype"] == "image/png"
        assert file["url_private"]
    assert fake_slack.delivered_events[0]["status"] == 200


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


# -- FakeOxen: the queue list, "processed, answer lost" faults, result controls ----------------------------

SEEDREAM = "bytedance-seedream-4-5"


def _oxen_client(oxen: FakeOxen, **kwargs: Any) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {oxen.api_key}"}
    return httpx.AsyncClient(base_url=oxen.url, headers=headers, **kwargs)


async def _enqueue(http: httpx.AsyncClient, **params: Any) -> list[str]:
    response = await http.post("/ai/queue", json={"model": SEEDREAM, **params})
    assert response.status_code == 200, response.text
    return [g["generation_id"] for g in response.json()["generations"]]


async def test_oxen_queue_list_shows_active_rows_by_default_and_filters(fake_oxen: FakeOxen) -> None:
    fake_oxen.add_model("other-model", {"type": "object", "properties": {"prompt": {"type": "string"}}})
    fake_oxen.hold()
    async with _oxen_client(fake_oxen) as http:
        reference = "data:image/png;base64," + base64.b64encode(render_png("ref", 1, 16, 16)).decode()
        [first] = await _enqueue(http, prompt="one", size="4K", input_image=[reference])
        [cancelled] = await _enqueue(http, prompt="two")
        other = (await http.post("/ai/queue", json={"model": "other-model", "prompt": "three"})).json()
        [third] = [g["generation_id"] for g in other["generations"]]
        assert (await http.delete(f"/ai/queue/{cancelled}")).status_code == 200

        active = (await http.get("/ai/queue")).json()
        assert active["count"] == 2
        assert [row["generation_id"] for row in active["generations"]] == [first, third]
        row = active["generations"][0]
        assert (row["model_name"], row["prompt"], row["size"], row["status"]) == (
            SEEDREAM,
            "one",
            "4K",
            "queued",
        )
        assert row["input_image"] == [reference]
        assert fake_oxen.generations[first].status == "queued", "listing must not advance a generation"

        listed = (await http.get("/ai/queue", params={"status": "cancelled"})).json()
        assert listed["generations"] == [(await http.get(f"/ai/queue/{cancelled}")).json()]
        by_model = (await http.get("/ai/queue", params={"model": "other-model"})).json()
        assert [row["generation_id"] for row in by_model["generations"]] == [third]
        assert (await http.get("/ai/queue", params={"media_type": "video"})).json() == {
            "count": 0,
            "generations": [],
        }
        assert (await http.get("/ai/queue", params={"namespace": "someone-else"})).json()["count"] == 0
        fake_oxen.list_order = "newest_first"
        newest = (await http.get("/ai/queue")).json()
        assert [row["generation_id"] for row in newest["generations"]] == [third, first]

        for bad in ({"status": "done"}, {"status": "queued,processing"}, {"limit": "10"}, {"repo": "r"}):
            refused = await http.get("/ai/queue", params=bad)
            assert (refused.status_code, refused.json()["error"]["type"]) == (400, "invalid_params")

        fake_oxen.release()
        for generation_id in (first, third):
            assert (await http.get(f"/ai/queue/{generation_id}")).json()["status"] == "succeeded"
        done = (await http.get("/ai/queue", params={"status": "succeeded"})).json()
        assert [row["generation_id"] for row in done["generations"]] == [third, first]
        assert done["generations"][1]["result_url"].split("?")[0].endswith(f"/results/{first}.png")
        assert (await http.get("/ai/queue")).json() == {"count": 0, "generations": []}
    async with httpx.AsyncClient(base_url=fake_oxen.url) as anonymous:
        assert (await anonymous.get("/ai/queue")).status_code == 401
    calls = fake_oxen.recorder.calls_to("GET /ai/queue")
    assert calls[1].params == {"status": "cancelled"}


async def test_oxen_records_how_many_generations_were_in_flight_at_once(fake_oxen: FakeOxen) -> None:
    fake_oxen.hold()
    fake_oxen.fail_generations("content policy", times=1)
    async with _oxen_client(fake_oxen) as http:
        [failing] = await _enqueue(http, prompt="U1 one")
        [cancelled] = await _enqueue(http, prompt="U1 two")
        [other] = await _enqueue(http, prompt="U2 three")
        assert (await http.delete(f"/ai/queue/{cancelled}")).status_code == 200
        [fourth] = await _enqueue(http, prompt="U1 four")
        fake_oxen.release()
        rows = [(await http.get(f"/ai/queue/{g}")).json() for g in (failing, other, fourth)]
        fake_oxen.hold()
        await _enqueue(http, prompt="U1 five", num_generations=2)
    assert [row["status"] for row in rows] == ["failed", "succeeded", "succeeded"]
    peaks = (fake_oxen.peak_in_flight("U1 "), fake_oxen.peak_in_flight("U2 "), fake_oxen.peak_in_flight())
    assert peaks == (2, 1, 3), "a cancelled, failed or succeeded generation is no longer in flight"


async def test_oxen_list_faults_use_their_own_route_key(fake_oxen: FakeOxen) -> None:
    fake_oxen.fault("GET /ai/queue list", status=503)
    async with _oxen_client(fake_oxen) as http:
        [generation_id] = await _enqueue(http, prompt="fox")
        assert (await http.get(f"/ai/queue/{generation_id}")).status_code == 200
        unavailable = await http.get("/ai/queue")
        assert (await http.get("/ai/queue")).status_code == 200
    assert unavailable.status_code == 503
    assert unavailable.headers["content-type"].startswith("text/html")


async def test_oxen_plain_server_error_answers_instead_and_creates_nothing(fake_oxen: FakeOxen) -> None:
    fake_oxen.fault("POST /ai/queue", status=500)
    async with _oxen_client(fake_oxen) as http:
        refused = await http.post("/ai/queue", json={"model": SEEDREAM, "prompt": "fox"})
        listed = (await http.get("/ai/queue")).json()
    assert refused.status_code == 500
    assert refused.json() == {
        "error": {"type": "unknown_error", "title": "Internal server error"},
        "status": "error",
        "status_message": "unknown_error",
    }
    assert (listed["count"], fake_oxen.generations, fake_oxen.billed) == (0, {}, [])


async def test_oxen_server_error_after_processing_still_runs_and_bills(fake_oxen: FakeOxen) -> None:
    fake_oxen.hold()
    fake_oxen.fault("POST /ai/queue", status=500, after=True)
    async with _oxen_client(fake_oxen) as http:
        lost = await http.post("/ai/queue", json={"model": SEEDREAM, "prompt": "fox", "num_generations": 2})
        assert (lost.status_code, lost.json()["error"]["title"]) == (500, "Internal server error")
        listed = (await http.get("/ai/queue")).json()
        assert [row["prompt"] for row in listed["generations"]] == ["fox", "fox"]
        fake_oxen.release()
        ids = [row["generation_id"] for row in listed["generations"]]
        rows = [(await http.get(f"/ai/queue/{gid}")).json() for gid in ids]
    assert [row["status"] for row in rows] == ["succeeded", "succeeded"]
    assert sorted(fake_oxen.billed) == sorted(ids)


async def test_oxen_dropped_connection_is_a_transport_error_before_or_after_processing(
    fake_oxen: FakeOxen,
) -> None:
    fake_oxen.fault("POST /ai/queue", drop=True)
    fake_oxen.fault("POST /ai/queue", drop=True, after=True)
    async with _oxen_client(fake_oxen) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post("/ai/queue", json={"model": SEEDREAM, "prompt": "never enqueued"})
        assert fake_oxen.generations == {}
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post("/ai/queue", json={"model": SEEDREAM, "prompt": "enqueued"})
        listed = (await http.get("/ai/queue", params={"status": "succeeded"})).json()["generations"]
        active = (await http.get("/ai/queue")).json()["generations"]
    assert [row["prompt"] for row in listed + active] == ["enqueued"]
    assert len(fake_oxen.recorder.calls_to("POST /ai/queue")) == 2


async def test_oxen_slow_answer_after_processing_times_the_client_out_with_the_work_done(
    fake_oxen: FakeOxen,
) -> None:
    fake_oxen.fault("POST /ai/queue", delay=30.0)
    fake_oxen.fault("POST /ai/queue", delay=30.0, after=True)
    async with _oxen_client(fake_oxen, timeout=0.3) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post("/ai/queue", json={"model": SEEDREAM, "prompt": "slow before"})
        assert fake_oxen.generations == {}
        with pytest.raises(httpx.ReadTimeout):
            await http.post("/ai/queue", json={"model": SEEDREAM, "prompt": "slow after"})
    assert [g.params["prompt"] for g in fake_oxen.generations.values()] == ["slow after"]


async def test_oxen_sync_generation_is_billed_even_when_its_answer_is_lost(fake_oxen: FakeOxen) -> None:
    fake_oxen.fault("POST /ai/images/generate", status=503)
    fake_oxen.fault("POST /ai/images/generate", status=502, after=True)
    async with _oxen_client(fake_oxen) as http:
        refused = await http.post("/ai/images/generate", json={"model": SEEDREAM, "prompt": "fox"})
        assert (refused.status_code, fake_oxen.billed) == (503, [])
        lost = await http.post("/ai/images/generate", json={"model": SEEDREAM, "prompt": "fox"})
    assert (lost.status_code, lost.headers["content-type"].split(";")[0]) == (502, "text/html")
    assert "Bad Gateway" in lost.text
    assert len(fake_oxen.billed) == 1


async def test_oxen_can_succeed_without_a_result_url(fake_oxen: FakeOxen) -> None:
    fake_oxen.succeed_without_result()
    async with _oxen_client(fake_oxen) as http:
        [empty] = await _enqueue(http, prompt="nothing to show")
        [normal] = await _enqueue(http, prompt="fox")
        rows = [(await http.get(f"/ai/queue/{gid}")).json() for gid in (empty, normal)]
    assert [(row["status"], row["result_url"] is None) for row in rows] == [
        ("succeeded", True),
        ("succeeded", False),
    ]


async def test_oxen_result_url_can_serve_html_or_octet_stream(fake_oxen: FakeOxen) -> None:
    async with _oxen_client(fake_oxen) as http:
        [generation_id] = await _enqueue(http, prompt="fox")
        row = (await http.get(f"/ai/queue/{generation_id}")).json()
        fake_oxen.serve_result_as("text/html", times=1)
        fake_oxen.serve_result_as("application/octet-stream", times=1)
        page, octets, image = [await http.get(row["result_url"]) for _ in range(3)]
    assert (page.status_code, page.headers["content-type"]) == (200, "text/html")
    assert b"<html" in page.content
    assert octets.headers["content-type"] == "application/octet-stream"
    assert octets.content == image.content
    assert image.content.startswith(b"\x89PNG")
    assert image.headers["content-type"] == "image/png"


def test_oxen_refuses_faults_the_service_cannot_produce(fake_oxen: FakeOxen) -> None:
    with pytest.raises(ValueError, match="429"):
        fake_oxen.fault("POST /ai/queue", status=429, after=True)
    with pytest.raises(ValueError, match="status or drops"):
        fake_oxen.fault("POST /ai/queue", status=500, drop=True)


# -- FakeSlack: "processed, answer lost", server errors, metadata, upload URL faults -------------------


def _slack_client(slack: FakeSlack, **kwargs: Any) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {slack.bot_token}"}
    return httpx.AsyncClient(base_url=slack.api_url, headers=headers, **kwargs)


async def test_slack_server_errors_are_html_and_answer_instead_unless_after(fake_slack: FakeSlack) -> None:
    fake_slack.fault("chat.postMessage", status=500)
    fake_slack.fault("chat.postMessage", status=503, after=True)
    fake_slack.fault("chat.postMessage", error="fatal_error", after=True)
    async with _slack_client(fake_slack) as http:
        refused = await http.post("chat.postMessage", data={"channel": "C1", "text": "refused"})
        lost = await http.post("chat.postMessage", data={"channel": "C1", "text": "posted, answer lost"})
        fatal = await http.post("chat.postMessage", data={"channel": "C1", "text": "posted, fatal_error"})
    assert (refused.status_code, refused.headers["content-type"].split(";")[0]) == (500, "text/html")
    assert "Server Error" in refused.text
    assert "ratelimited" not in refused.text
    assert lost.status_code == 503
    assert fatal.json() == {"ok": False, "error": "fatal_error"}
    assert [m["text"] for m in fake_slack.messages("C1")] == ["posted, answer lost", "posted, fatal_error"]


async def test_slack_sdk_sees_a_server_error_as_a_failed_call(fake_slack: FakeSlack) -> None:
    fake_slack.fault("chat.update", status=500, after=True)
    client = AsyncWebClient(token=fake_slack.bot_token, base_url=fake_slack.api_url)
    posted = await client.chat_postMessage(channel="C1", text="queued")
    with pytest.raises(SlackApiError) as failed:
        await client.chat_update(channel="C1", ts=posted["ts"], text="done")
    assert failed.value.response.status_code == 500
    assert fake_slack.message("C1", posted["ts"])["text"] == "done"


async def test_slack_dropped_connection_after_sharing_files(fake_slack: FakeSlack) -> None:
    async with _slack_client(fake_slack) as http:
        reserved = (
            await http.post("files.getUploadURLExternal", data={"filename": "a.png", "length": "4"})
        ).json()
        async with httpx.AsyncClient() as plain:
            assert (await plain.post(reserved["upload_url"], content=b"\x89PNG")).status_code == 200
        fake_slack.fault("files.completeUploadExternal", drop=True, after=True)
        files = json.dumps([{"id": reserved["file_id"], "title": "a"}])
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post("files.completeUploadExternal", data={"files": files, "channel_id": "C1"})
    file = fake_slack.uploaded_files[reserved["file_id"]]
    assert file.completed
    await fake_slack.wait_shared()
    assert "C1" in file.shares["public"]
    assert [m["files"] for m in fake_slack.messages("C1")] == [[reserved["file_id"]]]


async def test_slack_slow_answer_after_processing_times_the_client_out(fake_slack: FakeSlack) -> None:
    fake_slack.fault("chat.postMessage", delay=30.0, after=True)
    async with _slack_client(fake_slack, timeout=0.3) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post("chat.postMessage", data={"channel": "C1", "text": "posted"})
    assert [m["text"] for m in fake_slack.messages("C1")] == ["posted"]


async def test_slack_metadata_round_trips_only_with_include_all_metadata(fake_slack: FakeSlack) -> None:
    metadata = {"event_type": "dreamboard_job", "event_payload": {"job": "j1", "n": 2}}
    client = AsyncWebClient(token=fake_slack.bot_token, base_url=fake_slack.api_url)
    root = await client.chat_postMessage(channel="C1", text="root", metadata=metadata)
    assert "metadata" not in root["message"]
    async with _slack_client(fake_slack) as http:
        form = {"channel": "C1", "text": "reply", "thread_ts": root["ts"], "metadata": json.dumps(metadata)}
        assert (await http.post("chat.postMessage", data=form)).json()["ok"]

    plain = await client.conversations_replies(channel="C1", ts=root["ts"])
    assert [("metadata" in m) for m in plain["messages"]] == [False, False]
    full = await client.conversations_replies(channel="C1", ts=root["ts"], include_all_metadata=True)
    assert [m["metadata"] for m in full["messages"]] == [metadata, metadata]
    history = await client.conversations_history(channel="C1")
    assert [("metadata" in m) for m in history["messages"]] == [False]
    history = await client.conversations_history(channel="C1", include_all_metadata=True)
    assert [m["metadata"] for m in history["messages"]] == [metadata]

    await client.chat_update(channel="C1", ts=root["ts"], text="root, updated")
    assert fake_slack.message("C1", root["ts"])["metadata"] == metadata
    await client.chat_update(channel="C1", ts=root["ts"], text="root, bare", metadata={})
    assert "metadata" not in fake_slack.message("C1", root["ts"])


@pytest.mark.parametrize(
    "metadata",
    [
        "not json",
        json.dumps(["event_type", "event_payload"]),
        json.dumps({"event_type": "x"}),
        json.dumps({"event_type": "x", "event_payload": "not an object"}),
        json.dumps({"event_type": 7, "event_payload": {}}),
        json.dumps({"event_type": "x", "event_payload": {}, "extra": 1}),
        json.dumps({}),
    ],
)
async def test_slack_refuses_malformed_metadata(fake_slack: FakeSlack, metadata: str) -> None:
    async with _slack_client(fake_slack) as http:
        answer = await http.post(
            "chat.postMessage", data={"channel": "C1", "text": "x", "metadata": metadata}
        )
    assert answer.json() == {"ok": False, "error": "invalid_metadata_format"}
    assert fake_slack.messages("C1") == []


async def test_slack_upload_url_faults_and_single_use(fake_slack: FakeSlack) -> None:
    async with _slack_client(fake_slack) as http:
        reserved = [
            (
                await http.post("files.getUploadURLExternal", data={"filename": f"{n}.png", "length": "4"})
            ).json()
            for n in range(2)
        ]
    [first, second] = [entry["upload_url"] for entry in reserved]
    fake_slack.fault("upload", status=429, retry_after=2)
    fake_slack.fault("upload", status=500)
    fake_slack.fault("upload", drop=True)
    fake_slack.fault("upload", drop=True, after=True)
    async with httpx.AsyncClient() as http:
        limited = await http.post(first, content=b"\x89PNG")
        assert (limited.status_code, limited.headers["Retry-After"]) == (429, "2")
        broken = await http.post(first, content=b"\x89PNG")
        assert (broken.status_code, broken.headers["content-type"].split(";")[0]) == (500, "text/html")
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post(first, content=b"\x89PNG")
        assert not fake_slack.uploaded_files[reserved[0]["file_id"]].uploaded
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post(second, content=b"\x89PNG")
        assert fake_slack.uploaded_files[reserved[1]["file_id"]].content == b"\x89PNG"
        again = await http.post(second, content=b"\x89PNG")
        assert again.status_code == 404, "an upload URL takes the bytes once"
        accepted = await http.post(first, content=b"\x89PNG")
        assert (accepted.status_code, accepted.text) == (200, "OK - 4")
    assert len(fake_slack.calls_to("upload")) == 6


def test_slack_refuses_faults_the_service_cannot_produce(fake_slack: FakeSlack) -> None:
    with pytest.raises(ValueError, match="429"):
        fake_slack.fault("chat.postMessage", status=429, after=True)
    with pytest.raises(ValueError, match="429 and 5xx"):
        fake_slack.fault("chat.postMessage", status=404)
    with pytest.raises(ValueError, match="ok:false"):
        fake_slack.fault("upload", error="fatal_error")


# -- FakeOxen: result URLs need the key and expire; input images are fetched anonymously ---------------


async def test_oxen_result_urls_need_the_key_are_signed_and_expire(fake_oxen: FakeOxen) -> None:
    async with _oxen_client(fake_oxen) as http, httpx.AsyncClient() as anonymous:
        [generation_id] = await _enqueue(http, prompt="fox")
        row = (await http.get(f"/ai/queue/{generation_id}")).json()
        url = row["result_url"]
        assert (await anonymous.get(url)).status_code == 401
        image = await http.get(url)
        assert (image.status_code, image.content[:4]) == (200, b"\x89PNG")
        forged = await http.get(url[: url.rindex("sig=") + 4] + "0" * 64)
        assert (forged.status_code, forged.headers["content-type"].split(";")[0]) == (403, "application/xml")

        fake_oxen.advance(fake_oxen.result_url_lifetime + 1)
        expired = await http.get(url)
        assert expired.status_code == 403
        assert "Request has expired" in expired.text
        again = (await http.get(f"/ai/queue/{generation_id}")).json()
        assert again["result_url"] == url, "by default a later GET does not re-sign the URL"

        fake_oxen.resign_result_urls = True
        fresh = (await http.get(f"/ai/queue/{generation_id}")).json()["result_url"]
        assert fresh != url
        assert (await http.get(fresh)).status_code == 200


async def test_oxen_can_serve_result_urls_without_the_key() -> None:
    async with FakeOxen(result_auth_required=False) as oxen, _oxen_client(oxen) as http:
        [generation_id] = await _enqueue(http, prompt="fox")
        url = (await http.get(f"/ai/queue/{generation_id}")).json()["result_url"]
        async with httpx.AsyncClient() as anonymous:
            assert (await anonymous.get(url)).status_code == 200


async def test_oxen_fetches_input_images_anonymously_and_fails_as_reported(fake_oxen: FakeOxen) -> None:
    seen: list[str | None] = []
    picture = render_png("reference", 3, 20, 20)

    async def serve(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        name = request.match_info["name"]
        if name == "forbidden":
            return web.Response(status=403)
        if name == "page":
            return web.Response(text="<html>sign in</html>", content_type="text/html")
        return web.Response(body=picture, content_type="image/png")

    app = web.Application()
    app.router.add_get("/{name}", serve)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host = f"http://127.0.0.1:{runner.addresses[0][1]}"
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    nobody = f"http://127.0.0.1:{closed.getsockname()[1]}/ref.png"
    try:
        async with _oxen_client(fake_oxen) as http:
            [done] = await _enqueue(http, prompt="fox")
            own_result = (await http.get(f"/ai/queue/{done}")).json()["result_url"]
            cases = [f"{host}/ok.png", own_result, f"{host}/forbidden", f"{host}/page", nobody]
            ids = [(await _enqueue(http, prompt="fox", input_image=[url]))[0] for url in cases]
            rows = [(await http.get(f"/ai/queue/{gid}")).json() for gid in ids]
            sync = await http.post(
                "/ai/images/edit", json={"model": SEEDREAM, "prompt": "fox", "input_image": [nobody]}
            )
    finally:
        closed.close()
        await runner.cleanup()
    assert [row["status"] for row in rows] == ["succeeded", "failed", "failed", "failed", "failed"]
    assert fake_oxen.fetched_references[:2] == [[], [picture]]
    assert f"401 Client Error: Unauthorized for url: {own_result}" in rows[1]["error_message"]
    assert f"403 Client Error: Forbidden for url: {host}/forbidden" in rows[2]["error_message"]
    assert "cannot identify image file" in rows[3]["error_message"]
    assert rows[4]["error_message"] == "Internal Server Error"
    assert sync.status_code == 500
    assert seen == [None, None, None], "Oxen fetches references without any key"
