"""OxenBackend: the ImageBackend the pipeline uses, on Oxen.ai's async queue (oxen-api.md §3).

Submissions are reconciled rather than repeated: `find_submitted` lists the account's generations
(`GET /ai/queue`, which returns the original parameters with each row, §3.2) and matches them on
model, prompt, seed and references. Completion events wake waiters early; polling stays the truth,
on a schedule aimed at the model's usual end when the event stream is down (poll_schedule.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bot.backends.base import BackendError, FailureKind, Outcome, ResultImage
from bot.backends.model_schema import PayloadPlan, plan_payload
from bot.backends.oxen import OxenClient, QueueRow, classify_failure
from bot.backends.oxen_events import IDLE_TIMEOUT, CompletionWatcher
from bot.backends.poll_schedule import Clock, PollSchedule
from bot.domain.images import ImageRejectedError, identify_image
from bot.domain.requests import Limits
from bot.domain.secrets import Redactor

MAX_RESULT_BYTES = 64 * 1024 * 1024
CLOCK_SKEW = 120.0
"""How far Oxen's `enqueued_at` may lag our own marker and still count as the same submission."""
_SEARCHED_STATUSES = (None, "succeeded", "failed")
_MATCHED_FIELDS = ("prompt", "seed", "size", "aspect_ratio")
_REFERENCE_FIELDS = ("input_image", "input_images")


