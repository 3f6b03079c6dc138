"""FakeOxen: a loopback Oxen.ai inference API (queue + sync + models) with Seedream 4.5's schema
fixtures, deterministic PNG results, latency and fault injection (oxen-api.md §8).

Doc references are to ../shared/docs/oxen-api.md (from the repo root). Where that document is silent the
fake picks the stricter behaviour and says so next to the code."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
from aiohttp import web
from PIL import Image, UnidentifiedImageError

from tests.fakes.images import dimensions, render_png, textured_png
from tests.fakes.recorder import Call, Recorder, drop_connection, take_fault

SCHEMA_CURRENT: dict[str, Any] = {
    "type": "object",
    "required": ["prompt"],
    "basic": ["prompt", "input_image"],
    "properties": {
        "prompt": {
            "type": "string",
            "x-order": 0,
            "description": (
                "Text prompt for image generation. Use @Image1, @Image2, etc. to reference the input images."
            ),
        },
        "input_image": {
            "type": "array",
            "x-order": 1,
            "items": {"type": "string", "format": "uri", "renderType": "image-url"},
            "maxItems": 14,
            "description": "Optional reference image URLs for image-to-image editing. Up to 14 images.",
        },
        "size": {
            "type": "string",
            "x-order": 2,
            "enum": ["2K", "4K"],
            "default": "2K",
            "description": "Image resolution.",
        },
        "watermark": {
            "type": "boolean",
            "x-order": 3,
            "default": False,
            "description": "Whether to add an 'AI generated' watermark.",
        },
    },
}
SCHEMA_APRIL: dict[str, Any] = {
    "type": "object",
    "required": ["prompt"],
    "basic": ["prompt", "input_image", "aspect_ratio", "size"],
    "properties": {
        "prompt": {"type": "string", "x-order": 0, "description": "Text prompt for image generation"},
        "input_image": {
            "type": "array",
            "x-order": 1,
            "items": {"type": "string", "renderType": "image-url"},
            "description": "Input images to transform or use as reference (supports multiple image urls)",
        },
        "aspect_ratio": {
            "type": "string",
            "x-order": 2,
            "enum": ["1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "match_input_image"],
            "default": "1:1",
            "description": "Image aspect ratio",
        },
        "size": {
            "type": "string",
            "x-order": 3,
            "enum": ["2K", "4K"],
            "default": "4K",
            "description": "Image resolution: 2K (2048px) or 4K (4096px)",
        },
        "seed": {
            "type": "integer",
            "x-order": 4,
            "description": "Random seed. Set for reproducible generation",
        },
    },
}
QUEUE_FIELDS = frozenset({"model", "num_generations", "target_namespace", "response_format"})
# oxen-api.md §3.2: the list's documented query parameters and the values of its enums.
LIST_PARAMS = frozenset({"namespace", "model", "status", "media_type", "repo", "folder"})
STATUSES = ("queued", "processing", "succeeded", "failed", "cancelled")
ACTIVE = frozenset({"queued", "processing"})
MEDIA_TYPES = frozenset({"image", "video"})
# A 502/503/504 comes from the gateway in front of the API, not from the API itself; oxen-api.md §1.3
# documents no body for them, so the fake answers with an HTML page (stricter: a client must not assume JSON).
GATEWAY_PAGE = (
    "<html><head><title>{status} {reason}</title></head><body><center><h1>{status} {reason}</h1></center>"
    "<hr><center>nginx</center></body></html>"
)
# What a result URL answers as HTML when a test asks for it (an expired or sign-in page, not an image).
RESULT_HTML_PAGE = (
    "<!DOCTYPE html><html><head><title>Oxen.ai</title></head><body>This link has expired.</body></html>"
)
RESULT_URL_LIFETIME = 3600.0
"""Seconds a result URL stays valid. oxen-api.md §2.3 ("a temporary link that expires after a period of
time") and §3.5 ("Presigned … Expires after a limited time") state no lifetime (§9 q5); one hour is the
fake's choice, and tests shorten it."""
# A presigned URL past its expiry, or with a signature that does not match, is refused by the object store
# behind it with 403 and an XML error document (the shape of S3-style presigned URLs; oxen-api.md §3.5 calls
# the URL presigned but documents no answer). Stricter than a JSON envelope: a client must not parse it.
PRESIGNED_REFUSAL = (
    '<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'
)


@dataclass
class Generation:
    """One queued generation."""

    id: str
    params: dict[str, Any]
    enqueued_at: float
    status: str = "queued"
    error_message: str | None = None
    started_at: float | None = None
    completed_at: float | None = None
    forced_error: str | None = None
    finishing: bool = False
    no_result: bool = False
    result_url: str | None = None
    """The URL signed when the generation finished (what its row and its event carry)."""


@dataclass
class _Fault:
    status: int | None
    times: int
    retry_after: float | None
    body: dict[str, Any] | None
    delay: float
    after: bool = False
    drop: bool = False


@dataclass
class _ResultOverride:
    content_type: str
    body: bytes | None
    times: int


class FakeOxen:
    """Use as `async with FakeOxen() as oxen:`; point the bot at `oxen.url`."""

    def __init__(
        self,
        *,
        api_key: str = "oxen-test-key",
        schema: Literal["april", "current"] = "current",
        schema_key: Literal["request_schema", "json_request_schema"] = "request_schema",
        latency: float = 0.0,
        image_scale: float = 1 / 64,
        queue_enabled: bool = True,
        result_auth_required: bool = True,
        result_url_lifetime: float = RESULT_URL_LIFETIME,
        resign_result_urls: bool = False,
        textured: bool = False,
    ) -> None:
        """`result_auth_required`: result URLs answer 401 without the Bearer key (oxen-api.md §2.3, a
        second-hand live report; on by default, the stricter reading). `result_url_lifetime`: seconds a
        signed result URL is valid (§2.3, §3.5; see RESULT_URL_LIFETIME). `resign_result_urls`: whether
        `GET /ai/queue/{id}` signs a fresh URL each time; §3.3 says a later GET "probably" does, unverified
        (§9 q5), so by default the row keeps the URL signed at completion, which expires (stricter)."""
        self.api_key = api_key
        self.schema = schema
        self.schema_key = schema_key
        self.latency = latency
        self.image_scale = image_scale
        self.queue_enabled = queue_enabled
        self.result_auth_required = result_auth_required
        self.result_url_lifetime = result_url_lifetime
        self.resign_result_urls = resign_result_urls
        self._clock_offset = 0.0
        self._signing_key = secrets.token_bytes(16)
        self.textured = textured
        self.recorder = Recorder()
        self.namespace = "test-user"
        self.list_order: Literal["oldest_first", "newest_first"] = "oldest_first"
        self.billed: list[str] = []
        self.generations: dict[str, Generation] = {}
        self.activity: list[tuple[str, int]] = []
        """Each queued generation becoming active (+1, when POST /ai/queue creates it) and leaving the
        active statuses `queued`/`processing` (-1, on reaching `succeeded`, `failed` or `cancelled`,
        oxen-api.md §3.2, §3.3), as (generation id, change), in the order it happened."""
        self.extra_models: dict[str, dict[str, Any]] = {}
        self.root = ""
        self._results: dict[str, bytes] = {}
        self._faults: dict[str, list[_Fault]] = {}
        self._fail_next: list[str] = []
        self._no_result_next = 0
        self._result_overrides: dict[str, list[_ResultOverride]] = {}
        self._released = asyncio.Event()
        self._released.set()
        self.events_enabled = True
        # oxen-api.md §3.5: an idle stream carries a `: keep-alive` comment every 15 s; tests scale it
        # down. None: a stream that goes silent (a dead connection the bot must notice).
        self.keepalive_interval: float | None = 15.0
        self.keepalives_sent = 0
        self._subscribers: list[asyncio.Queue[dict[str, Any]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.repo_files: dict[str, bytes] = {}
        self.repo_commits: list[str] = []
        """The repository file each committed `files[]` part became, in commit order."""
        self.fetched_references: list[list[bytes]] = []
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> FakeOxen:
        app = web.Application(handler_args={"handler_cancellation": True})
        app.router.add_get("/api/ai/models/{model_id}", self._model)
        app.router.add_post("/api/ai/queue", self._enqueue)
        app.router.add_get("/api/ai/queue", self._list)
        app.router.add_get("/api/ai/queue/{generation_id}", self._get)
        app.router.add_delete("/api/ai/queue/{generation_id}", self._cancel)
        app.router.add_post("/api/ai/images/generate", self._sync)
        app.router.add_post("/api/ai/images/edit", self._sync)
        app.router.add_get("/results/{name}", self._result)
        app.router.add_get("/api/events", self._events)
        app.router.add_put("/api/repos/{namespace}/{repo}/file/{branch}/{path:.*}", self._repo_put)
        app.router.add_get("/api/repos/{namespace}/{repo}/file/{branch}/{path:.*}", self._repo_get)
        self._http = aiohttp.ClientSession()
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.root = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *_: object) -> None:
        self._released.set()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def url(self) -> str:
        """The OXEN_API_URL value."""
        return self.root + "/api"

    @property
    def submissions(self) -> list[dict[str, Any]]:
        """Bodies of every `POST /ai/queue`, in order."""
        return [call.params for call in self.recorder.calls_to("POST /ai/queue")]

    @property
    def sync_calls(self) -> list[Call]:
        """Every sync generate/edit call."""
        return [
            c for c in self.recorder.calls if c.method in ("POST /ai/images/generate", "POST /ai/images/edit")
        ]

    # -- test controls ---------------------------------------------------------------------------

    def now(self) -> float:
        """The fake's clock for result URL expiry (wall time moved on by `advance`)."""
        return time.time() + self._clock_offset

    def advance(self, seconds: float) -> None:
        """Move the fake's clock on by `seconds`: result URLs signed before then may have expired."""
        self._clock_offset += seconds

    def peak_in_flight(self, prompt_prefix: str = "") -> int:
        """The most generations whose prompt starts with `prompt_prefix` that were active (queued or
        processing) at one moment, over the fake's whole life (see `activity`)."""
        active = peak = 0
        for generation_id, change in self.activity:
            if str(self.generations[generation_id].params.get("prompt", "")).startswith(prompt_prefix):
                active += change
                peak = max(peak, active)
        return peak

    def result_bytes(self, generation_id: str) -> bytes:
        """The image a generation made (what its result URL serves)."""
        return self._results[generation_id]

    def hold(self) -> None:
        """Keep every generation `processing` until `release()`."""
        self._released.clear()

    def release(self) -> None:
        """Let held generations finish."""
        self._released.set()

    def fail_generations(self, message: str, times: int = 1) -> None:
        """Make the next `times` generations end `failed` with `message` as error_message."""
        self._fail_next.extend([message] * times)

    def add_model(self, model_id: str, schema: dict[str, Any]) -> None:
        """Serve another model with this request schema."""
        self.extra_models[model_id] = schema

    def succeed_without_result(self, times: int = 1) -> None:
        """Make the next `times` queued generations end `succeeded` with `result_url: null` (and no `url` in
        their SSE event). No source says Oxen does this; §3.3 only shows `result_url` on success, so a client
        must not crash on its absence. Sync calls are not affected."""
        self._no_result_next += times

    def serve_result_as(self, content_type: str, body: bytes | None = None, *, times: int = -1) -> None:
        """Serve the next `times` (-1: all) result downloads (`GET result`) with status 200 and this
        Content-Type: with `body` when given, else the real image bytes, or an HTML "link expired" page
        when `content_type` is text/html. Models oxen-api.md §2.3 ("the URL is temporary") and §0.4 ("handle
        any image content type"): e.g. `application/octet-stream` image bytes, or an HTML page instead of
        an image."""
        self._result_overrides.setdefault("GET result", []).append(_ResultOverride(content_type, body, times))

    def fault(
        self,
        route: str,
        *,
        status: int | None = None,
        times: int = 1,
        retry_after: float | None = None,
        body: dict[str, Any] | None = None,
        delay: float = 0.0,
        after: bool = False,
        drop: bool = False,
    ) -> None:
        """Inject a fault into the next `times` (-1: all) calls of `route`.

        Route keys: "POST /ai/queue", "GET /ai/queue list" (the list), "GET /ai/queue" (one generation),
        "DELETE /ai/queue", "POST /ai/images/generate", "POST /ai/images/edit", "GET /ai/models",
        "GET /events", "PUT repo file", "GET result".

        By default the fault answers INSTEAD of processing: wait `delay` seconds, then answer `status`
        (with `body`, or a realistic error body), or close the connection without an answer (`drop=True`);
        with neither, the call is processed after the delay (if the client still waits).

        `after=True` means "processed, answer lost": the request is fully processed first (a queued
        generation exists, will run and is billed; a sync image is generated and billed), then the answer
        is replaced: wait `delay` (long enough, the client's read times out or the process is killed while
        waiting), then `status`, or a dropped connection, or, with neither, the real answer, late.
        oxen-api.md §2.5: "A timed-out sync call may still complete and bill"; no idempotency key exists.
        """
        if status is not None and drop:
            raise ValueError("a fault either answers a status or drops the connection")
        if body is not None and status is None:
            raise ValueError("a fault body needs a status")
        if status is None and not drop and not delay:
            raise ValueError("a fault needs a status, drop=True or a delay")
        if after and status == 429:
            # A rate-limited request is refused, not processed (oxen-api.md §1.3, §0.7).
            raise ValueError("a 429 means the request was not processed; after=True cannot model it")
        if after and route == "GET /events":
            raise ValueError("the event stream never finishes, so it has no answer to lose")
        self._faults.setdefault(route, []).append(
            _Fault(status, times, retry_after, body, delay, after=after, drop=drop)
        )

    # -- plumbing --------------------------------------------------------------------------------

    def _schema_for(self, model_id: str) -> dict[str, Any] | None:
        if model_id == "bytedance-seedream-4-5":
            return SCHEMA_APRIL if self.schema == "april" else SCHEMA_CURRENT
        return self.extra_models.get(model_id)

    async def _serve(
        self,
        request: web.Request,
        route: str,
        method: str,
        params: dict[str, Any],
        work: Callable[[], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """Record the call, apply a fault meant to answer instead, check auth, do the work, then apply a
        fault meant to replace the answer (`after=True`)."""
        headers = {key.lower(): value for key, value in request.headers.items()}
        await self.recorder.record(Call(method, params, headers))
        fault = take_fault(self._faults, route)
        if fault is not None and not fault.after:
            answer = await self._fault_answer(request, fault)
            if answer is not None:
                return answer
        # oxen-api.md §1.1: every call carries the bearer key; §1.3: 401 `unauthenticated`. Result URLs are
        # presigned links (§2.3) and have their own check (`result_auth_required`).
        if route != "GET result" and headers.get("authorization") != f"Bearer {self.api_key}":
            return web.json_response(_envelope(401, "unauthenticated"), status=401)
        response = await work()
        if fault is not None and fault.after:
            answer = await self._fault_answer(request, fault)
            if answer is not None:
                return answer
        return response

    async def _fault_answer(self, request: web.Request, fault: _Fault) -> web.StreamResponse | None:
        """What a fault answers; None means "go on with the real answer"."""
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.drop:
            return drop_connection(request)
        if fault.status is None:
            return None
        extra = {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
        if fault.body is not None:
            return web.json_response(fault.body, status=fault.status, headers=extra)
        return _error_response(fault.status, extra)

    def _validate(self, params: dict[str, Any]) -> str | None:
        """Model-specific validation as the real backend does it (at run time for the queue)."""
        schema = self._schema_for(str(params.get("model")))
        if schema is None:
            return f"Model not found: {params.get('model')}"
        properties = schema["properties"]
        for name, value in params.items():
            if name in QUEUE_FIELDS:
                continue
            spec = properties.get(name)
            if spec is None:
                return f"Getting model response error: 422 - Extra inputs are not permitted: {name}"
            if "enum" in spec and value not in spec["enum"]:
                return f"Getting model response error: 422 - {name} must be one of {spec['enum']}"
            expected = {"string": str, "array": list, "integer": int, "boolean": bool}.get(
                spec.get("type", "")
            )
            if expected is not None and not isinstance(value, expected):
                return f"Getting model response error: 422 - {name} must be of type {spec['type']}"
            if isinstance(value, list) and len(value) > spec.get("maxItems", 10**6):
                return f"Getting model response error: 422 - {name} allows at most {spec['maxItems']} items"
        if not str(params.get("prompt") or "").strip():
            return "Prompt cannot be empty"
        return None

    def _make_result(self, generation_id: str, params: dict[str, Any]) -> str:
        width, height = dimensions(
            str(params.get("size", "2K")), params.get("aspect_ratio"), self.image_scale
        )
        seed = params.get("seed")
        if self.textured:
            png = textured_png(width, height)
        else:
            png = render_png(
                str(params.get("prompt")), seed if isinstance(seed, int) else None, width, height
            )
        self._results[generation_id] = png
        return self._sign_result(generation_id)

    def _sign_result(self, generation_id: str) -> str:
        """A presigned result URL valid for `result_url_lifetime` from now (oxen-api.md §3.5)."""
        expires = int(self.now() + self.result_url_lifetime)
        signature = self._signature(generation_id, expires)
        return f"{self.root}/results/{generation_id}.png?exp={expires}&sig={signature}"

    def _signature(self, generation_id: str, expires: int) -> str:
        return hmac.new(self._signing_key, f"{generation_id}:{expires}".encode(), hashlib.sha256).hexdigest()

    def _presigned_refusal(self, generation_id: str, query: Mapping[str, str]) -> web.Response | None:
        """403 for a result URL whose signature is wrong or whose expiry has passed, else None."""
        try:
            expires = int(query.get("exp", ""))
        except ValueError:
            expires = -1
        if not hmac.compare_digest(self._signature(generation_id, expires), query.get("sig", "")):
            code, message = "SignatureDoesNotMatch", "The request signature does not match"
        elif expires < self.now():
            code, message = "AccessDenied", "Request has expired"
        else:
            return None
        body = PRESIGNED_REFUSAL.format(code=code, message=message)
        return web.Response(text=body, status=403, content_type="application/xml")

    async def _fetch_references(self, params: dict[str, Any]) -> InputProblem | None:
        """Download every reference as Oxen's servers do when the generation runs: anonymously, without
        any key ("The `input_image` URL must be publicly downloadable. URLs that require authentication …
        will fail", oxen-api.md §4.3). None when all worked (their bytes are recorded), else the first
        failure: a non-200 answer in the words of §2.4 ("… 403 Client Error: Forbidden for url: …"; the
        leading words are elided there, so the fake's are its choice), a URL that cannot be reached as
        §1.3 reports it (a 500 "Internal Server Error"), bytes that are not an image as an upstream
        decoder would say it (the docs are silent; the fake refuses, the stricter choice)."""
        urls: list[str] = []
        for name in ("input_image", "input_images"):
            value = params.get(name)
            urls += value if isinstance(value, list) else [value] if isinstance(value, str) else []
        fetched: list[bytes] = []
        for url in urls:
            if url.startswith("data:"):
                data = base64.b64decode(url.split(",", 1)[1])
            else:
                answer = await self._download_input(url)
                if isinstance(answer, InputProblem):
                    return answer
                data = answer
            if not _is_image(data):
                detail = f"Invalid input image: cannot identify image file for url: {url[:80]}"
                return InputProblem(400, f"Getting model response error: 400 - {detail}")
            fetched.append(data)
        self.fetched_references.append(fetched)
        return None

    async def _download_input(self, url: str) -> bytes | InputProblem:
        unreachable = InputProblem(500, "Internal Server Error")
        if not url.startswith("http://127.0.0.1:"):
            return unreachable  # the fake's servers reach only loopback (tests never use the network)
        try:
            async with self._http.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response:
                if response.status != 200:
                    kind = "Client" if response.status < 500 else "Server"
                    reason = response.reason or ""
                    failure = f"{response.status} {kind} Error: {reason} for url: {url}"
                    return InputProblem(400, f"Failed to download input image: {failure}")
                return await response.read()
        except (aiohttp.ClientError, TimeoutError):
            return unreachable

    async def _advance(self, generation: Generation) -> None:
        """Bring a generation up to date: processing once polled, finished once its time has come."""
        if generation.status == "queued":
            generation.status, generation.started_at = "processing", time.time()
        due = self._released.is_set() and time.time() - generation.enqueued_at >= self.latency
        if due and generation.status == "processing":
            await self._finish(generation)

    async def _run(self, generation: Generation) -> None:
        """Finish a generation on its own after `latency` (and `release()`), as the real backend does."""
        await asyncio.sleep(self.latency)
        await self._released.wait()
        await self._advance(generation)

    async def _finish(self, generation: Generation) -> None:
        if generation.finishing:
            return
        generation.finishing = True
        problem = generation.forced_error or self._validate(generation.params)
        if problem is None:
            fetch = await self._fetch_references(generation.params)
            problem = fetch.message if fetch is not None else None
        if generation.status == "cancelled":
            return
        generation.completed_at = time.time()
        self.activity.append((generation.id, -1))
        event: dict[str, Any] = {"generation_id": generation.id, "media_type": "image"}
        if problem is not None:
            generation.status, generation.error_message = "failed", problem
            event.update(status="failed", error=problem)
        else:
            generation.status = "succeeded"
            # Pricing is per image (oxen-api.md §0.6); whether failed or cancelled runs cost anything is an
            # open question (§9 q9), so the fake bills exactly the generations that succeeded.
            self.billed.append(generation.id)
            url = None if generation.no_result else self._make_result(generation.id, generation.params)
            generation.result_url = url
            event.update(status="succeeded", model=generation.params.get("model"), url=url)
        for subscriber in self._subscribers:
            subscriber.put_nowait(event)

    def _row(self, generation: Generation) -> dict[str, Any]:
        """The row of oxen-api.md §3.2/§3.3: `model_name`, not `model`, plus the original enqueue params."""
        extra = {k: v for k, v in generation.params.items() if k not in QUEUE_FIELDS}
        result_url = generation.result_url if generation.status == "succeeded" else None
        if result_url is not None and self.resign_result_urls:
            result_url = self._sign_result(generation.id)
        return {
            **extra,
            "generation_id": generation.id,
            "model_name": generation.params.get("model"),
            "prompt": generation.params.get("prompt"),
            "media_type": "image",
            "status": generation.status,
            "result_url": result_url,
            "error_message": generation.error_message,
            "enqueued_at": int(generation.enqueued_at),
            "started_at": int(generation.started_at) if generation.started_at else None,
            "completed_at": int(generation.completed_at) if generation.completed_at else None,
        }

    def _list_problem(self, query: dict[str, str]) -> str | None:
        """Why a list query is refused. oxen-api.md §3.2 lists the parameters and their values but not what
        a bad value does; the fake refuses it with 400 (stricter than ignoring it)."""
        unknown = sorted(set(query) - LIST_PARAMS)
        if unknown:
            return f"unknown query parameter(s): {', '.join(unknown)}"
        if "status" in query and query["status"] not in STATUSES:
            return f"status must be one of {list(STATUSES)}"
        if "media_type" in query and query["media_type"] not in MEDIA_TYPES:
            return f"media_type must be one of {sorted(MEDIA_TYPES)}"
        if "repo" in query or "folder" in query:
            return "FakeOxen does not model the repo and folder filters"
        return None

    def _listed(self, generation: Generation, query: dict[str, str]) -> bool:
        # §3.2: "when omitted only active rows are returned" (queued or processing).
        if generation.status not in ({query["status"]} if "status" in query else ACTIVE):
            return False
        if "model" in query and generation.params.get("model") != query["model"]:
            return False
        if "media_type" in query and query["media_type"] != "image":
            return False
        # §3.1: results are stored and billed to `target_namespace`, "your username" by default.
        namespace = generation.params.get("target_namespace") or self.namespace
        return "namespace" not in query or query["namespace"] == namespace

    # -- handlers --------------------------------------------------------------------------------

    async def _model(self, request: web.Request) -> web.StreamResponse:
        model_id = request.match_info["model_id"]

        async def work() -> web.StreamResponse:
            schema = self._schema_for(model_id)
            if schema is None:
                return web.json_response({"error": {"message": f"Model not found: {model_id}"}}, status=404)
            return web.json_response(
                {
                    "id": model_id,
                    "object": "model",
                    "created": 1775090372,
                    "owned_by": "oxen",
                    "display_name": "Seedream 4.5",
                    "model_type": "base",
                    "endpoint": "/images/generate",
                    "capabilities": {"input": ["text", "image"], "output": ["image"]},
                    "pricing": {"method": "per_image", "cost_per_image": 0.04},
                    self.schema_key: schema,
                }
            )

        return await self._serve(
            request, "GET /ai/models", "GET /ai/models/{id}", {"model_id": model_id}, work
        )

    async def _enqueue(self, request: web.Request) -> web.StreamResponse:
        params = await request.json()

        async def work() -> web.StreamResponse:
            if not self.queue_enabled:
                # A deployment without the queue route: oxen-api.md documents no body for an unknown
                # route, so the stricter answer is a bare 404 with nothing to parse.
                return web.Response(status=404)
            if self._schema_for(str(params.get("model"))) is None:
                return web.json_response(
                    {"error": {"message": f"Model not found: {params.get('model')}"}}, status=404
                )
            count = params.get("num_generations", 1)
            if not isinstance(count, int) or not 1 <= count <= 4:
                detail = "num_generations must be an integer between 1 and 4"
                return web.json_response(_envelope(400, "invalid_params", detail), status=400)
            created = []
            for _ in range(count):
                forced = self._fail_next.pop(0) if self._fail_next else None
                generation = Generation(str(uuid.uuid4()), dict(params), time.time(), forced_error=forced)
                if self._no_result_next:
                    self._no_result_next -= 1
                    generation.no_result = True
                self.generations[generation.id] = generation
                self.activity.append((generation.id, 1))
                task = asyncio.create_task(self._run(generation))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                created.append({"generation_id": generation.id, "status": "queued"})
            return web.json_response({"generations": created})

        return await self._serve(request, "POST /ai/queue", "POST /ai/queue", params, work)

    async def _list(self, request: web.Request) -> web.StreamResponse:
        """`GET /api/ai/queue` (oxen-api.md §3.2): `{"count", "generations": [row, ...]}`.

        Listing is a read-only snapshot: unlike `GET /ai/queue/{id}` it never moves a generation from
        queued to processing nor finishes one that is due, so listing cannot change when or how anything
        finishes. Order: the doc states none (its one example is oldest first); the fake lists in enqueue
        order, oldest first, or newest first with `list_order = "newest_first"`, so a test can prove a
        client does not depend on the order. No pagination is documented for this route and none is
        modelled."""
        query = dict(request.query)

        async def work() -> web.StreamResponse:
            if not self.queue_enabled:
                return web.Response(status=404)
            problem = self._list_problem(query)
            if problem is not None:
                return web.json_response(_envelope(400, "invalid_params", problem), status=400)
            generations = list(self.generations.values())
            if self.list_order == "newest_first":
                generations.reverse()
            rows = [self._row(g) for g in generations if self._listed(g, query)]
            return web.json_response({"count": len(rows), "generations": rows})

        return await self._serve(request, "GET /ai/queue list", "GET /ai/queue", query, work)

    async def _get(self, request: web.Request) -> web.StreamResponse:
        generation_id = request.match_info["generation_id"]

        async def work() -> web.StreamResponse:
            generation = self.generations.get(generation_id) if self.queue_enabled else None
            if generation is None:
                return web.json_response(_envelope(404, "resource_not_found"), status=404)
            await self._advance(generation)
            return web.json_response(self._row(generation))

        return await self._serve(
            request, "GET /ai/queue", "GET /ai/queue/{id}", {"generation_id": generation_id}, work
        )

    async def _cancel(self, request: web.Request) -> web.StreamResponse:
        generation_id = request.match_info["generation_id"]

        async def work() -> web.StreamResponse:
            generation = self.generations.get(generation_id)
            if generation is None:
                return web.json_response(_envelope(404, "resource_not_found"), status=404)
            if generation.status in ("queued", "processing"):
                generation.status, generation.completed_at = "cancelled", time.time()
                self.activity.append((generation.id, -1))
            return web.json_response({"status": "success", "generation_id": generation_id})

        params = {"generation_id": generation_id}
        return await self._serve(request, "DELETE /ai/queue", "DELETE /ai/queue/{id}", params, work)

    async def _sync(self, request: web.Request) -> web.StreamResponse:
        """`POST /ai/images/generate|edit` (oxen-api.md §2). Dreamboard never calls it (tests assert
        `sync_calls == []`); bench/baseline.py's peer bot does."""
        params = await request.json()
        route = f"POST {request.path.removeprefix('/api')}"

        async def work() -> web.StreamResponse:
            problem = self._fail_next.pop(0) if self._fail_next else self._validate(params)
            if problem is not None:
                status = 404 if problem.startswith("Model not found") else 400
                return web.json_response(_envelope(status, "invalid_params", problem), status=status)
            fetch = await self._fetch_references(params)
            if fetch is not None and fetch.status == 500:
                return _error_response(500, {})
            if fetch is not None:
                return web.json_response(_envelope(400, "invalid_params", fetch.message), status=400)
            if self.latency:
                await asyncio.sleep(self.latency)
            await self._released.wait()
            generation_id = str(uuid.uuid4())
            self.billed.append(generation_id)
            url = self._make_result(generation_id, params)
            image = (
                {"b64_json": base64.b64encode(self._results[generation_id]).decode()}
                if params.get("response_format") == "b64_json"
                else {"url": url}
            )
            return web.json_response(
                {"model": params.get("model"), "created": int(time.time()), "images": [image]}
            )

        return await self._serve(request, route, route, params, work)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """`GET /api/events`: Server-Sent Events, `media_generation_completed` per finished generation
        (none for cancelled ones; nothing is replayed to a late subscriber), and a `: keep-alive` comment
        after each `keepalive_interval` s without an event (oxen-api.md §3.5)."""

        async def work() -> web.StreamResponse:
            if not self.events_enabled:
                return web.Response(status=404)
            response = web.StreamResponse(
                headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
            )
            await response.prepare(request)
            await response.write(b": keep-alive\n\n")
            queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
            self._subscribers.append(queue)
            await self.recorder.notify()
            try:
                while True:
                    try:
                        event = await asyncio.wait_for(queue.get(), self.keepalive_interval)
                    except TimeoutError:  # idle for a whole interval (§3.5)
                        await response.write(b": keep-alive\n\n")
                        self.keepalives_sent += 1
                        await self.recorder.notify()
                        continue
                    payload = f"event: media_generation_completed\ndata: {json.dumps(event)}\n\n"
                    await response.write(payload.encode())
            finally:
                self._subscribers.remove(queue)

        return await self._serve(request, "GET /events", "GET /events", {}, work)

    def subscriber_count(self) -> int:
        """How many clients listen to `/api/events`."""
        return len(self._subscribers)

    async def _repo_put(self, request: web.Request) -> web.StreamResponse:
        """`PUT /api/repos/{ns}/{repo}/file/{branch}/{dir}`: one commit of the multipart `files[]` parts,
        each stored as `{dir}/{its filename}` (oxen-api.md §4.4; Oxen-AI/Oxen server
        `controllers/file.rs`: a filename is sanitised, a missing one becomes a random name; both
        `file` and `files[]`, or neither, is a 400; the target must not be a file). The server still
        accepts the single-path field `file`, marked deprecated in favour of `files[]`; the fake
        refuses it with a 400 (stricter, so a client relying on the deprecated field fails here)."""
        folder = _repo_key(request)
        fields: dict[str, str] = {}
        parts: list[tuple[str, bytes]] = []
        deprecated = False
        reader = await request.multipart()
        async for part in reader:
            if isinstance(part, aiohttp.BodyPartReader):
                if part.name == "files[]":
                    name = (part.filename or uuid.uuid4().hex).replace("/", "").replace("\\", "")
                    parts.append((name, bytes(await part.read())))
                elif part.name == "file":
                    deprecated = True
                    await part.read()
                else:
                    fields[str(part.name)] = await part.text()

        async def work() -> web.StreamResponse:
            if deprecated:
                detail = "the multipart field `file` is deprecated: use `files[]`"
                return web.json_response(_envelope(400, "invalid_params", detail), status=400)
            if not parts:
                detail = "Missing file data: expected `files[]` multipart parts"
                return web.json_response(_envelope(400, "invalid_params", detail), status=400)
            if folder in self.repo_files:
                detail = "Target path must be a directory"
                return web.json_response(_envelope(400, "invalid_params", detail), status=400)
            for name, content in parts:
                self.repo_files[f"{folder}/{name}"] = content
                self.repo_commits.append(f"{folder}/{name}")
            commit = {
                "id": uuid.uuid4().hex,
                "message": fields.get("message", ""),
                "author": fields.get("name", ""),
            }
            return web.json_response({"status": "success", "commit": commit})

        params: dict[str, Any] = {"key": folder, "field": "file" if deprecated else "files[]", **fields}
        params["files"] = [f"{folder}/{name}" for name, _ in parts]
        return await self._serve(request, "PUT repo file", "PUT repo file", params, work)

    async def _repo_get(self, request: web.Request) -> web.Response:
        """Files of a public repository download without a key."""
        content = self.repo_files.get(_repo_key(request))
        if content is None:
            return web.json_response(_envelope(404, "resource_not_found"), status=404)
        return web.Response(body=content, content_type="application/octet-stream")

    async def _result(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]

        async def work() -> web.StreamResponse:
            # oxen-api.md §2.3 (second-hand): hub.oxen.ai result URLs need the Bearer key; unless a test
            # turns it off, a request without it gets §1.3's 401 `unauthenticated`.
            if self.result_auth_required and request.headers.get("Authorization") != f"Bearer {self.api_key}":
                return web.json_response(_envelope(401, "unauthenticated"), status=401)
            generation_id = name.removesuffix(".png")
            result = self._results.get(generation_id)
            if result is None:
                return web.json_response(_envelope(404, "resource_not_found"), status=404)
            refused = self._presigned_refusal(generation_id, request.query)
            if refused is not None:
                return refused
            override = take_fault(self._result_overrides, "GET result")
            if override is None:
                return web.Response(body=result, content_type="image/png")
            body = override.body
            if body is None:
                body = RESULT_HTML_PAGE.encode() if override.content_type == "text/html" else result
            return web.Response(body=body, headers={"Content-Type": override.content_type})

        return await self._serve(request, "GET result", "GET result", {"name": name}, work)


@dataclass(frozen=True)
class InputProblem:
    """Why a reference could not be fetched: the sync route's HTTP status and the message (a queued
    generation fails with the message as its error_message)."""

    status: int
    message: str


def _is_image(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return False
    return True


def _repo_key(request: web.Request) -> str:
    info = request.match_info
    return f"{info['namespace']}/{info['repo']}/{info['branch']}/{info['path']}"


def _error_response(status: int, headers: dict[str, str]) -> web.Response:
    """A realistic error answer for an injected status. 502/503/504: the gateway's HTML page (see
    GATEWAY_PAGE). Otherwise envelope 1 of oxen-api.md §1.2; for 500 that is type `unknown_error` (one of the
    §1.2 "common error types") titled "Internal server error" (§1.3, the documented 500 text)."""
    if status in (502, 503, 504):
        reason = {502: "Bad Gateway", 503: "Service Temporarily Unavailable", 504: "Gateway Time-out"}[status]
        page = GATEWAY_PAGE.format(status=status, reason=reason)
        return web.Response(text=page, status=status, content_type="text/html", headers=headers)
    return web.json_response(_envelope(status), status=status, headers=headers)


def _envelope(status: int, kind: str | None = None, detail: str | None = None) -> dict[str, Any]:
    kind = kind or {401: "unauthenticated", 404: "resource_not_found", 429: "rate_limited"}.get(
        status, "unknown_error"
    )
    titles = {
        "unauthenticated": "You must be signed in to do that.",
        "resource_not_found": "The requested resource could not be found",
        "rate_limited": "Rate limit exceeded",
        "invalid_params": "Invalid parameters supplied, please check your request and try again.",
    }
    error: dict[str, Any] = {"type": kind, "title": titles.get(kind, "Internal server error")}
    if detail:
        error["detail"] = detail
    return {"error": error, "status": "error", "status_message": kind}
