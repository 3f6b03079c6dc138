"""Channel kits: showing, setting and clearing a channel's kit, and pinning references with :pushpin:.

Pins come from reaction events only. A Dreamboard result is found in the database
(Store.job_for_message); a person's image through reactions.get (never conversations.history, whose
limits are far tighter, slack.md §3.4). Each person's :pushpin: is recorded with its event's time, so a
repeated or late delivery changes nothing; a pin stays while at least one recorded :pushpin: holds it.
Applying a kit to new jobs is Intake's (bot/domain/kits.py holds the rules).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from bot.domain.kits import MAX_PINS, Kit, KitChange
from bot.features.references import (
    ReferenceError,
    References,
    ReferenceSource,
    needs_file_info,
    slack_read_problem,
)
from bot.slack.errors import SlackError
from bot.slack.files import file_name
from bot.slack.gateway import SlackGateway
from bot.store.model import ImageState, JobState
from bot.store.store import Store
from bot.views import blocks as views
from bot.views import kits as kit_views

log = logging.getLogger(__name__)

PIN_INSTEAD = "prompts here still get the kit's flags and style, without pinned references."


class NotPinnableError(Exception):
    """The reacted message cannot be pinned; the message is safe to show."""


class Kits:
    """The channel-kit use cases, on behalf of whoever typed the command or reacted."""

    def __init__(
        self,
        *,
        store: Store,
        slack: SlackGateway,
        references: References,
        admins: frozenset[str],
        file_grace: float = views.FILE_PROCESSING_GRACE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`admins` (KIT_ADMINS) alone may change kits when set; `file_grace`: seconds before a new
        file is shown as a thumbnail (Slack refuses a slack_file it is still processing)."""
        self._store = store
        self._slack = slack
        self._references = references
        self._admins = admins
        self._file_grace = file_grace
        self._clock = clock

    def may_change(self, user_id: str) -> bool:
        """Whether `user_id` may change kits: anyone, unless KIT_ADMINS names who may."""
        return not self._admins or user_id in self._admins

    async def show(self, channel_id: str) -> views.Message:
        """`/imagine kit`: the channel's kit."""
        kit = await self._store.kit(channel_id)
        ready_before = self._clock() - self._file_grace
        return kit_views.kit_message(kit, admins=self._admins, ready_before=ready_before)

    async def change(self, channel_id: str, user_id: str, change: KitChange) -> views.Message:
        """`/imagine kit set …`: merge `change` into the channel's kit."""
        if not self.may_change(user_id):
            return kit_views.not_allowed(self._admins)
        kit = change.applied_to(await self._store.kit(channel_id))
        await self._store.save_kit(channel_id, kit, user_id=user_id)
        log.info("kit of %s set by %s", channel_id, user_id)
        return kit_views.kit_changed(kit)

    async def clear(self, channel_id: str, user_id: str) -> views.Message:
        """`/imagine kit clear`: remove the channel's flags, style and pins."""
        if not self.may_change(user_id):
            return kit_views.not_allowed(self._admins)
        await self._store.clear_kit(channel_id, user_id=user_id)
        log.info("kit of %s cleared by %s", channel_id, user_id)
        return kit_views.kit_changed(Kit(), cleared=True)

    async def unpin(self, channel_id: str, user_id: str, number: int) -> views.Message:
        """`/imagine kit unpin N`: drop the N-th pin, whoever's :pushpin: holds it (the way out when its
        message was deleted, or under KIT_ADMINS for a pin someone else made)."""
        if not self.may_change(user_id):
            return kit_views.not_allowed(self._admins)
        pins = (await self._store.kit(channel_id)).pins
        if number > len(pins):
            return kit_views.no_such_pin(number, len(pins))
        pin = pins[number - 1]
        await self._store.unpin(channel_id, pin.message_ts)
        log.info("pin %s of %s removed by %s", pin.message_ts, channel_id, user_id)
        return kit_views.unpinned(pin.name)

    async def react(self, event: Mapping[str, Any], *, removed: bool) -> None:
        """A :pushpin: added to (or, `removed`, taken off) a message: pin or unpin its image."""
        item = event.get("item") or {}
        if event.get("reaction") != kit_views.PIN_REACTION or item.get("type") != "message":
            return
        channel, ts, user = str(item.get("channel")), str(item.get("ts")), str(event.get("user"))
        event_ts = float(event.get("event_ts") or 0)
        if not self.may_change(user):
            # A removal by someone who could not pin only matters when the message is pinned.
            if (not removed or await self._store.is_pinned(channel, ts)) and await self._store.claim_event(
                f"kit-lock:{channel}:{ts}:{user}:{event_ts}"
            ):
                await self._tell(channel, user, None, kit_views.not_allowed(self._admins))
            return
        if not await self._store.record_pin_reaction(
            channel, ts, user, active=not removed, event_ts=event_ts
        ):
            return
        if removed:
            kit = await self._store.kit(channel)
            pin = next((pin for pin in kit.pins if pin.message_ts == ts), None)
            if pin is not None:
                dropped = await self._store.drop_pin(channel, ts)
                await self._tell(channel, user, None, kit_views.unpinned(pin.name, held=not dropped))
            return
        try:
            source, ready_at, thread = await self._pin_source(channel, ts)
        except NotPinnableError as exc:
            await self._tell(channel, user, None, kit_views.not_pinnable(str(exc)))
            return
        added = await self._store.add_pin(channel, ts, source.to_json(), ready_at=ready_at, limit=MAX_PINS)
        if added is None:
            kit = await self._store.kit(channel)
            await self._tell(channel, user, thread, kit_views.pins_full(kit.pins))
        else:
            count = len((await self._store.kit(channel)).pins)
            await self._tell(channel, user, thread, kit_views.pinned(source.name, count, before=not added))

    async def _pin_source(self, channel: str, ts: str) -> tuple[ReferenceSource, float, str | None]:
        """The reference a message gives (its first image), when Slack had it, and the thread to answer
        in; raises NotPinnableError."""
        found = await self._store.job_for_message(channel, ts)
        if found is not None:
            job, _, thread = found
            images = [
                i for i in await self._store.images(job.id) if i.state is ImageState.SUCCEEDED and i.file_id
            ]
            if job.state is not JobState.UPLOADED or job.deleted_at is not None or not images:
                raise NotPinnableError(f"Job `{job.id}` has no finished image to pin.")
            image = images[0]
            name = f"image {image.idx + 1} of job {job.id}"
            source = ReferenceSource("result", name, file_id=image.file_id, job_id=job.id, idx=image.idx)
            self._check_hosting(source)
            return source, float(job.finished_at or ts), thread if thread != ts else None
        try:
            message = await self._slack.reacted_message(channel, ts)
        except SlackError as exc:
            raise NotPinnableError(
                views.escape(
                    slack_read_problem(
                        exc, "reactions.get", "read that message", outcome="nothing was pinned"
                    )
                )
            ) from None
        files = [
            file
            for file in message.get("files") or []
            if isinstance(file, Mapping)
            and (needs_file_info(file) or str(file.get("mimetype", "")).startswith("image/"))
        ]
        if not files:
            raise NotPinnableError("That message has no image, so there is nothing to pin.")
        self._check_hosting(ReferenceSource("file", file_name(files[0])))
        try:
            collected = await self._references.collect(
                channel_id=channel,
                thread_ts=None,
                message_ts=ts,
                attached=files[:1],
                thread_jobs=[],
                fresh=True,
            )
        except ReferenceError as exc:
            raise NotPinnableError(views.escape(str(exc))) from None
        thread = message.get("thread_ts")
        return collected.sources[0], float(ts), str(thread) if thread and thread != ts else None

    def _check_hosting(self, source: ReferenceSource) -> None:
        problem = self._references.hosting_problem(
            [source], what=f"pin {source.name} to this channel's kit", instead=PIN_INSTEAD
        )
        if problem is not None:
            raise NotPinnableError(views.escape(problem))

    async def _tell(self, channel: str, user: str, thread_ts: str | None, message: views.Message) -> None:
        """Answer only the person who reacted; by DM when Slack refuses the ephemeral."""
        if await self._slack.ephemeral(channel, user, thread_ts, message):
            return
        try:
            await self._slack.post(user, message)
        except SlackError as exc:
            log.warning("could not tell %s about their :pushpin: in %s: %s", user, channel, exc)
