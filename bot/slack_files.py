"""Slack file I/O: uploading results into a thread with the external-upload flow."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from slack_sdk.web.async_client import AsyncWebClient


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

    async def is_shared(self, file_id: str, channel_id: str) -> bool:
        """Whether a file already appears in `channel_id` (its upload was completed)."""
        info = await self._client.files_info(file=file_id)
        shares = info["file"].get("shares") or {}
        return any(channel_id in shares.get(kind, {}) for kind in ("public", "private"))
