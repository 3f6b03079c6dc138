"""OxenClient: Seedream 4.5 (and other image models) through Oxen.ai's inference API.

One `httpx.AsyncClient` for every call. Generations go through the async queue only (enqueue, store
the generation id, poll, cancel): the sync routes hold one request open for the whole generation, which
cannot be cancelled at Oxen or resumed after a restart, so Dreamboard does not use them.

Retries follow what a request does. GETs, DELETEs and the content-addressed repository PUT are
retried on transport errors, 429 and 5xx. A submission (`POST /ai/queue`) costs
money, so it is retried only where it provably did not run (the connection was never made, or a 429);
any other lost answer raises SubmissionUnknownError, and the caller asks `GET /ai/queue` first.
Every message a BackendError from here carries has the API key and token shapes removed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import httpx
from httpx_sse import aconnect_sse
from pydantic import BaseModel, ConfigDict, ValidationError

from bot.backends.base import BackendError, FailureKind, Meter, SubmissionUnknownError
from bot.backends.model_schema import ModelSchema, SchemaError
from bot.domain.secrets import Redactor

log = logging.getLogger(__name__)

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
_CREDITS = re.compile(r"credit|balance|payment", re.IGNORECASE)
_CONTENT_POLICY = re.compile(r"sensitive|moderat|safety|policy|nsfw", re.IGNORECASE)
_PROVIDER_FAULT = re.compile(r"internal server error|server error|timed? ?out|unavailable|overloaded", re.I)
_VALIDATION = re.compile(r"\b422\b|\b400\b|invalid|must be|not permitted|cannot be empty", re.IGNORECASE)
_REFERENCE_FETCH = re.compile(
    r"(?:failed to download|invalid|cannot identify) input image|input image.*for url|for url: \S+", re.I
)
_HTTP_REASON = re.compile(r"\b([45]\d\d) (?:Client|Server) Error: ([A-Za-z ]+?) for url", re.I)
_URL = re.compile(r"https?://\S+")
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
SUBMISSION_ROUTES = frozenset({"queue"})


def classify_failure(status: int | None, detail: str, *, model_id: str = "", route: str = "") -> BackendError:
    """Turn an HTTP status (None: a generation that ended `failed`) and Oxen's message into a
    BackendError whose message says what happened, in one sentence that wraps nothing else.
    `route` is the `_call` route name; a 404/405 on "queue" means the queue itself is missing."""
    detail = _URL.sub(_url_host, detail.strip())[:300] or "no details given"
    if _CREDITS.search(detail) or status == 402:
        return BackendError(
            FailureKind.CREDITS, "The Oxen.ai account is out of credits; an admin needs to top it up."
        )
    if _CONTENT_POLICY.search(detail):
        return BackendError(
            FailureKind.CONTENT_POLICY,
            "The model's content filter blocked this prompt or image. Try rephrasing it.",
        )
    if status in (401, 403):
        return BackendError(
            FailureKind.AUTH, "Oxen.ai refused Dreamboard's API key; an admin needs to check it."
        )
    if status == 404 and detail.startswith("Model not found"):
        return BackendError(
            FailureKind.NOT_FOUND, f"Oxen.ai has no model called `{model_id or detail[17:]}`."
        )
    if route == "queue" and status in (404, 405):
        return BackendError(
            FailureKind.NOT_FOUND,
            f"Oxen.ai's generation queue is missing at the configured API address (HTTP {status} from "
            "`POST /ai/queue`), so no image was started; an admin needs to check OXEN_API_URL.",
        )
    if status is None and _REFERENCE_FETCH.search(detail):
        return BackendError(FailureKind.REFERENCE, _reference_problem(detail))
    if status is not None and status >= 500:
        return BackendError(
            FailureKind.UNAVAILABLE, f"Oxen.ai is unavailable right now (HTTP {status}). Try again later."
        )
    if status is None and _PROVIDER_FAULT.search(detail) and not _VALIDATION.search(detail):
        return BackendError(
            FailureKind.PROVIDER,
            f"The model provider failed while generating ({detail}). Nothing is wrong with the request; "
            "try again.",
        )
    if status is None and not _VALIDATION.search(detail):
        return BackendError(FailureKind.PROVIDER, f"The generation failed at Oxen.ai: {detail}")
    return BackendError(FailureKind.INVALID, f"Oxen.ai refused the request: {detail}")


def _url_host(match: re.Match[str]) -> str:
    """A URL in Oxen's text, cut to its scheme and host: a signed reference link is an access token."""
    parts = urlsplit(match.group(0))
    return f"{parts.scheme}://{parts.hostname}/…" if parts.hostname else "a URL"


