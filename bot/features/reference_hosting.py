"""Making reference images fetchable by Oxen, whose servers download every `input_image` URL.

Slack files are private, so each reference is re-hosted by one strategy (oxen-api.md, Decisions 3):
- `public_url`: this bot serves the bytes under PUBLIC_BASE_URL at an HMAC-signed URL that expires
  (references stay private; the bot must be reachable from the internet);
- `oxen_repo`: the bytes are committed to OXEN_REFERENCE_REPO (works anywhere; a public repo makes
  every reference world-readable; each distinct content is committed once);
- `data_uri`: the bytes travel inline as `data:` URIs (explicit opt-in: documented by Oxen, but
  reported failing by a client).
With `public_url` the bytes are also kept in the database, so any replica serves any URL.
Previous results are hosted the same way, from the bytes kept when they were posted (references.py);
Oxen's own result URLs are reused only with OXEN_REUSE_RESULT_URLS.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import time
import uuid
from pathlib import Path
from typing import Protocol

from bot.backends.oxen import OxenClient
from bot.domain.images import PreparedImage
from bot.store.store import Store

URL_LIFETIME = 3600
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}")
"""A cached file's name as `publish` makes it (a content key and an extension), well under any file
system's 255-byte limit."""
_EXPIRES = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")


class ReferenceHost(Protocol):
    """Turns image bytes into a URL Oxen can fetch."""

    description: str

    async def publish(self, image: PreparedImage, key: str) -> str:
        """A fetchable URL for `image`, stored under the content key `key`."""
        ...


class SignedUrlHost:
    """Serves cached bytes itself, under `{PUBLIC_BASE_URL}/refs/<key><ext>?exp=…&sig=…`.

    With a store, every published reference is also kept in the database (`reference_blobs`), so the
    URL works whichever replica the load balancer sends Oxen's request to: a replica whose cache folder
    lacks the file serves the row and keeps it in its folder. Without one (`python -m bot doctor`, which
    opens no database) only this machine's folder is served."""

    def __init__(
        self,
        base_url: str,
        secret: bytes,
        folder: Path,
        lifetime: int = URL_LIFETIME,
        *,
        store: Store | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._secret = secret
        self._folder = folder
        self._lifetime = lifetime
        self._store = store
        self.description = f"public_url ({self._base}/refs/…, signed, valid {lifetime // 60} min)"

    async def publish(self, image: PreparedImage, key: str) -> str:
        """Write the bytes to the cache folder (once) and to the shared store, and sign a URL for them."""
        name = key + image.extension
        path = self._folder / name
        if not path.exists():
            await asyncio.to_thread(_write_atomically, path, image.data)
        if self._store is not None:
            await self._store.publish_reference_blob(key, image.mimetype, image.data)
        expires = int(time.time()) + self._lifetime
        return f"{self._base}/refs/{name}?exp={expires}&sig={self._sign(name, expires)}"

    async def resolve(self, name: str, expires: str, signature: str) -> Path | None:
        """The file a signed URL names (fetched from the store into the cache folder when this machine
        does not have it), or None when the signature is wrong or expired, when the name, expiry or
        signature is not of the shape `publish` gives (anyone can send any of them), or when neither
        the folder nor the store holds the bytes."""
        if not (_NAME.fullmatch(name) and _EXPIRES.fullmatch(expires) and _SIGNATURE.fullmatch(signature)):
            return None
        deadline = int(expires)
        if deadline < time.time() or not hmac.compare_digest(self._sign(name, deadline), signature):
            return None
        path = self._folder / name
        try:
            if path.parent != self._folder:
                return None
            if path.is_file():
                return path
        except OSError:
            return None
        return await self._from_store(path)

    async def _from_store(self, path: Path) -> Path | None:
        if self._store is None:
            return None
        key, extension = path.stem, path.suffix
        row = await self._store.reference_blob(key)
        if row is None or PreparedImage(b"", row[0]).extension != extension:
            return None
        await asyncio.to_thread(_write_atomically, path, row[1])
        return path

    def _sign(self, name: str, expires: int) -> str:
        return hmac.new(self._secret, f"{name}:{expires}".encode(), hashlib.sha256).hexdigest()


def _write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same folder, so a request served at the
    same moment never reads a partly written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    temporary.write_bytes(data)
    temporary.replace(path)


class OxenRepoHost:
    """Commits the bytes to an Oxen repository once per content and hands out its download URL.

    Paths are content-addressed (`dreamboard-references/<key><ext>`), so a path committed once holds
    those bytes for good. Each commit is remembered by an empty marker file in `ledger` (under the data
    directory, so it survives restarts) written after Oxen confirmed the commit; a marked path is
    never uploaded again. Remembering, rather than asking Oxen first: a HEAD on repository files is not
    documented, and the documented GET (oxen-api.md §4.4) would download the whole file every time.
    """

    FOLDER = "dreamboard-references"

    def __init__(self, oxen: OxenClient, repo: str, ledger: Path) -> None:
        self._oxen = oxen
        self._repo = repo
        self._ledger = ledger / hashlib.sha256(repo.encode()).hexdigest()[:16]
        self._locks: dict[str, asyncio.Lock] = {}
        self.description = f"oxen_repo ({repo})"

    async def publish(self, image: PreparedImage, key: str) -> str:
        """The download URL of `dreamboard-references/<key><ext>`, committing it first if it never was."""
        name = key + image.extension
        marker = self._ledger / name
        async with self._locks.setdefault(name, asyncio.Lock()):
            if marker.exists():
                return self._oxen.repo_file_url(self._repo, f"{self.FOLDER}/{name}")
            url = await self._oxen.upload_repo_file(self._repo, self.FOLDER, name, image.data, image.mimetype)
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
            return url


class DataUriHost:
    """Inlines the bytes as a `data:` URI."""

    description = "data_uri (inline, opt-in)"

    async def publish(self, image: PreparedImage, key: str) -> str:
        """The image as a base64 data URI."""
        return f"data:{image.mimetype};base64,{base64.b64encode(image.data).decode()}"
