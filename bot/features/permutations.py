"""Permutation sets: `/imagine a {red|blue} fox` as one job per combination in one thread, and one
contact sheet of them all once every job has ended.

Starting a set (each step recorded before the side effect that follows it):

| step                 | written before the side effect         | a restart that finds it …                 |
|----------------------|----------------------------------------|-------------------------------------------|
| admission            | set, variants and queued jobs (one tx) | —                                         |
| status message       | — (the message carries the set's id)   | looks for it by metadata: found → records |
|                      |                                        | it, else abandons the set (tells the user)|
| jobs announced       | root_ts and the jobs' thread_ts        | the runner resumes the jobs in the thread |

The contact sheet, once every job of the set has ended (a per-set lock orders sheets in this process):

| step                 | written before the side effect         | a restart that finds it …                 |
|----------------------|----------------------------------------|-------------------------------------------|
| compose + send bytes | —                                      | composes again (nothing is visible yet)   |
| complete the upload  | sheet_file_id and the tiles            | files.info: missing → completes it again  |
| posted               | sheet_posted_at                        | nothing left to do                        |
The sheet's message ts comes from the bot's own file_share event (best effort, for votes on it).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import tempfile
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

from bot.domain.permutations import Expansion
from bot.domain.requests import GenerationRequest
from bot.features.intake import Intake, Notify, NotInChannelError, StatusPostError
from bot.features.references import ReferenceError, References
from bot.slack.errors import SlackError, SlackErrorKind
from bot.slack.files import ResultFile, SlackFiles, UploadState
from bot.slack.gateway import SlackGateway
from bot.slack.messages import LOOKBACK
from bot.store.model import ImageState, Job, JobImage, JobState, PermutationSet, SetVariant, SheetTile
from bot.store.store import Store
from bot.views import blocks as views
from bot.views import contact_sheet
from bot.views import permutations as set_views

log = logging.getLogger(__name__)

SET_PARAM = "permutation_set"
"""The key of a job's params naming the set it belongs to."""
SET_EVENT = "dreamboard_set"
"""The metadata event_type of a set's status message; its payload names the set."""
MISSING_NOTES = {JobState.FAILED: "failed", JobState.CANCELLED: "cancelled"}

Spawn = Callable[[Coroutine[Any, Any, None]], object]


