"""Hostile references in a thread reply: decompression bombs, damaged files and addresses the bot must
not fetch are answered with an ephemeral naming the file (escaped), and nothing is queued or paid."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image

from bot.store.model import JobState
from tests.scenarios.harness import Harness

HOSTILE_NAME = "<!channel> moodboard.png"
ESCAPED_NAME = "&lt;!channel&gt; moodboard.png"


def png(size: tuple[int, int] = (64, 48)) -> bytes:
    output = io.BytesIO()
    Image.new("RGB", size, "red").save(output, format="PNG")
    return output.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims `width`×`height` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def truncated_jpeg() -> bytes:
    noise = Image.frombytes("RGB", (64, 48), bytes(range(256)) * 36)
    output = io.BytesIO()
    noise.save(output, format="JPEG", quality=95)
    return output.getvalue()[:-200]


async def refused(harness: Harness, file: dict[str, Any]) -> str:
    """Reply in a finished job's thread with `file` attached; the text of the one ephemeral answer,
    once it is certain no job was added and nothing was sent to Oxen."""
    root = await harness.generate("a lighthouse")
    submitted = len(harness.oxen.submissions)
    await harness.send(harness.slack.human_message("C1", "use this", thread_ts=root, files=[file]))
    [ephemeral] = await harness.slack.wait_for("chat.postEphemeral")
    assert (ephemeral.params["user"], ephemeral.params["thread_ts"]) == ("U2", root)
    assert len(await harness.jobs()) == 1
    assert len(harness.oxen.submissions) == submitted
    return str(ephemeral.params["text"])


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (png_header(100_000, 100_000), "far too large to use as a reference"),
        (png_header(9_000, 8_000), "is 9000×8000, too large to use as a reference"),
        (truncated_jpeg(), "is damaged or truncated"),
        (bytes(range(256)) * 40, "is not an image Dreamboard can read"),
    ],
    ids=["bomb-error-threshold", "bomb-warning-threshold", "truncated-jpeg", "random-bytes"],
)
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
async def test_an_unreadable_image_is_refused_by_its_escaped_name(
    harness: Harness, content: bytes, fragment: str
) -> None:
    await harness.start()
    file = harness.slack.add_file(content, name="moodboard.png")
    file["name"] = HOSTILE_NAME
    text = await refused(harness, file)
    assert fragment in text
    assert ESCAPED_NAME in text
    assert "<!channel>" not in text


def _set_url(make: Callable[[str], str]) -> Callable[[dict[str, Any]], None]:
    def apply(file: dict[str, Any]) -> None:
        for key in ("url_private", "url_private_download"):
            file[key] = make(str(file[key]))

    return apply


@pytest.mark.parametrize(
    ("rewrite", "fragment"),
    [
        (_set_url(lambda url: url.replace("127.0.0.1", "[127.0.0.1")), "can't read safely"),
        (_set_url(lambda url: url.replace("127.0.0.1:", "127.0.0.1:99999#")), "can't read safely"),
        (_set_url(lambda url: url.replace("http://", "http://evil.example\\@")), "can't read safely"),
        (_set_url(lambda url: url.replace("http://", "http://user:pw@")), "can't read safely"),
        (_set_url(lambda url: url.replace("127.0.0.1", "evil.example")), "not stored on Slack's"),
    ],
    ids=["unparseable-host", "port-out-of-range", "backslash", "userinfo", "wrong-host"],
)
async def test_an_address_the_gateway_refuses_is_answered_by_name(
    harness: Harness, rewrite: Callable[[dict[str, Any]], None], fragment: str
) -> None:
    await harness.start()
    file = harness.slack.add_file(png(), name="moodboard.png")
    rewrite(file)
    file["name"] = HOSTILE_NAME
    text = await refused(harness, file)
    assert fragment in text
    assert ESCAPED_NAME in text
    assert harness.slack.calls_to("file_download") == []


async def test_a_slack_host_over_plain_http_is_refused(harness: Harness) -> None:
    await harness.start(slack_file_hosts="127.0.0.1,files.slack.example")
    file = harness.slack.add_file(png(), name="moodboard.png")
    _set_url(lambda url: "http://files.slack.example/files-pri/x/moodboard.png")(file)
    text = await refused(harness, file)
    assert "not served over https" in text
    assert harness.slack.calls_to("file_download") == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (truncated_jpeg(), "is a damaged or truncated image"),
        (png_header(100_000, 100_000), "is too large to be an image Dreamboard uploads"),
    ],
    ids=["truncated-jpeg", "bomb-header"],
)
async def test_a_bad_result_from_oxen_fails_the_job_as_not_an_image(
    harness: Harness, body: bytes, reason: str
) -> None:
    await harness.start()
    harness.oxen.serve_result_as("image/png", body)
    await harness.command("a fox")
    [reply] = await harness.slack.wait_for(
        "chat.postMessage", where=lambda call: "failed" in str(call.params.get("text")), timeout=10
    )
    [(job, _)] = await harness.jobs()
    expected = f"result `{job.id}-1` {reason} (it was served as image/png); nothing was uploaded"
    assert expected in str(reply.params["text"])
    assert job.state is JobState.FAILED
    assert harness.slack.calls_to("files.getUploadURLExternal") == []
