"""Slack file I/O: uploading results into a thread, and downloading reference images safely."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.errors import UserFacingError
from bot.domain.hosts import is_loopback
from bot.slack.errors import SlackError, SlackErrorKind, call
from bot.views.blocks import escape

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResultFile:
    """An image on local disk, ready to upload."""

    idx: int
    path: Path
    filename: str
    title: str
    alt_text: str


class UploadState(StrEnum):
    """Where a recorded upload stands, as `files.info` tells."""

    SHARED = "shared"
    COMPLETED = "completed"
    MISSING = "missing"


UPLOAD_ATTEMPTS = 4
MAX_REDIRECTS = 3
"""How many redirects a reference download follows (Grid needs one)."""
REDIRECTS = frozenset({301, 302, 303, 307, 308})
UPLOAD_TIMEOUT = aiohttp.ClientTimeout(total=300, sock_connect=30)
MAX_RETRY_AFTER = 60.0


class SlackFiles:
    """`files.getUploadURLExternal` → POST bytes → `files.completeUploadExternal`, in steps, so the
    pipeline records the file ids before completing and a restart can tell which step happened."""

    def __init__(self, client: AsyncWebClient, http: aiohttp.ClientSession) -> None:
        self._client = client
        self._http = http

    async def send_bytes(self, files: Sequence[ResultFile]) -> dict[int, str]:
        """Reserve a file id per image and send its bytes; returns {image index: file id}."""
        file_ids: dict[int, str] = {}
        for result in files:
            size = result.path.stat().st_size
            reserved = await call(
                self._client.files_getUploadURLExternal(
                    filename=result.filename, length=size, alt_txt=escape(result.alt_text)[:1000]
                )
            )
            await self._send(str(reserved["upload_url"]), result.path)
            file_ids[result.idx] = str(reserved["file_id"])
        return file_ids

    async def _send(self, url: str, path: Path) -> None:
        """POST the bytes to the upload URL, retrying 429 (after Retry-After), 5xx and transport errors:
        the URL is single-file, so sending the same bytes again cannot make a second file."""
        for attempt in range(1, UPLOAD_ATTEMPTS + 1):
            retry_after: str | None = None
            try:
                with path.open("rb") as body:
                    async with self._http.post(url, data=body, timeout=UPLOAD_TIMEOUT) as response:
                        if response.status == 200:
                            return
                        if response.status == 404 and attempt > 1:
                            return  # single-use URL: an earlier attempt's bytes arrived, its answer was lost
                        problem = f"http_{response.status}"
                        retry_after = response.headers.get("Retry-After")
                        if response.status != 429 and response.status < 500:
                            raise SlackError(SlackErrorKind.REFUSED, problem)
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = type(exc).__name__
            if attempt == UPLOAD_ATTEMPTS:
                kind = SlackErrorKind.RATE_LIMITED if problem == "http_429" else SlackErrorKind.UNAVAILABLE
                raise SlackError(kind, problem)
            await asyncio.sleep(_retry_delay(attempt, retry_after))

    async def share(
        self, files: Sequence[tuple[str, str]], *, channel_id: str, thread_ts: str, comment: str
    ) -> None:
        """Complete the upload: post the files (id, title) as one message in the thread. Titles and alt
        texts (the prompt) are escaped like message text: slack.md does not say whether Slack parses
        `<!here>` or `<@U…>` in them, so they are treated as if it did (the stricter reading)."""
        await call(
            self._client.files_completeUploadExternal(
                files=[{"id": file_id, "title": escape(title)} for file_id, title in files],
                channel_id=channel_id,
                thread_ts=thread_ts,
                initial_comment=comment,
            )
        )

    async def upload_state(self, file_id: str, channel_id: str) -> tuple[UploadState, str | None]:
        """Whether a recorded upload was completed (and the ts of its message, once Slack shows the
        share): a file reserved but never completed is `file_not_found` (slack.md §8)."""
        try:
            ts = await self.share_ts(file_id, channel_id)
        except SlackError as exc:
            if exc.kind is SlackErrorKind.NOT_FOUND:
                return UploadState.MISSING, None
            raise
        return (UploadState.SHARED, ts) if ts else (UploadState.COMPLETED, None)

    async def share_ts(self, file_id: str, channel_id: str) -> str | None:
        """The ts of the message that shares the file in `channel_id`, or None while Slack shows no
        share (Slack fills `shares` in with a delay)."""
        info = await call(self._client.files_info(file=file_id))
        shares = (info.get("file") or {}).get("shares") or {}
        for kind in ("public", "private"):
            for share in shares.get(kind, {}).get(channel_id, []):
                return str(share["ts"])
        return None


def _retry_delay(attempt: int, retry_after: str | None) -> float:
    if retry_after is not None:
        try:
            return min(max(float(retry_after), 0.0), MAX_RETRY_AFTER)
        except ValueError:
            pass
    return float(min(0.5 * 2 ** (attempt - 1), 8.0))


class ReferenceFetchError(UserFacingError):
    """A Slack file could not be used; the message names it, for the user."""


def file_name(file: Mapping[str, Any]) -> str:
    """A human name for a Slack file object."""
    return str(file.get("name") or file.get("title") or file.get("id") or "an attachment")


def sign_in_page(name: str) -> str:
    """What to say when Slack showed its sign-in page instead of a file."""
    return (
        f"Slack answered with a sign-in page instead of “{name}”. "
        "Dreamboard may be missing the files:read scope or access to that file."
    )


def unusable_address(name: str) -> str:
    """What to say when Slack gave a file address that cannot be parsed or checked safely."""
    return (
        f"Slack gave an address for “{name}” that Dreamboard can't read safely, so it was not downloaded. "
        "Try attaching it again."
    )


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
        try:
            info = await call(self._client.files_info(file=str(file["id"])))
        except SlackError as exc:
            raise ReferenceFetchError(
                f"Slack would not describe “{file_name(file)}” ({exc.code}); try attaching it again."
            ) from None
        return dict(info["file"])

    async def download(self, file: Mapping[str, Any], *, max_bytes: int) -> bytes:
        """The file's bytes; raises ReferenceFetchError with a reason naming the file.

        Redirects are followed by hand, at most MAX_REDIRECTS, and only to allow-listed hosts (https unless
        loopback), each hop sent the token again: Enterprise Grid answers files.slack.com with a 302 to
        files-origin.slack.com, which needs the token too (NousResearch/hermes-agent#114483). A redirect
        anywhere else is refused before any request goes there, so the token never leaves those hosts."""
        name = file_name(file)
        size = file.get("size")
        too_big = f"“{name}” is too large: references can be at most {max_bytes / 1_048_576:g} MB."
        if isinstance(size, int) and size > max_bytes:
            raise ReferenceFetchError(too_big)
        mimetype = str(file.get("mimetype") or "")
        if mimetype and not mimetype.startswith("image/"):
            raise ReferenceFetchError(f"“{name}” is not an image ({mimetype}).")
        url = str(file.get("url_private_download") or file.get("url_private") or "")
        self._check_host(url, name, redirected=False)
        headers = {"Authorization": f"Bearer {self._token}"}
        try:
            for _ in range(MAX_REDIRECTS + 1):
                async with self._http.get(
                    url, headers=headers, allow_redirects=False, timeout=UPLOAD_TIMEOUT
                ) as response:
                    if response.status in REDIRECTS and response.headers.get("Location"):
                        url = urljoin(str(response.url), response.headers["Location"])
                        self._check_host(url, name, redirected=True)
                        continue
                    if response.status != 200 or response.content_type == "text/html":
                        raise ReferenceFetchError(sign_in_page(name))
                    data = bytearray()
                    async for chunk in response.content.iter_chunked(256 * 1024):
                        data += chunk
                        if len(data) > max_bytes:
                            raise ReferenceFetchError(too_big)
                    return bytes(data)
        except aiohttp.InvalidURL:
            raise ReferenceFetchError(unusable_address(name)) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ReferenceFetchError(
                f"Downloading “{name}” from Slack failed ({type(exc).__name__}); try again."
            ) from None
        raise ReferenceFetchError(f"Slack redirected “{name}” more than {MAX_REDIRECTS} times; try again.")

    def _check_host(self, url: str, name: str, *, redirected: bool) -> None:
        """Refuse a URL the token must not be sent to (naming the file, and the host when redirected)."""
        try:
            parts = urlsplit(url)
            host = parts.hostname or ""
            _ = parts.port  # raises on a port that is not a number in range
        except ValueError:
            raise ReferenceFetchError(unusable_address(name)) from None
        if parts.username is not None or "\\" in url:
            # userinfo or a backslash: parsers disagree on the host (urllib and yarl, WHATWG), so the
            # host checked here might not be the one a request goes to.
            raise ReferenceFetchError(unusable_address(name))
        if host not in self._hosts:
            if redirected and "redir=" in parts.query:
                # Slack's answer to a token that may not read the file: a redirect to the workspace's
                # sign-in page, `…/?redir=…` (slack.md §2.3, deno-slack-sdk#285).
                raise ReferenceFetchError(sign_in_page(name))
            if redirected:
                log.warning(
                    "a Slack file download was redirected to %s, which is not in SLACK_FILE_HOSTS", host
                )
                raise ReferenceFetchError(
                    f"Slack sent “{name}” on to {host or 'an unnamed host'}, which Dreamboard is not allowed "
                    "to fetch from (SLACK_FILE_HOSTS), so it was not downloaded. Whoever runs Dreamboard "
                    "can add that host if it is Slack's."
                )
            raise ReferenceFetchError(
                f"“{name}” is not stored on Slack's file servers, so Dreamboard won't fetch it."
            )
        if parts.scheme != "https" and not is_loopback(host):
            raise ReferenceFetchError(f"“{name}” is not served over https, so Dreamboard won't fetch it.")
