"""The seam between the job pipeline and an image service: what a backend promises, in its own types.

The pipeline knows only this module. A backend owns its HTTP client, event stream and retries, and
converts every transport error into a `BackendError` with a message a user can read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from bot.domain.requests import Limits


class Meter(Protocol):
    """Where a backend records its request metrics (bot/app/metrics.Metrics in the process)."""

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        """Add to a counter."""
        ...

    def observe(self, name: str, value: float, **labels: str) -> None:
        """Record one observation in a histogram."""
        ...


class FailureKind(StrEnum):
    """Why the image service did not produce an image, as far as the user is concerned."""

    AUTH = "auth"
    CREDITS = "credits"
    CONTENT_POLICY = "content_policy"
    INVALID = "invalid"
    REFERENCE = "reference"
    NOT_FOUND = "not_found"
    UNAVAILABLE = "unavailable"
    PROVIDER = "provider"
    NO_RESULT = "no_result"
    NOT_AN_IMAGE = "not_an_image"


class BackendError(Exception):
    """A failed backend call; `user_message` is complete, readable and free of secrets."""

    def __init__(self, kind: FailureKind, user_message: str) -> None:
        super().__init__(user_message)
        self.kind = kind
        self.user_message = user_message


class SubmissionUnknownError(BackendError):
    """The submission was sent but its answer was lost (read timeout, dropped connection, 5xx): the
    generation may exist. Ask `find_submitted` before submitting again."""


class Plan(Protocol):
    """A request body for one model without its seed, and the notes about flags it could not honour."""

    @property
    def notes(self) -> tuple[str, ...]:
        """What the user must be told about flags the model could not take."""
        ...

    def body_for(self, seed: int) -> dict[str, Any]:
        """The body for one image generated with `seed`."""
        ...


@dataclass(frozen=True)
class Outcome:
    """A finished generation: a result URL, or the failure that ended it."""

    result_url: str | None = None
    failure: BackendError | None = None


@dataclass(frozen=True)
class ResultImage:
    """A downloaded result, checked to be an image; the extension comes from its bytes."""

    path: Path
    mimetype: str


class ImageBackend(Protocol):
    """What the pipeline needs from an image service."""

    def limits(self, model: str) -> Limits:
        """Validation bounds for `model` from what is known now (no I/O)."""
        ...

    async def plan(
        self, model: str, *, prompt: str, size: str, aspect_ratio: str | None, references: Sequence[str]
    ) -> Plan:
        """Map a request onto the model's live parameters; raises BackendError when it cannot run."""
        ...

    async def submit(self, body: Mapping[str, Any]) -> str:
        """Start one generation; its durable handle. Raises SubmissionUnknownError when the outcome of
        the request is not known, BackendError when it certainly did not start."""
        ...

    async def find_submitted(self, body: Mapping[str, Any], *, since: float) -> list[str]:
        """Handles of generations started with `body` no earlier than `since` (Unix time), oldest first."""
        ...

    async def wait(self, handle: str, *, within: float, look_first: bool = False) -> Outcome | None:
        """The outcome once the generation finished, or None if it is still running after waiting up
        to `within` s for it; `look_first` checks before waiting (a generation found after a restart)."""
        ...

    async def cancel(self, handle: str) -> None:
        """Stop a generation that is still running (no effect on finished ones)."""
        ...

    async def fetch_result(self, url: str, folder: Path, stem: str) -> ResultImage:
        """Download a result into `folder` and check it is an image; raises BackendError."""
        ...
