"""UploadMessages: learning the ts of each job's upload message, so reactions on the image act on its job.

`files.completeUploadExternal` answers before Slack has shared the files and never names the message it
posts (slack.md §2.2; python-slack-sdk#1363, #1590). Slack then delivers the bot's own `message` event
(subtype `file_share`) naming the files; the ts is recorded on the job holding them, matched by file id
(the ids are stored before the upload is completed). When no event arrives within `event_wait`,
`files.info` is polled a bounded number of times, as Slack's maintainers advise (python-slack-sdk#1277).
Best effort throughout: a job's delivery never waits for this.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bot.slack.errors import SlackError
from bot.slack.files import SlackFiles
from bot.store.model import Job
from bot.store.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShareTiming:
    """How long to wait for the file_share event, then when to ask files.info (seconds after that)."""

    event_wait: float = 5.0
    polls: tuple[float, ...] = (1.0, 3.0, 10.0)


class UploadMessages:
    """Matches the bot's own file_share events to jobs, with a files.info poll as the fallback."""

    def __init__(
        self,
        *,
        store: Store,
        files: SlackFiles,
        timing: ShareTiming | None = None,
    ) -> None:
        self._store = store
        self._files = files
        self._timing = timing or ShareTiming()
        self._seen: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.on_recorded: list[Callable[[str, str], None]] = []
        """Hooks called with (job id, upload ts) once a job's upload message is recorded."""

    def expect(self, file_ids: Sequence[str]) -> None:
        """Start listening for these files' share (call before completing the upload)."""
        for file_id in file_ids:
            self._seen.setdefault(file_id, asyncio.Event())

    async def observed(self, event: Mapping[str, Any]) -> None:
        """The bot's own file_share message event: record its ts on the job holding its files. Files may
        be full objects or `file_access` stubs; only their ids are read."""
        files = [f for f in event.get("files") or [] if isinstance(f, Mapping) and f.get("id")]
        file_ids = [str(f["id"]) for f in files]
        channel, ts = str(event.get("channel") or ""), str(event.get("ts") or "")
        if not file_ids or not channel or not ts:
            return
        jobs = await self._store.set_upload_ts_for_files(channel, file_ids, ts)
        log.info("upload message %s in %s: files %s, jobs %s", ts, channel, file_ids, jobs or "(known)")
        for job_id in jobs:
            self._recorded(job_id, ts)
        for file_id in file_ids:
            seen = self._seen.get(file_id)
            if seen is not None:
                seen.set()

    def settle(self, job: Job, file_id: str) -> None:
        """In the background: the job gets its upload ts once the share is seen (or the poll finds it)."""
        self.expect([file_id])
        task = asyncio.create_task(self._settle(job, file_id), name=f"upload-ts-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _recorded(self, job_id: str, ts: str) -> None:
        for hook in self.on_recorded:
            hook(job_id, ts)

    async def idle(self) -> None:
        """Wait until no upload message is being looked for (every wait and poll has ended)."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        """Stop waiting (shutdown): a share seen after this is not recorded."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _settle(self, job: Job, file_id: str) -> None:
        seen = self._seen[file_id]
        try:
            try:
                async with asyncio.timeout(self._timing.event_wait):
                    await seen.wait()
                return
            except TimeoutError:
                pass
            waited = 0.0
            for at in self._timing.polls:
                await asyncio.sleep(at - waited)
                waited = at
                if seen.is_set():
                    return
                try:
                    ts = await self._files.share_ts(file_id, job.channel_id)
                except SlackError as exc:
                    log.info("files.info for %s failed (%s)", file_id, exc)
                    continue
                if ts is not None:
                    await self._store.set_upload_ts(job.id, ts)
                    self._recorded(job.id, ts)
                    return
            log.warning(
                "job %s: Slack showed no share of %s; reactions work on its result card", job.id, file_id
            )
        finally:
            self._seen.pop(file_id, None)
