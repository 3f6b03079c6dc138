"""Dreamboard's domain types: jobs, their images and the bot's messages about them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from bot.domain.kits import sent_references


class JobState(StrEnum):
    """A job's lifecycle: queued → running → uploaded, or failed / cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    UPLOADED = "uploaded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class MessageKind(StrEnum):
    """Dreamboard's messages about a job: reactions on any of them act on the job."""

    STATUS = "status"
    CARD = "card"
    UPLOAD = "upload"


class ImageState(StrEnum):
    """One image of a job, as far as Oxen is concerned."""

    PENDING = "pending"
    SUBMITTED = "submitted"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


UNFINISHED = (JobState.QUEUED, JobState.RUNNING)


@dataclass(frozen=True)
class NewJob:
    """A validated request about to become a stored job."""

    id: str
    team_id: str
    channel_id: str
    user_id: str
    prompt: str
    model: str
    size: str
    aspect_ratio: str | None
    seed: int
    seed_given: bool
    n: int
    thread_ts: str | None = None
    parent_id: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    request_key: str | None = None
    """The Slack request that asked for the job (a trigger id): a second delivery makes no second job."""


@dataclass(frozen=True)
class Hold:
    """A new job's place in the shared line, taken as it is stored: the replica that holds it while
    announcing it (`owner`, until `until`, Unix time), and the user's cap on waiting jobs (None: none)."""

    owner: str
    until: float
    max_waiting: int | None = None


@dataclass(frozen=True)
class QuotaGate:
    """Today's quota check, made inside the transaction that stores a job, so it holds across replicas:
    the user's and the channel's weighted images since `since` (a 4K image counts `weight_4k`) go to
    `admit`, which raises to refuse (it may run more than once when the transaction is retried)."""

    since: float
    weight_4k: int
    admit: Callable[[int, int], object]


@dataclass(frozen=True)
class Line:
    """A snapshot of the shared line: waiting jobs oldest first as (job id, team, user), each user's
    running jobs (held and claimed), and when each user's last job was claimed (Unix time)."""

    waiting: list[tuple[str, str, str]]
    running: dict[tuple[str, str], int]
    served: dict[tuple[str, str], float]


@dataclass(frozen=True)
class JobImage:
    """One image of a job: its seed, its generation at the image backend and its Slack file."""

    job_id: str
    idx: int
    seed: int
    state: ImageState
    generation_id: str | None
    error: str | None
    file_id: str | None
    result_url: str | None = None
    result_url_at: float | None = None
    submit_started_at: float | None = None
    reference_key: str | None = None
    """The content key of the result's bytes in the reference cache (features/references.py)."""
    reference_mimetype: str | None = None

    @property
    def submission_unknown(self) -> bool:
        """A submission was started but its generation id never recorded: it may exist at the backend."""
        return self.generation_id is None and self.submit_started_at is not None


@dataclass(frozen=True)
class Job:
    """A stored generation job."""

    id: str
    team_id: str
    channel_id: str
    thread_ts: str | None
    status_ts: str | None
    card_ts: str | None
    user_id: str
    prompt: str
    model: str
    size: str
    aspect_ratio: str | None
    seed: int
    seed_given: bool
    n: int
    params: dict[str, Any]
    notes: list[str]
    state: JobState
    error: str | None
    parent_id: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    deleted_at: float | None = None
    deleted_by: str | None = None
    upload_ts: str | None = None
    card_claimed_at: float | None = None

    @property
    def finished(self) -> bool:
        """Whether the job reached a terminal state."""
        return self.state not in UNFINISHED

    @property
    def root_ts(self) -> str | None:
        """The thread the job's messages live in (its own status message when it started one)."""
        return self.thread_ts or self.status_ts

    @property
    def reference_sources(self) -> list[dict[str, Any]]:
        """The stored reference descriptions Oxen gets (see features/references.ReferenceSource): the
        job's own, then the pins its channel kit gave it (domain/kits.py)."""
        return [dict(source) for source in sent_references(self.params)]


# -- permutation sets --


@dataclass(frozen=True)
class PermutationSet:
    """One `/imagine` with braces: its jobs share a thread, and a contact sheet is posted there once."""

    id: str
    team_id: str
    channel_id: str
    user_id: str
    template: str
    request_key: str | None
    root_ts: str | None
    """The set's status message, the thread root of its jobs (None until it is posted)."""
    abandoned_at: float | None
    sheet_file_id: str | None
    """The sheet's Slack file, recorded before its upload is completed (the step log's marker)."""
    sheet_ts: str | None
    sheet_posted_at: float | None
    """When the sheet's upload was completed, or the set closed without one (no variant made an image)."""
    created_at: float


@dataclass(frozen=True)
class SetVariant:
    """One combination of a set, its label (the chosen options, "red, rain"), and its job (None once the
    job was discarded unstarted)."""

    set_id: str
    number: int
    label: str
    job_id: str | None


@dataclass(frozen=True)
class SheetTile:
    """A numbered tile of a contact sheet: which variant, job and image it shows (None: a missing tile)."""

    set_id: str
    tile: int
    number: int
    job_id: str | None
    image_idx: int | None
    label: str