def _reference_problem(detail: str) -> str:
    """Oxen could not fetch or read a reference image: say which answer it got and who can fix it."""
    answer = _HTTP_REASON.search(detail)
    if answer is not None:
        got = f"its host answered HTTP {answer.group(1)} {answer.group(2).strip()}"
    elif re.search(r"cannot identify|invalid input image", detail, re.I):
        got = "what it downloaded was not an image"
    else:
        got = detail
    return (
        f"Oxen.ai could not download a reference image ({got}), so no image was made. Reference "
        "images must be downloadable by Oxen without credentials; whoever runs Dreamboard can check "
        "the reference hosting with `python -m bot doctor`."
    )


def error_detail(response: httpx.Response) -> str:
    """Oxen's explanation from either error envelope: detail, message, title, then type."""
    try:
        payload = response.json()
    except ValueError:
        return response.text[:300]
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        for key in ("detail", "message", "title", "type"):
            if error.get(key):
                return str(error[key])
    if isinstance(error, str):
        return error
    return str(payload)[:300]


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with full-jitter exponential backoff; `Retry-After` wins when sent."""

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 60.0

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait before retry number `attempt` (1-based)."""
        if retry_after is not None:
            try:
                return min(max(float(retry_after), 0.0), self.max_retry_after)
            except ValueError:
                pass
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


class QueueRow(BaseModel):
    """One generation as `GET /ai/queue/{id}` reports it (extra fields are kept)."""

    model_config = ConfigDict(extra="allow")

    generation_id: str
    status: str
    result_url: str | None = None
    error_message: str | None = None

    @property
    def finished(self) -> bool:
        """Whether the generation reached a terminal state."""
        return self.status in TERMINAL_STATUSES


class _Queued(BaseModel):
    generation_id: str
    status: str


class _EnqueueResponse(BaseModel):
    generations: list[_Queued]


class _QueueList(BaseModel):
    generations: list[QueueRow] = []


