"""One-channel bursts against the rate-limited FakeSlack, and the accounting of what each user got.

Shared by tests/scenarios/test_busy_channel.py (scaled speed) and bench/bursts.py (Slack's real speed): a
burst is sent, everyone waits until each request has ended (its status message says Done or Failed, or
its user was told why it did not start), then `account` counts per user what Slack holds.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.features.intake import BUSY_NOTICE
from bot.slack.messages import CARD_EVENT, STATUS_EVENT
from bot.store.model import Job, JobState
from tests.fakes.recorder import Call
from tests.fakes.slack import FakeSlack
from tests.scenarios.harness import is_card, stored_jobs

CHANNEL = "C1"
ENDED_OTHERWISE = ("*Failed*", "*Cancelled*")


@dataclass
class Tally:
    """What a burst left behind, per user and in total."""

    requests: Counter[str] = field(default_factory=Counter)
    jobs: Counter[str] = field(default_factory=Counter)
    told: Counter[str] = field(default_factory=Counter)
    notices: Counter[str] = field(default_factory=Counter)
    images_delivered: int = 0
    images_asked: int = 0
    failed_jobs: list[str] = field(default_factory=list)
    silent: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    wall_time: float = 0.0

    @property
    def silent_losses(self) -> int:
        """Requests that ended with neither images nor a message to their user."""
        return len(self.silent)


def _ended(call: Call) -> bool:
    """A status edit that ends its job (the harness's `is_card`, or Failed / Cancelled)."""
    if call.method != "chat.update":
        return False
    return is_card(call) or any(word in str(call.params.get("text")) for word in ENDED_OTHERWISE)


def private(slack: FakeSlack) -> list[Call]:
    """Messages only their user sees: response_url answers and ephemeral messages."""
    return [c for c in slack.calls if c.method in ("response_url", "chat.postEphemeral")]


def is_busy_notice(call: Call) -> bool:
    """Whether a private message is the "status message is coming" notice (it ends nothing)."""
    return str(call.params.get("text", "")).startswith(BUSY_NOTICE)


def told(slack: FakeSlack) -> list[Call]:
    """Private messages that end a request: why it did not start."""
    return [call for call in private(slack) if not is_busy_notice(call)]


async def settle(slack: FakeSlack, expected: int, *, timeout: float) -> None:
    """Wait until `expected` requests have ended (a terminal status edit each, or a message to its user)
    and Slack has shared every upload (shares land after the job's end, as in Slack)."""

    def settled() -> bool:
        ended = {str(call.params.get("ts")) for call in slack.calls if _ended(call)}
        return len(ended) + len(told(slack)) >= expected

    await slack.recorder.wait_until(settled, timeout=timeout)
    await slack.wait_shared(timeout=timeout)


def _tagged(message: dict[str, Any], event_type: str) -> str | None:
    metadata = message.get("metadata") or {}
    if metadata.get("event_type") != event_type:
        return None
    return str((metadata.get("event_payload") or {}).get("job_id"))


async def account(
    slack: FakeSlack,
    database: Path,
    requests: Counter[str],
    images_per_request: int,
    response_users: dict[str, str] | None = None,
) -> Tally:
    """Count, per user (a response_url answer is mapped to its command's user by the URL's path in
    `response_users`), jobs stored and messages told; and per job its status messages, uploads and cards
    as Slack holds them (a result card may be its own message or the status message rewritten). A request
    is silently lost when it made no delivered job and its user was told
    nothing; a duplicate is a second job for one request, or a second status/upload/card for one job."""
    tally = Tally(requests=Counter(requests), images_asked=sum(requests.values()) * images_per_request)
    jobs: list[Job] = [job for job, _ in await stored_jobs(database)]
    for job in jobs:
        tally.jobs[job.user_id] += 1
    for call in private(slack):
        user = str(call.params.get("user") or (response_users or {}).get(call.path))
        (tally.notices if is_busy_notice(call) else tally.told)[user] += 1
    messages = slack.messages(CHANNEL)
    statuses = Counter(tag for m in messages if (tag := _tagged(m, STATUS_EVENT)))
    cards = Counter(tag for m in messages if (tag := _tagged(m, CARD_EVENT)))
    by_file = {file_id: m for m in messages for file_id in m.get("files", [])}
    for job in jobs:
        images = await _images_of(database, job.id)
        shared = {by_file[f]["ts"] for f in images if f in by_file}
        if job.state is JobState.UPLOADED:
            tally.images_delivered += len(images)
        elif job.state is JobState.FAILED:
            tally.failed_jobs.append(f"{job.id}: {job.error}")
        if statuses[job.id] > 1 or cards[job.id] > 1 or len(shared) > 1:
            tally.duplicates.append(
                f"job {job.id}: {statuses[job.id]} status, {len(shared)} uploads, {cards[job.id]} cards"
            )
        if job.state is JobState.UPLOADED and not shared:
            tally.silent.append(f"job {job.id} uploaded but its images are not in the channel")
    for user, asked in tally.requests.items():
        accounted = tally.jobs[user] + tally.told[user]
        if accounted < asked:
            tally.silent.append(f"{user}: {asked - accounted} of {asked} requests vanished")
        if accounted > asked:
            tally.duplicates.append(f"{user}: {accounted} jobs and messages for {asked} requests")
        if tally.notices[user] > asked:
            tally.duplicates.append(f"{user}: {tally.notices[user]} busy notices for {asked} requests")
    return tally


async def _images_of(database: Path, job_id: str) -> list[str]:
    """The file ids recorded for a job's images."""
    for job, images in await stored_jobs(database):
        if job.id == job_id:
            return [str(image.file_id) for image in images if image.file_id]
    return []


async def spread(sends: Sequence[Callable[[], Awaitable[Any]]], within: float) -> list[Any]:
    """Start each send at an even offset over `within` seconds, all running at once."""
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def at(index: int, send: Callable[[], Awaitable[Any]]) -> Any:
        await asyncio.sleep(max(0.0, start + index * within / max(1, len(sends)) - loop.time()))
        return await send()

    return await asyncio.gather(*(at(i, send) for i, send in enumerate(sends)))


def describe(tally: Tally) -> str:
    """A one-paragraph summary for assertion messages."""
    return json.dumps(
        {
            "requests": sum(tally.requests.values()),
            "jobs": sum(tally.jobs.values()),
            "told": sum(tally.told.values()),
            "busy_notices": sum(tally.notices.values()),
            "images": f"{tally.images_delivered}/{tally.images_asked}",
            "failed": tally.failed_jobs,
            "silent": tally.silent,
            "duplicates": tally.duplicates,
        },
        indent=1,
    )
