"""Reference images for an iteration: which ones, in which order, and the URLs Oxen fetches.

Order (at most 10): images attached to the message; the thread's current base (the newest result);
other images people attached earlier in the thread, newest first. Candidates are fetched and
checked when the message arrives (so a bad file is refused before any job exists) and cached by
content; URLs are made when the job runs, because hosted and Oxen result URLs expire.

A previous result is a reference like any other: the pipeline keeps the bytes it downloaded for the
upload in the same cache (`keep`), and the job that iterates on it publishes them through the
configured host; when the cache lost them (pruned, another machine) they are fetched back from Slack
by file id. Oxen's own result URL is sent only with OXEN_REUSE_RESULT_URLS: Oxen fetches references
anonymously (oxen-api.md §4.3) and its result URLs may need the key and expire (§2.3, §3.3).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from bot.backends.base import BackendError
from bot.backends.model_schema import MAX_REFERENCES
from bot.backends.oxen import OxenClient
from bot.domain.errors import UserFacingError
from bot.domain.images import ImageRejectedError, PreparedImage, prepare_image
from bot.features.reference_hosting import ReferenceHost
from bot.slack.errors import SlackError, SlackErrorKind
from bot.slack.files import ReferenceFetchError, SlackFileReader, file_name
from bot.slack.gateway import SlackGateway
from bot.store.model import ImageState, Job, JobImage
from bot.store.store import Store

log = logging.getLogger(__name__)

FRESH_RESULT_URL = 20 * 60
HOSTING_HELP = (
    "An admin can fix this by setting PUBLIC_BASE_URL or OXEN_REFERENCE_REPO (README, “Reference hosting”)."
)


class ReferenceError(UserFacingError):
    """A reference cannot be used; the message is for the user and names the file."""


def no_hosting_problem(what: str, *, instead: str) -> str:
    """What to tell someone whose request needs a hosted reference when none can be hosted: what could
    not be done (`what`), why, who can fix it, and what they can do now (`instead`)."""
    return (
        f"Dreamboard can't {what}: it has no place to host images that Oxen.ai can fetch, so nothing "
        f"was started and nothing was paid. {HOSTING_HELP} Meanwhile, {instead}"
    )


def needs_file_info(file: Mapping[str, Any]) -> bool:
    """Whether a file object from an event is a stub to complete with files.info. Slack Connect files
    arrive in events as `{"id": …, "file_access": "check_file_info"}`, and only files.info shows their
    properties (https://docs.slack.dev/apis/slack-connect/#check_file_info); any object without a
    download URL is treated the same way."""
    has_url = file.get("url_private_download") or file.get("url_private")
    return bool(file.get("id")) and (file.get("file_access") == "check_file_info" or not has_url)


def slack_read_problem(
    exc: SlackError, method: str, what: str, *, outcome: str = "nothing was started"
) -> str:
    """What to tell the person when a Slack read (`method`) failed while Dreamboard tried to `what`:
    which call, Slack's answer, what came of it (`outcome`) and what to do about it."""
    failed = f"`{method}` answered `{exc.code}`"
    if exc.kind is SlackErrorKind.RATE_LIMITED:
        return (
            f"Slack is limiting how fast Dreamboard may {what} ({failed}), so {outcome}. "
            "Send your message again in a minute."
        )
    if exc.kind is SlackErrorKind.UNAVAILABLE:
        return (
            f"Slack did not answer when Dreamboard tried to {what} ({failed}), so {outcome}. "
            "Send your message again in a moment."
        )
    if exc.kind is SlackErrorKind.NOT_FOUND:
        return (
            f"Slack could not find what Dreamboard needed to {what} ({failed}); it may have been "
            f"deleted, so {outcome}. Send your message again without it."
        )
    if exc.kind in (SlackErrorKind.NOT_IN_CHANNEL, SlackErrorKind.ARCHIVED):
        return (
            f"Slack does not let Dreamboard {what} in this conversation ({failed}), so {outcome}. "
            "Invite Dreamboard here with `/invite` and send your message again."
        )
    if exc.code in ("missing_scope", "not_allowed_token_type", "no_permission", "access_denied"):
        return (
            f"Slack refused to let Dreamboard {what} ({failed}), so {outcome}. A workspace "
            "admin needs to reinstall Dreamboard with the scopes in its manifest.yaml."
        )
    return (
        f"Slack refused to let Dreamboard {what} ({failed}), so {outcome}. If it happens "
        "again, show this message to whoever runs Dreamboard."
    )


@dataclass(frozen=True)
class ReferenceSource:
    """Where one reference comes from; stored with the job so it can be resolved again later."""

    kind: Literal["file", "result"]
    name: str
    file_id: str | None = None
    key: str | None = None
    mimetype: str | None = None
    job_id: str | None = None
    idx: int | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (for the job's params)."""
        return {key: value for key, value in asdict(self).items() if value is not None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReferenceSource:
        """The inverse of to_json."""
        return cls(**data)


@dataclass(frozen=True)
class Collected:
    """The references chosen for a message: those left out by the cap, earlier images that could not
    be used (with the reason), and the job of the base they iterate on."""

    sources: list[ReferenceSource]
    left_out: list[str]
    skipped: list[str]
    parent_id: str | None


class References:
    """Chooses, fetches, caches and publishes reference images."""

    def __init__(
        self,
        *,
        store: Store,
        oxen: OxenClient,
        slack: SlackGateway,
        reader: SlackFileReader,
        host: ReferenceHost | None,
        cache: Path,
        max_bytes: int,
        reuse_result_urls: bool = False,
    ) -> None:
        """`reuse_result_urls` (OXEN_REUSE_RESULT_URLS): send Oxen's own fresh result URL for a previous
        result instead of hosting its bytes."""
        self._reuse_result_urls = reuse_result_urls
        self._store = store
        self._oxen = oxen
        self._slack = slack
        self._reader = reader
        self._host = host
        self._cache = cache
        self._max_bytes = max_bytes

    def prune_cache(self, older_than: float) -> int:
        """Delete cached references unused since `older_than` (re-fetched from Slack when needed again)."""
        removed = 0
        for path in self._cache.glob("*.*") if self._cache.is_dir() else ():
            if path.stat().st_mtime < older_than:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    @property
    def host_description(self) -> str:
        """The hosting strategy in use, for the start-up log."""
        if self._host is not None:
            return self._host.description
        if self._reuse_result_urls:
            return "none (attachments cannot be used as references; results reuse Oxen's result URLs)"
        return "none (neither attachments nor results can be used as references)"

    def hosting_problem(self, sources: Sequence[ReferenceSource], *, what: str, instead: str) -> str | None:
        """Why these references could not be sent to Oxen (checked before anything is stored or paid),
        or None when they can: every one needs the host, except results when Oxen's URLs are reused."""
        if self._host is not None:
            return None
        if any(source.kind != "result" or not self._reuse_result_urls for source in sources):
            return no_hosting_problem(what, instead=instead)
        return None

    async def keep(self, path: Path) -> tuple[str, str] | None:
        """Keep a downloaded result's bytes in the cache as a reference for later iterations; its content
        key and mimetype, or None when they cannot serve as one (logged: the result is then fetched back
        from Slack when it is needed)."""
        try:
            image = await asyncio.to_thread(_prepare_file, path)
        except (ImageRejectedError, OSError) as exc:
            log.warning("result %s is not kept as a reference: %s", path.name, exc)
            return None
        key = hashlib.sha256(image.data).hexdigest()[:32]
        await asyncio.to_thread(self._cache_write, key, image)
        return key, image.mimetype

    async def result_bytes(self, image: JobImage) -> bytes:
        """A result's bytes: from the cache by its content key, else fetched back from Slack by file id
        (and kept again); raises ReferenceError when neither has them."""
        cached = self._cached(image.reference_key, image.reference_mimetype)
        if cached is not None:
            return cached.data
        if image.file_id is None:
            raise ReferenceError(f"Image {image.idx + 1} of job {image.job_id} is no longer available.")
        name = f"image {image.idx + 1} of job {image.job_id}"
        fetched = await self._download({"id": image.file_id, "name": name}, outcome="it was left out")
        key = hashlib.sha256(fetched.data).hexdigest()[:32]
        await asyncio.to_thread(self._cache_write, key, fetched)
        await self._store.set_reference(image.job_id, image.idx, key, fetched.mimetype)
        return fetched.data

    async def collect(
        self,
        *,
        channel_id: str,
        thread_ts: str | None,
        message_ts: str,
        attached: Sequence[Mapping[str, Any]],
        thread_jobs: Sequence[Job],
        fresh: bool,
    ) -> Collected:
        """Choose this message's references and fetch the files among them; raises ReferenceError."""
        ordered: list[Mapping[str, Any] | ReferenceSource] = list(attached)
        base, parent_id = (None, None) if fresh else await self._base(thread_jobs)
        if base is not None:
            problem = self.hosting_problem(
                [base],
                what=f"iterate on {base.name}",
                instead="start over without it: reply with `--fresh` and your prompt, or use `/imagine`.",
            )
            if problem is not None:
                raise ReferenceError(problem)
            ordered.append(base)
        if thread_ts and not fresh:
            ordered += await self._earlier_files(channel_id, thread_ts, message_ts)
        sources: list[ReferenceSource] = []
        left_out: list[str] = []
        skipped: list[str] = []
        for position, candidate in enumerate(ordered):
            if len(sources) == MAX_REFERENCES:
                left_out.append(
                    candidate.name if isinstance(candidate, ReferenceSource) else file_name(candidate)
                )
            elif isinstance(candidate, ReferenceSource):
                sources.append(candidate)
            else:
                earlier = position >= len(attached)
                try:
                    outcome = "it was left out" if earlier else "nothing was started"
                    sources.append(await self._fetch_attachment(candidate, outcome=outcome))
                except ReferenceError as exc:
                    if not earlier:
                        raise
                    skipped.append(str(exc))
        if base is None or base not in sources:
            parent_id = None
        return Collected(sources, left_out, skipped, parent_id)

    async def resolve(self, sources: Sequence[Mapping[str, Any]]) -> list[str]:
        """URLs Oxen can fetch for a job's stored references, in order; raises ReferenceError when one
        cannot be made."""
        return [await self._url(ReferenceSource.from_json(source)) for source in sources]

    async def _base(self, thread_jobs: Sequence[Job]) -> tuple[ReferenceSource | None, str | None]:
        for job in thread_jobs:
            for image in await self._store.images(job.id):
                if image.file_id and image.state is ImageState.SUCCEEDED:
                    name = f"the latest result (job {job.id})"
                    source = ReferenceSource(
                        "result", name, file_id=image.file_id, job_id=job.id, idx=image.idx
                    )
                    return source, job.id
        return None, None

    async def _earlier_files(
        self, channel_id: str, thread_ts: str, message_ts: str
    ) -> list[Mapping[str, Any]]:
        try:
            messages = await self._slack.thread_messages(channel_id, thread_ts)
        except SlackError as exc:
            raise ReferenceError(
                slack_read_problem(exc, "conversations.replies", "read this thread's earlier images")
            ) from None
        found: list[Mapping[str, Any]] = []
        for message in reversed(messages):
            if (
                message.get("ts") == message_ts
                or message.get("bot_id")
                or message.get("subtype") == "bot_message"
            ):
                continue
            found += [
                f for f in message.get("files") or [] if str(f.get("mimetype", "")).startswith("image/")
            ]
        return found

    async def _fetch_attachment(self, file: Mapping[str, Any], *, outcome: str) -> ReferenceSource:
        if self._host is None:
            raise ReferenceError(
                f"“{file_name(file)}” can't be used: this Dreamboard has nowhere to host reference images "
                f"that Oxen.ai can fetch. {HOSTING_HELP}"
            )
        image = await self._download(file, outcome=outcome)
        key = hashlib.sha256(image.data).hexdigest()[:32]
        self._cache_write(key, image)
        return ReferenceSource(
            "file", file_name(file), file_id=file.get("id"), key=key, mimetype=image.mimetype
        )

    async def _download(
        self, file: Mapping[str, Any], *, outcome: str = "nothing was started"
    ) -> PreparedImage:
        if needs_file_info(file):
            try:
                file = await self._slack.file_info(str(file["id"]))
            except SlackError as exc:
                raise ReferenceError(
                    slack_read_problem(exc, "files.info", f"look up “{file_name(file)}”", outcome=outcome)
                ) from None
        try:
            complete = await self._reader.complete(file)
            data = await self._reader.download(complete, max_bytes=self._max_bytes)
            return await asyncio.to_thread(prepare_image, data, file_name(complete))
        except (ReferenceFetchError, ImageRejectedError) as exc:
            raise ReferenceError(str(exc)) from None

    def _cache_path(self, key: str, mimetype: str) -> Path:
        return self._cache / (key + (".png" if mimetype == "image/png" else ".jpg"))

    def _cache_write(self, key: str, image: PreparedImage) -> None:
        path = self._cache_path(key, image.mimetype)
        if path.exists():
            path.touch()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(image.data)

    async def _url(self, source: ReferenceSource) -> str:
        if source.kind == "result" and self._reuse_result_urls:
            fresh = await self._fresh_result_url(source)
            if fresh is not None:
                return fresh
        if self._host is None:
            raise ReferenceError(
                no_hosting_problem(
                    f"use {source.name} as a reference",
                    instead="start fresh with `/imagine` and your prompt.",
                )
            )
        if source.kind == "result":
            source = await self._result_source(source)
        image = self._cached(source.key, source.mimetype)
        if image is None:
            if source.file_id is None:
                raise ReferenceError(f"{source.name} is no longer available.")
            image = await self._download(
                {"id": source.file_id, "name": source.name}, outcome=f"{source.name} could not be used"
            )
            key = hashlib.sha256(image.data).hexdigest()[:32]
            self._cache_write(key, image)
            if source.kind == "result" and source.job_id is not None and source.idx is not None:
                await self._store.set_reference(source.job_id, source.idx, key, image.mimetype)
        else:
            key = str(source.key)
        return await self._host.publish(image, key)

    async def _result_source(self, source: ReferenceSource) -> ReferenceSource:
        """A previous result's source completed from its stored image: the cache key its bytes were kept
        under, and its Slack file (to fetch them back when the cache lost them)."""
        if source.job_id is None or source.idx is None:
            return source
        images = await self._store.images(source.job_id)
        image = next((i for i in images if i.idx == source.idx), None)
        if image is None:
            return source
        return replace(
            source,
            key=image.reference_key or source.key,
            mimetype=image.reference_mimetype or source.mimetype,
            file_id=image.file_id or source.file_id,
        )

    def _cached(self, key: str | None, mimetype: str | None) -> PreparedImage | None:
        if key is None or mimetype is None:
            return None
        path = self._cache_path(key, mimetype)
        if not path.is_file():
            return None
        path.touch()
        return PreparedImage(path.read_bytes(), mimetype)

    async def _fresh_result_url(self, source: ReferenceSource) -> str | None:
        """Reuse Oxen's own URL for a previous result while it is fresh (asking Oxen again when it is not)."""
        if source.job_id is None or source.idx is None:
            return None
        image = next((i for i in await self._store.images(source.job_id) if i.idx == source.idx), None)
        if image is None or image.generation_id is None:
            return None
        if image.result_url and image.result_url_at and time.time() - image.result_url_at < FRESH_RESULT_URL:
            return image.result_url
        try:
            row = await self._oxen.poll(image.generation_id)
        except BackendError:
            return None
        if row.status != "succeeded" or not row.result_url:
            return None
        await self._store.set_image_outcome(source.job_id, source.idx, error=None, result_url=row.result_url)
        return row.result_url


def _prepare_file(path: Path) -> PreparedImage:
    return prepare_image(path.read_bytes(), path.name)