class OxenBackend:
    """Seedream (and other image models) on Oxen.ai."""

    def __init__(
        self,
        client: OxenClient,
        *,
        redactor: Redactor,
        poll_interval: float = 3.0,
        idle_timeout: float = IDLE_TIMEOUT,
        clock: Clock = time.monotonic,
    ) -> None:
        self._client = client
        self._clock = clock
        self._events = CompletionWatcher(client, idle_timeout=idle_timeout, clock=clock)
        self._schedule = PollSchedule(slowest=poll_interval, clock=clock)
        self._redactor = redactor

    def start(self) -> None:
        """Start listening to completion events."""
        self._events.start()

    async def stop(self) -> None:
        """Stop listening to completion events."""
        await self._events.stop()

    def limits(self, model: str) -> Limits:
        """Bounds from the model's cached schema, or defaults before it was fetched."""
        schema = self._client.cached_schema(model)
        return schema.limits if schema else Limits()

    async def plan(
        self, model: str, *, prompt: str, size: str, aspect_ratio: str | None, references: Sequence[str]
    ) -> PayloadPlan:
        """Map the request onto the model's live schema, refusing what it would fail on later."""
        schema = await self._client.model_schema(model)
        if size not in schema.limits.sizes:
            raise BackendError(FailureKind.INVALID, f"`{model}` does not offer size {size}.")
        plan = plan_payload(
            schema, prompt=prompt, size=size, aspect_ratio=aspect_ratio, references=references
        )
        if len(plan.base["prompt"]) > schema.limits.prompt_max:
            raise BackendError(
                FailureKind.INVALID,
                f"The prompt is longer than the {schema.limits.prompt_max:,} characters allowed.",
            )
        return plan

    async def submit(self, body: Mapping[str, Any]) -> str:
        """`POST /ai/queue` for one generation; its generation id is the handle."""
        [generation_id] = await self._client.enqueue(body)
        # Timed from the answer: a busy process that sends late errs towards polling a little late,
        # never towards an early miss that costs a whole second.
        self._schedule.submitted(generation_id, str(body["model"]), self._clock())
        return generation_id

    async def find_submitted(self, body: Mapping[str, Any], *, since: float) -> list[str]:
        """Generations of this account that match `body` and were enqueued after `since`, oldest first."""
        model = str(body["model"])
        rows: dict[str, QueueRow] = {}
        for status in _SEARCHED_STATUSES:
            for row in await self._client.list_generations(model=model, status=status):
                rows[row.generation_id] = row
        matches = [row for row in rows.values() if _same_submission(row, body, since)]
        matches.sort(key=lambda row: float(getattr(row, "enqueued_at", 0) or 0))
        return [row.generation_id for row in matches]

    async def wait(self, handle: str, *, within: float, look_first: bool = False) -> Outcome | None:
        """Poll the generation when its schedule says (woken early by its completion event), until it
        finished or `within` s passed. The poll is the truth; the event only saves waiting. No two polls
        of one generation are less than a second apart. `look_first` polls at once (after a restart)."""
        deadline = self._clock() + within
        if look_first:
            self._schedule.woken(handle, self._clock())
        while True:
            arrived = self._events.completed_at(handle)
            if arrived is not None:
                self._schedule.woken(handle, arrived)
            now = self._clock()
            due = self._schedule.due(handle, stream_up=self._events.connected)
            if due > now:
                if now >= deadline:
                    return None
                arrived = await self._events.wait(handle, within=min(due, deadline) - now)
                if arrived is not None:
                    self._schedule.woken(handle, arrived)
                if self._clock() < due:
                    continue
            sent_at = self._schedule.polling(handle)
            try:
                row = await self._client.poll(handle)
            except BaseException:
                self._schedule.unanswered(handle)
                raise
            self._schedule.answered(handle, sent_at=sent_at, finished=row.finished)
            if row.finished:
                return self._outcome(row)

    def _outcome(self, row: QueueRow) -> Outcome:
        if row.status == "succeeded":
            if row.result_url:
                return Outcome(result_url=row.result_url)
            return Outcome(
                failure=BackendError(
                    FailureKind.NO_RESULT, "Oxen.ai reported the image as finished but sent no result."
                )
            )
        if row.status == "cancelled":
            return Outcome(
                failure=BackendError(FailureKind.UNAVAILABLE, "The generation was cancelled at Oxen.ai.")
            )
        reason = self._redactor.redact(row.error_message or "no reason given")
        return Outcome(failure=classify_failure(None, reason))

    async def cancel(self, handle: str) -> None:
        """`DELETE /ai/queue/{id}`."""
        self._schedule.forget(handle)
        await self._client.cancel(handle)

    async def fetch_result(self, url: str, folder: Path, stem: str) -> ResultImage:
        """Stream the result to disk (size-capped), then name and type it from its bytes (Pillow);
        the Content-Type is only quoted in the message when the bytes are not an image."""
        partial = folder / f"{stem}.part"
        async with self._client.download(url) as response:
            content_type = response.headers.get("content-type", "unknown").split(";")[0].strip()
            written = 0
            with partial.open("wb") as sink:
                async for chunk in response.aiter_bytes(256 * 1024):
                    written += len(chunk)
                    if written > MAX_RESULT_BYTES:
                        raise BackendError(
                            FailureKind.NOT_AN_IMAGE,
                            f"Oxen.ai's result `{stem}` is implausibly large; nothing was uploaded.",
                        )
                    sink.write(chunk)
        try:
            kind = await asyncio.to_thread(identify_image, partial)
        except ImageRejectedError as exc:
            raise BackendError(
                FailureKind.NOT_AN_IMAGE,
                f"Oxen.ai's result `{stem}` {exc} (it was served as {content_type}); nothing was uploaded.",
            ) from None
        return ResultImage(partial.rename(folder / f"{stem}{kind.extension}"), kind.mimetype)


def _same_submission(row: QueueRow, body: Mapping[str, Any], since: float) -> bool:
    extra = row.model_extra or {}
    if str(extra.get("model_name", body["model"])) != str(body["model"]):
        return False
    enqueued = extra.get("enqueued_at")
    if not isinstance(enqueued, int | float) or enqueued < since - CLOCK_SKEW:
        return False
    if not all(extra.get(name) == body.get(name) for name in _MATCHED_FIELDS if name in body):
        return False
    return all(_unsigned(extra.get(name)) == _unsigned(body.get(name)) for name in _REFERENCE_FIELDS)


def _unsigned(value: Any) -> list[str]:
    """Reference URLs without their query strings: a signed URL made again after a restart carries a
    new expiry and signature, but names the same bytes."""
    urls = value if isinstance(value, list) else [value] if isinstance(value, str) else []
    return [str(url).split("?", 1)[0] for url in urls]
