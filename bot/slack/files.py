"""Slack file I/O: uploading results into a thread, and downloading reference images safely."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from slack_sdk.web.async_client import AsyncWebClient

from bot.app.config import is_loopback


@dataclass(frozen=True)
class ResultFile:
    """An image on local disk, ready to upload."""

    idx: int
    path: Path
    filename: str
    title: str
    alt_text: str


class UploadError(Exception):
    """The bytes could not be sent to Slack's upload URL."""


class SlackFiles:
    """`files.getUploadURLExternal` → POST bytes → `files.completeUploadExternal`, done in steps so the
    job runner can record the file ids before completing (a restart then never uploads twice)."""

    def __init__(self, client: AsyncWebClient, http: aiohttp.ClientSession) -> None:
        self._client = client
        self._http = http

    async def send_bytes(self, files: Sequence[ResultFile]) -> dict[int, str]:
        """Reserve a file id per image and stream its bytes to Slack; returns {image index: file id}."""
        file_ids: dict[int, str] = {}
        for result in files:
            size = result.path.stat().st_size
            reserved = await self._client.files_getUploadURLExternal(
                filename=result.filename, length=size, alt_txt=result.alt_text[:1000]
            )
            with result.path.open("rb") as body:
                async with self._http.post(str(reserved["upload_url"]), data=body) as response:
                    if response.status != 200:
                        raise UploadError(f"Slack refused the upload (HTTP {response.status})")
            file_ids[result.idx] = str(reserved["file_id"])
        return file_ids

    async def share(
        self, files: Sequence[tuple[str, str]], *, channel_id: str, thread_ts: str, comment: str
    ) -> None:
        """Complete the upload: post the files (id, title) as one message in the thread."""
        await self._client.files_completeUploadExternal(
            files=[{"id": file_id, "title": title} for file_id, title in files],
            channel_id=channel_id,
            thread_ts=thread_ts,
            initial_comment=comment,
        )

    async def share_ts(self, file_id: str, channel_id: str) -> str | None:
        """The ts of the message that shares the file in `channel_id`, or None while Slack shows no
        share (not completed, or not processed yet: Slack fills `shares` in with a delay)."""
        info = await self._client.files_info(file=file_id)
        shares = info["file"].get("shares") or {}
        for kind in ("public", "private"):
            for share in shares.get(kind, {}).get(channel_id, []):
                return str(share["ts"])
        return None


class ReferenceFetchError(ValueError):
    """A Slack file could not be used; the message names it, for the user."""


def file_name(file: Mapping[str, Any]) -> str:
    """A human name for a Slack file object."""
    return str(file.get("name") or file.get("title") or file.get("id") or "an attachment")


class SlackFileReader:
    """Downloads files users attached, sending the bot token only to allow-listed Slack file hosts."""

    def __init__(
        self, client: AsyncWebClient, http: aiohttp.ClientSession, *, token: str, hosts: Sequence[str]
    ) -> None:
        self._client = client
        self._http = http
        self._token = token
        self._hosts = frozenset(hosts)

    async def complete(self, file: Mapping[str, Any]) -> Mapping[str, Any]:
        """The full file object (events sometimes carry a stub marked `file_access`)."""
        if file.get("url_private_download") or file.get("url_private") or not file.get("id"):
            return file
        info = await self._client.files_info(file=str(file["id"]))
        return dict(info["file"])

    async def download(self, file: Mapping[str, Any], *, max_bytes: int) -> bytes:
        """The file's bytes; raises ReferenceFetchError with a reason naming the file."""
        name = file_name(file)
        size = file.get("size")
        too_big = f"“{name}” is too large: references can be at most {max_bytes / 1_048_576:g} MB."
        if isinstance(size, int) and size > max_bytes:
            raise ReferenceFetchError(too_big)
        mimetype = str(file.get("mimetype") or "")
        if mimetype and not mimetype.startswith("image/"):
            raise ReferenceFetchError(f"“{name}” is not an image ({mimetype}).")
        url = str(file.get("url_private_download") or file.get("url_private") or "")
        parts = urlsplit(url)
        if not url or parts.hostname not in self._hosts:
            raise ReferenceFetchError(
                f"“{name}” is not stored on Slack's file servers, so Dreamboard won't fetch it."
            )
        if parts.scheme != "https" and not is_loopback(parts.hostname or ""):
            raise ReferenceFetchError(f"“{name}” is not served over https, so Dreamboard won't fetch it.")
        headers = {"Authorization": f"Bearer {self._token}"}
        async with self._http.get(url, headers=headers, allow_redirects=False) as response:
            if response.status != 200 or response.content_type == "text/html":
                raise ReferenceFetchError(
                    f"Slack answered with a sign-in page instead of “{name}”. "
                    "Dreamboard may be missing the files:read scope or access to that file."
                )
            data = bytearray()
            async for chunk in response.content.iter_chunked(256 * 1024):
                data += chunk
                if len(data) > max_bytes:
                    raise ReferenceFetchError(too_big)
        return bytes(data)