class OxenClient:
    """Typed access to the Oxen inference endpoints Dreamboard uses."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        metrics: Meter,
        retry: RetryPolicy | None = None,
        schema_ttl: float = 3600.0,
        redactor: Redactor | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._redactor = redactor or Redactor([api_key])
        self._api_host = urlsplit(self._base).hostname
        self._key = api_key
        self._retry = retry or RetryPolicy()
        self._metrics = metrics
        self._schema_ttl = schema_ttl
        self._schemas: dict[str, tuple[float, ModelSchema]] = {}
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(30.0, read=180.0),
            headers={"User-Agent": "dreamboard/0.1"},
            follow_redirects=True,
        )

    async def aclose(self) -> None:
        """Close the HTTP connection pool."""
        await self._http.aclose()

    def cached_schema(self, model_id: str) -> ModelSchema | None:
        """The last schema fetched for `model_id`, however old, without any I/O."""
        entry = self._schemas.get(model_id)
        return entry[1] if entry else None

    async def model_schema(self, model_id: str) -> ModelSchema:
        """The model's request schema from `GET /ai/models/{id}`, cached for `schema_ttl` seconds."""
        entry = self._schemas.get(model_id)
        if entry and time.monotonic() - entry[0] < self._schema_ttl:
            return entry[1]
        response = await self._call(
            "GET", f"/ai/models/{quote(model_id, safe='')}", route="models", model=model_id
        )
        try:
            schema = ModelSchema.from_model_object(model_id, response.json())
        except (SchemaError, ValueError) as exc:
            raise BackendError(
                FailureKind.INVALID, f"Oxen.ai described `{model_id}` unexpectedly: {exc}"
            ) from None
        self._schemas[model_id] = (time.monotonic(), schema)
        return schema

    async def enqueue(self, body: Mapping[str, Any], *, count: int = 1) -> list[str]:
        """`POST /ai/queue`: returns the new generation ids (one per image)."""
        payload = {**body, "num_generations": count}
        response = await self._call(
            "POST", "/ai/queue", route="queue", json=payload, model=str(body["model"])
        )
        generations = _parse(_EnqueueResponse, response).generations
        if len(generations) != count:
            raise BackendError(
                FailureKind.NO_RESULT,
                f"Oxen.ai accepted the request but started {len(generations)} generations, not {count}.",
            )
        return [generation.generation_id for generation in generations]

    async def list_generations(self, *, model: str, status: str | None = None) -> list[QueueRow]:
        """`GET /ai/queue`: generations of `model` (active ones only when `status` is None)."""
        query = {"model": model, "media_type": "image", **({"status": status} if status else {})}
        response = await self._call("GET", "/ai/queue", route="list", params=query)
        return _parse(_QueueList, response).generations

    async def poll(self, generation_id: str) -> QueueRow:
        """`GET /ai/queue/{id}`: the generation's current state."""
        response = await self._call("GET", f"/ai/queue/{quote(generation_id, safe='')}", route="poll")
        return _parse(QueueRow, response)

    async def cancel(self, generation_id: str) -> None:
        """`DELETE /ai/queue/{id}`: cancel a generation that is still active (no effect otherwise)."""
        await self._call("DELETE", f"/ai/queue/{quote(generation_id, safe='')}", route="cancel")

    @asynccontextmanager
    async def download(self, url: str) -> AsyncIterator[httpx.Response]:
        """Stream a result image, retrying transport errors and 5xx. The API key is sent only to Oxen's
        own host, and only after a 401/403. Raises BackendError (never an httpx exception)."""
        attempt, with_key = 0, False
        while True:
            attempt += 1
            headers = {"Authorization": f"Bearer {self._key}"} if with_key else {}
            started = time.perf_counter()
            problem: str
            try:
                async with self._http.stream("GET", url, headers=headers) as response:
                    status = response.status_code
                    if status in (401, 403) and not with_key and self._owns(url):
                        with_key, attempt = True, attempt - 1
                        continue
                    if status == 200:
                        self._record("download", "200", started)
                        yield response
                        return
                    self._record("download", str(status), started)
                    problem = f"HTTP {status}"
                    if status != 429 and status < 500:
                        raise BackendError(
                            FailureKind.UNAVAILABLE,
                            f"Downloading the result from Oxen.ai failed ({problem}).",
                        )
            except httpx.TransportError as exc:
                self._record("download", "transport_error", started)
                problem = type(exc).__name__
            if attempt >= self._retry.attempts:
                raise BackendError(
                    FailureKind.UNAVAILABLE, f"Downloading the result from Oxen.ai failed ({problem})."
                )
            await asyncio.sleep(self._retry.delay(attempt))

    def _owns(self, url: str) -> bool:
        return urlsplit(url).hostname == self._api_host

    async def completion_events(
        self, *, idle_timeout: float | None = None, on_open: Callable[[], None] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """`GET /events` (Server-Sent Events): yields each `media_generation_completed` payload.
        `on_open` is called once the stream answered 200; a stream silent for `idle_timeout` s (Oxen
        sends a keep-alive comment every 15 s when idle, oxen-api.md §3.5) counts as broken. Raises
        BackendError when the stream cannot be opened or breaks; ends when the server closes it."""
        headers = {"Authorization": f"Bearer {self._key}"}
        timeout = httpx.Timeout(30.0, read=idle_timeout)
        try:
            async with aconnect_sse(
                self._http, "GET", self._base + "/events", headers=headers, timeout=timeout
            ) as source:
                if source.response.status_code != 200:
                    raise classify_failure(
                        source.response.status_code, "the completion event stream is unavailable"
                    )
                if on_open is not None:
                    on_open()
                async for event in source.aiter_sse():
                    if event.event != "media_generation_completed":
                        continue
                    try:
                        payload = event.json()
                    except ValueError:
                        log.warning("ignoring a malformed completion event")
                        continue
                    if isinstance(payload, dict):
                        yield payload
        except httpx.TransportError as exc:  # SSEError is one too
            raise BackendError(
                FailureKind.UNAVAILABLE, f"The completion event stream broke ({type(exc).__name__})."
            ) from None

    def repo_file_url(self, repo: str, path: str) -> str:
        """The download URL of `path` on the main branch of Oxen repository `repo` (oxen-api.md §4.4)."""
        return f"{self._base}/repos/{repo}/file/main/{quote(path)}"

    async def upload_repo_file(self, repo: str, folder: str, name: str, data: bytes, mimetype: str) -> str:
        """Commit `data` as `folder/name` on the main branch of Oxen repository `repo`; returns its
        download URL. The file goes in the multipart field `files[]`, whose target is the folder (the
        server names the file after the part's filename); the single-path field `file` is deprecated
        server-side (oxen-api.md §4.4)."""
        folder_path = f"/repos/{repo}/file/main/{quote(folder)}"
        await self._call(
            "PUT",
            folder_path,
            route="repo_upload",
            files={"files[]": (name, data, mimetype)},
            data={
                "message": "Dreamboard reference image",
                "name": "Dreamboard",
                "email": "dreamboard@localhost",
            },
        )
        return self.repo_file_url(repo, f"{folder}/{name}")

    async def _call(
        self, method: str, path: str, *, route: str, model: str = "", **request: Any
    ) -> httpx.Response:
        submission = route in SUBMISSION_ROUTES
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            retry_after: str | None = None
            try:
                response = await self._http.request(
                    method, self._base + path, headers={"Authorization": f"Bearer {self._key}"}, **request
                )
            except httpx.TransportError as exc:
                self._record(route, "transport_error", started)
                name = type(exc).__name__
                if submission and not isinstance(exc, _NEVER_SENT):
                    raise SubmissionUnknownError(
                        FailureKind.UNAVAILABLE, f"Oxen.ai did not answer the submission ({name})."
                    ) from None
                failure: BackendError = BackendError(
                    FailureKind.UNAVAILABLE, f"Oxen.ai did not answer ({name})."
                )
            else:
                outcome = str(response.status_code)
                self._record(route, outcome, started)
                if response.status_code < 400:
                    return response
                detail = self._redactor.redact(error_detail(response))
                failure = classify_failure(response.status_code, detail, model_id=model, route=route)
                retry_after = response.headers.get("Retry-After")
                if submission and response.status_code >= 500:
                    raise SubmissionUnknownError(failure.kind, failure.user_message)
                if response.status_code != 429 and response.status_code < 500:
                    raise failure
            if attempt >= self._retry.attempts:
                raise failure
            delay = self._retry.delay(attempt, retry_after)
            log.warning("oxen %s %s: %s, retry %d in %.1fs", method, route, failure.kind, attempt, delay)
            await asyncio.sleep(delay)

    def _record(self, route: str, outcome: str, started: float) -> None:
        self._metrics.observe("dreamboard_oxen_request_seconds", time.perf_counter() - started, route=route)
        self._metrics.inc("dreamboard_oxen_requests_total", route=route, outcome=outcome)


_Model = TypeVar("_Model", bound=BaseModel)


def _parse(model: type[_Model], response: httpx.Response) -> _Model:
    try:
        return model.model_validate_json(response.content)
    except ValidationError:
        raise BackendError(
            FailureKind.UNAVAILABLE, "Oxen.ai sent an answer Dreamboard does not understand."
        ) from None