class Permutations:
    """Starts permutation sets and posts each set's contact sheet exactly once."""

    def __init__(
        self,
        *,
        store: Store,
        intake: Intake,
        slack: SlackGateway,
        files: SlackFiles,
        references: References,
        spawn: Spawn,
    ) -> None:
        """`spawn` runs a coroutine in the background, tracked (Services.spawn)."""
        self._store = store
        self._intake = intake
        self._slack = slack
        self._files = files
        self._references = references
        self._spawn = spawn
        self._locks: dict[str, asyncio.Lock] = {}
        self.on_sheet: list[Callable[[str], None]] = []
        """Hooks called with a set's id once its contact sheet is recorded as posted."""
        self.on_sheet_message: list[Callable[[str, str], None]] = []
        """Hooks called with (set id, ts) once the sheet's message ts is recorded."""

    async def start(
        self,
        expansion: Expansion,
        requests: list[GenerationRequest],
        *,
        team_id: str,
        channel_id: str,
        user_id: str,
        request_key: str,
        notify: Notify,
    ) -> PermutationSet:
        """Admit the whole set (or raise as Intake.admit_set does), post its status message, and start
        each combination as a job in that thread. Raises NotInChannelError or StatusPostError when the
        status message is refused (nothing then runs)."""
        new_set = PermutationSet(
            id=secrets.token_hex(5), team_id=team_id, channel_id=channel_id, user_id=user_id,
            template=expansion.template, request_key=request_key, root_ts=None, abandoned_at=None,
            sheet_file_id=None, sheet_ts=None, sheet_posted_at=None, created_at=time.time(),
        )  # fmt: skip
        options = [variant.options for variant in expansion.variants]
        admitted = await self._intake.admit_set(
            requests,
            team_id=team_id,
            channel_id=channel_id,
            user_id=user_id,
            request_key=request_key,
            params={SET_PARAM: new_set.id},
            store=lambda jobs, hold, quota: self._store.insert_permutation_set(
                new_set, options, jobs, hold, quota
            ),
        )
        labels = [variant.label for variant in expansion.variants]
        images = sum(job.n for job, _ in admitted.jobs)
        status = set_views.set_status(expansion.template, labels, user_id=user_id, images=images)
        await self._intake.tell_if_busy(channel_id, notify)
        try:
            root_ts = await self._post_root(new_set, status)
        except BaseException as exc:
            for ticket in admitted.tickets:
                ticket.withdraw()
            if not isinstance(exc, SlackError):
                raise  # the set stays stored without its status message: the next start settles it
            await self._store.abandon_permutation_set(new_set.id)
            if exc.kind in (SlackErrorKind.NOT_IN_CHANNEL, SlackErrorKind.ARCHIVED):
                raise NotInChannelError(archived=exc.kind is SlackErrorKind.ARCHIVED) from None
            raise StatusPostError(exc) from None
        anchored = {job.id: job for job in await self._store.set_permutation_root(new_set.id, root_ts)}
        problems: list[str] = []
        for ticket, (job, job_images) in zip(admitted.tickets, admitted.jobs, strict=True):
            try:
                await self._intake.accept(ticket, anchored.get(job.id, job), job_images)
            except StatusPostError as exc:
                problems.append(f"{job.prompt[:80]}: {exc.user_message}")
            except NotInChannelError:
                problems.append(f"{job.prompt[:80]}: Slack no longer lets Dreamboard post here")
        if problems:
            await notify(set_views.not_all_started(problems))
            self.job_ended(new_set.id)
        if admitted.left_line is not None:
            await notify(views.quota_left(admitted.left_line))
        return new_set

    async def _post_root(self, new_set: PermutationSet, status: Mapping[str, Any]) -> str:
        tagged = {**status, "metadata": {"event_type": SET_EVENT, "event_payload": {"set_id": new_set.id}}}
        try:
            _, ts = await self._slack.post(new_set.channel_id, tagged)
        except SlackError as exc:
            found = await self._find_root(new_set) if exc.maybe_done else None
            if found is None:
                raise
            return found
        return ts

    async def _find_root(self, found_set: PermutationSet) -> str | None:
        return await self._slack.find_tagged(
            found_set.channel_id,
            oldest=found_set.created_at - LOOKBACK,
            event_type=SET_EVENT,
            payload={"set_id": found_set.id},
        )

    def job_finished(self, job: Job) -> None:
        """The pipeline's hook: a job that ended may be the last of its set."""
        set_id = job.params.get(SET_PARAM)
        if isinstance(set_id, str):
            self.job_ended(set_id)

    def job_ended(self, set_id: str) -> None:
        """Post the set's contact sheet in the background if every job of it has ended (a shutdown under
        way refuses it: the next start settles the set)."""
        try:
            self._spawn(self.settle(set_id))
        except RuntimeError as exc:
            log.info("set %s: %s", set_id, exc)

    async def resume(self) -> None:
        """At start-up, before the runner resumes jobs: a set stored without its status message gets the
        message Slack holds (found by metadata), or is abandoned and its user told; every other open set
        is settled (its sheet posted if its jobs all ended before the restart)."""
        for open_set in await self._store.open_permutation_sets():
            if open_set.root_ts is None:
                try:
                    ts = await self._find_root(open_set)
                except SlackError as exc:
                    log.warning("set %s: looking for its status message failed (%s)", open_set.id, exc)
                    ts = None
                if ts is None:
                    await self._store.abandon_permutation_set(open_set.id)
                    log.info("set %s abandoned: its status message was never posted", open_set.id)
                    await self._slack.ephemeral(
                        open_set.channel_id,
                        open_set.user_id,
                        None,
                        set_views.set_abandoned(open_set.template),
                    )
                    continue
                await self._store.set_permutation_root(open_set.id, ts)
            self.job_ended(open_set.id)

    async def observed(self, event: Mapping[str, Any]) -> None:
        """The bot's own file_share event: record the sheet's message ts when it shares a sheet."""
        file_ids = [str(f["id"]) for f in event.get("files") or [] if isinstance(f, Mapping) and f.get("id")]
        channel, ts = str(event.get("channel") or ""), str(event.get("ts") or "")
        if file_ids and channel and ts:
            for set_id in await self._store.set_sheet_ts_for_files(channel, file_ids, ts):
                log.info("set %s: contact sheet message %s", set_id, ts)
                for hook in self.on_sheet_message:
                    hook(set_id, ts)

    async def settle(self, set_id: str) -> None:
        """Post the set's contact sheet unless it is posted, or some job of the set has not ended."""
        lock = self._locks.setdefault(set_id, asyncio.Lock())
        async with lock:
            found = await self._store.permutation_set(set_id)
            if found is None or found.sheet_posted_at is not None or found.abandoned_at is not None:
                self._locks.pop(set_id, None)
                return
            if found.root_ts is None:
                return
            variants = await self._store.set_variants(set_id)
            jobs = {
                job.id: job for v in variants if v.job_id and (job := await self._store.get_job(v.job_id))
            }
            if any(not job.finished for job in jobs.values()):
                return
            try:
                await self._post_sheet(found, variants, jobs)
            except SlackError as exc:
                log.warning("set %s: contact sheet not posted (%s); retried at the next start", set_id, exc)
                await self._slack.ephemeral(
                    found.channel_id, found.user_id, found.root_ts, set_views.sheet_not_posted(exc.code)
                )
                return
            self._locks.pop(set_id, None)
        for hook in self.on_sheet:
            hook(set_id)

    async def _post_sheet(
        self, found: PermutationSet, variants: list[SetVariant], jobs: dict[str, Job]
    ) -> None:
        """Complete the recorded upload if it was not (a restart), else compose, record and upload."""
        root_ts = str(found.root_ts)
        if found.sheet_file_id is not None:
            state, ts = await self._files.upload_state(found.sheet_file_id, found.channel_id)
            if state is not UploadState.MISSING:
                await self._posted(found, variants, ts)
                return
            recorded = await self._store.sheet_tiles(found.id)
            try:
                await self._share(found, found.sheet_file_id, root_ts, len(recorded))
            except SlackError as exc:
                if exc.kind is not SlackErrorKind.NOT_FOUND:
                    raise
                log.info("set %s: the recorded sheet file is gone; making it again", found.id)
                await self._store.set_sheet_file(found.id, None, [])
            else:
                await self._posted(found, variants, None)
                return
        images = await self._store.images_of(list(jobs))
        tiles, rows = await self._tiles(found.id, variants, jobs, images)
        if not any(tile.image for tile in tiles):
            log.info("set %s: no variant made an image; no contact sheet", found.id)
            await self._posted(found, variants, None, sheet=False)
            return
        data = await asyncio.to_thread(contact_sheet.compose, tiles)
        with tempfile.TemporaryDirectory(prefix=f"dreamboard-set-{found.id}-") as folder:
            path = Path(folder) / f"contact-sheet-{found.id}.jpg"
            await asyncio.to_thread(path.write_bytes, data)
            sheet = ResultFile(
                idx=0, path=path, filename=path.name, title=set_views.sheet_title(found.template),
                alt_text=f"Contact sheet: {found.template}",
            )  # fmt: skip
            file_id = (await self._files.send_bytes([sheet]))[0]
        await self._store.set_sheet_file(found.id, file_id, rows)
        await self._share(found, file_id, root_ts, len(rows))
        await self._posted(found, variants, None)

    async def _share(self, found: PermutationSet, file_id: str, root_ts: str, tiles: int) -> None:
        comment = set_views.sheet_comment(found.template, user_id=found.user_id, tiles=tiles)
        title = set_views.sheet_title(found.template)
        try:
            await self._files.share(
                [(file_id, title)], channel_id=found.channel_id, thread_ts=root_ts, comment=comment
            )
        except SlackError as exc:
            if not exc.maybe_done or (await self._files.upload_state(file_id, found.channel_id))[0] is (
                UploadState.MISSING
            ):
                raise

    async def _posted(
        self, found: PermutationSet, variants: list[SetVariant], ts: str | None, *, sheet: bool = True
    ) -> None:
        """Close the set (its sheet posted, or none to post) and say so in its status message."""
        await self._store.mark_sheet_posted(found.id, ts)
        log.info("set %s: %s", found.id, "contact sheet posted" if sheet else "closed without a sheet")
        labels = [f"{variant.number} · {variant.label}" for variant in variants]
        done = set_views.set_status(
            found.template, labels, user_id=found.user_id, images=0, outcome="sheet" if sheet else "empty"
        )
        await self._slack.update(found.channel_id, str(found.root_ts), done)

    async def _tiles(
        self,
        set_id: str,
        variants: list[SetVariant],
        jobs: dict[str, Job],
        images: dict[str, list[JobImage]],
    ) -> tuple[list[contact_sheet.Tile], list[SheetTile]]:
        """A tile per image of each variant, in order: the picture, or a grey tile saying why not."""
        tiles: list[contact_sheet.Tile] = []
        rows: list[SheetTile] = []
        count = sum(max(1, len(images.get(v.job_id or "", []))) for v in variants)
        side = contact_sheet.geometry(count).cell
        for variant in variants:
            job = jobs.get(variant.job_id or "")
            shown: list[JobImage | None] = list(images.get(job.id, [])) if job is not None else []
            for image in shown or [None]:
                number = len(tiles) + 1
                label = f"{number} · {variant.label}"
                if image is not None and job is not None and job.n > 1:
                    label += f" · seed {image.seed}"
                data, missing = await self._tile_bytes(job, image, side)
                tiles.append(contact_sheet.Tile(label, data, missing))
                rows.append(
                    SheetTile(set_id, number, variant.number, job.id if job else None,
                              image.idx if image else None, label)
                )  # fmt: skip
        return tiles, rows

    async def _tile_bytes(
        self, job: Job | None, image: JobImage | None, side: int
    ) -> tuple[bytes | None, str]:
        """A tile's picture, shrunk to `side` pixels at most (so a sheet of 4K results is not held in
        memory at full size), or None and the note its grey tile shows."""
        if job is None or image is None:
            return None, "not started"
        if job.deleted_at is not None:
            return None, "deleted"
        if job.state is not JobState.UPLOADED:
            return None, MISSING_NOTES.get(job.state, "failed")
        if image.state is not ImageState.SUCCEEDED:
            return None, "failed"
        try:
            data = await self._references.result_bytes(image)
        except ReferenceError as exc:
            log.warning("set tile for job %s image %d left blank: %s", job.id, image.idx, exc)
            return None, "unavailable"
        return await asyncio.to_thread(contact_sheet.shrink, data, side), "unreadable"
