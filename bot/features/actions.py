"""One-tap iteration on results: what each button and reaction does, and who may do it.

Buttons carry only `job id:image index`; everything else is loaded from SQLite, so they keep working
after restarts and for months. Anyone who can see a result may branch from it (the new job is theirs
and credits the original); only the requester or a workspace admin may cancel or delete.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.domain.controls import REACTIONS, Action, Target
from bot.domain.kits import KitApplication
from bot.domain.requests import prompt_box_size, split_prompt
from bot.features.intake import CapReachedError, Intake, NotInChannelError, StatusPostError
from bot.features.references import Collected, References, ReferenceSource
from bot.jobs import recipes
from bot.jobs.recipes import Recipe
from bot.jobs.runner import JobRunner
from bot.slack.errors import SlackError, SlackErrorKind
from bot.slack.gateway import SlackGateway
from bot.store.model import ImageState, Job, JobImage, JobState, MessageKind
from bot.store.store import Store
from bot.views import blocks as views

log = logging.getLogger(__name__)

DOUBLE_CLICK_WINDOW = 3.0


class NotAllowedError(Exception):
    """The user may not do this; the message says why."""


@dataclass(frozen=True)
class EditSubmission:
    """A checked ✏️ Edit submission: the job it edits, the new values, and where it was opened."""

    target: Target
    edits: recipes.Edits
    channel_id: str | None
    thread_ts: str | None


class Branching:
    """Runs actions on existing jobs on behalf of whoever pressed or reacted."""

    def __init__(
        self,
        *,
        store: Store,
        intake: Intake,
        runner: JobRunner,
        slack: SlackGateway,
        references: References | None = None,
        file_grace: float = views.FILE_PROCESSING_GRACE,
    ) -> None:
        """`references` refuses, before anything is stored or paid, a branch whose references could not
        be sent to Oxen."""
        self._references = references
        self._store = store
        self._intake = intake
        self._runner = runner
        self._slack = slack
        self._file_grace = file_grace

    async def branch(
        self, action: Action, target: Target, *, user_id: str, team_id: str, channel_id: str, thread_ts: str
    ) -> Job:
        """Start a reroll, vary or 4K of `target` in `thread_ts`; raises NotAllowedError or intake errors."""
        job = await self._visible_job(target.job_id)
        if action is Action.REROLL:
            recipe = recipes.reroll(job)
        else:
            image = await self._image(job, target.idx)
            if image is None:
                raise NotAllowedError(f"Job `{job.id}` has no finished image to use.")
            recipe = (recipes.vary if action is Action.VARY else recipes.upscale)(job, image)
        return await self.start(
            recipe, job, user_id=user_id, team_id=team_id, channel_id=channel_id, thread_ts=thread_ts
        )

    async def start(
        self,
        recipe: Recipe,
        parent: Job,
        *,
        user_id: str,
        team_id: str,
        channel_id: str,
        thread_ts: str,
        new_prompt: bool = False,
    ) -> Job:
        """Queue `recipe` as a branch of `parent`, owned by `user_id`. It reuses the channel kit `parent`
        recorded (none when it had none), unless it is a `new_prompt` (an edit), which gets today's kit
        (or none, when `parent` said `--nokit`)."""
        recorded = KitApplication.from_params(parent.params)
        if new_prompt:
            kit = recorded if recorded is not None and recorded.declined else None
        else:
            kit = recorded or KitApplication()
        if recipe.reference is None:
            sources = self.references_of(parent)
        else:
            sources = [self._result_source(parent, recipe.reference.idx)]
        problem = (
            self._references.hosting_problem(
                sources,
                what=(
                    f"use {views.escape(sources[0].name)} as a reference"
                    if recipe.reference is not None
                    else f"run job `{parent.id}` again with its reference images"
                ),
                instead="start fresh with `/imagine` and your prompt.",
            )
            if self._references is not None and sources
            else None
        )
        if problem is not None:
            raise NotAllowedError(problem)
        return await self._intake.start_job(
            recipe.request,
            team_id=team_id,
            channel_id=channel_id,
            user_id=user_id,
            thread_ts=thread_ts,
            references=Collected(sources, [], [], parent.id),
            notify=lambda message: self._ephemeral(channel_id, user_id, thread_ts, message),
            kit=kit,
        )

    async def cancel_or_delete(self, job_id: str, *, user_id: str) -> str:
        """Cancel a queued or running job, or delete a finished one's result messages and files."""
        job = await self._visible_job(job_id)
        if user_id != job.user_id and not await self._slack.is_admin(user_id):
            raise NotAllowedError(
                f"Only <@{job.user_id}> or a workspace admin can cancel or delete job `{job.id}`."
            )
        if not job.finished:
            state = await self._runner.cancel(job.id)
            if state is JobState.UPLOADED:
                return (
                    f"Job `{job.id}` was already posting its images, so it was delivered, not cancelled. "
                    "React ❌ again to delete its results."
                )
            if state is JobState.FAILED:
                return f"Job `{job.id}` had already failed; nothing was cancelled."
            return f"Job `{job.id}` was cancelled."
        if job.state is not JobState.UPLOADED:
            raise NotAllowedError(f"Job `{job.id}` has no results to delete.")
        await self._delete_results(job)
        await self._store.mark_deleted(job.id, user_id)
        deleted = await self._visible_job(job.id, allow_deleted=True)
        if deleted.status_ts and deleted.status_ts == deleted.thread_ts:
            await self._slack.update(job.channel_id, deleted.status_ts, views.status(deleted))
        elif deleted.status_ts:
            await self._slack.delete_message(job.channel_id, deleted.status_ts)
        return f"The results of job `{job.id}` were deleted."

    async def _delete_results(self, job: Job) -> None:
        """Delete the upload message (its ts learned now from files.info if it is not known yet), the
        files, a card posted separately (earlier versions) and reposted cards. The status message, which
        is the result card, is handled by the caller: a thread root becomes a "Deleted" line that keeps
        the thread together, a reply is deleted."""
        images = await self._store.images(job.id)
        file_ids = [image.file_id for image in images if image.file_id]
        upload_ts = job.upload_ts or (await self._upload_ts(job, file_ids[0]) if file_ids else None)
        if upload_ts:
            await self._slack.delete_message(job.channel_id, upload_ts)
        for file_id in file_ids:
            await self._slack.delete_file(file_id)
        if job.card_ts and job.card_ts != job.status_ts:
            await self._slack.delete_message(job.channel_id, job.card_ts)
        for channel, ts in await self._store.other_messages(job.id):
            await self._slack.delete_message(channel, ts)

    async def _upload_ts(self, job: Job, file_id: str) -> str | None:
        try:
            file = await self._slack.file_info(file_id)
        except SlackError as exc:
            log.warning("job %s: files.info for %s failed (%s); its message stays", job.id, file_id, exc)
            return None
        shares = file.get("shares") or {}
        for kind in ("public", "private"):
            for share in shares.get(kind, {}).get(job.channel_id, []):
                return str(share["ts"])
        return None

    @staticmethod
    def references_of(job: Job) -> list[ReferenceSource]:
        """The references a job was made with (for rerolls and edits)."""
        return [ReferenceSource.from_json(item) for item in job.params.get("references", [])]

    @staticmethod
    def _result_source(job: Job, idx: int) -> ReferenceSource:
        return ReferenceSource("result", f"image {idx + 1} of job {job.id}", job_id=job.id, idx=idx)

    async def _visible_job(self, job_id: str, *, allow_deleted: bool = False) -> Job:
        job = await self._store.get_job(job_id)
        if job is None or (job.deleted_at is not None and not allow_deleted):
            raise NotAllowedError(f"Job `{views.escape(job_id)}` does not exist or was deleted.")
        return job

    async def _image(self, job: Job, idx: int) -> JobImage | None:
        images = [
            i for i in await self._store.images(job.id) if i.state is ImageState.SUCCEEDED and i.file_id
        ]
        return next((i for i in images if i.idx == idx), images[0] if images else None)

    async def press(
        self,
        action: Action,
        target: Target,
        *,
        user_id: str,
        team_id: str,
        channel_id: str | None,
        thread_ts: str | None,
    ) -> views.Message | None:
        """A button press (on a card, a history page or App Home, where there is no channel); returns
        the ephemeral answer, if any. A double click counts once."""
        if not await self._store.claim_recent(
            f"button:{user_id}:{action}:{target.value}", DOUBLE_CLICK_WINDOW
        ):
            return None
        try:
            if action is Action.RECIPE:
                return await self.recipe(target.job_id)
            if action is Action.FAVOURITE:
                added = await self._store.toggle_favourite(
                    team_id, user_id, (await self._visible_job(target.job_id)).id
                )
                return views.notice(
                    f"⭐ Added job `{target.job_id}` to your favourites (App Home)."
                    if added
                    else f"Removed job `{target.job_id}` from your favourites."
                )
            if action in (Action.REPLAY, Action.REPLAY_NEW_SEED):
                new_seed = action is Action.REPLAY_NEW_SEED
                job = await self.replay(target.job_id, new_seed=new_seed, user_id=user_id, team_id=team_id)
                original = await self._visible_job(target.job_id)
                return views.replay_started(original, job, new_seed=new_seed)
            if channel_id is None or thread_ts is None:
                raise NotAllowedError("That button only works on a result in a conversation.")
            await self.branch(
                action, target, user_id=user_id, team_id=team_id, channel_id=channel_id, thread_ts=thread_ts
            )
        except (NotAllowedError, CapReachedError, NotInChannelError, StatusPostError) as exc:
            return refusal(exc, "")
        return None

    async def replay(self, job_id: str, *, new_seed: bool, user_id: str, team_id: str) -> Job:
        """Run a job's recipe again, in its own thread: same prompt, settings, references and (unless
        `new_seed`) seed. Only the job's owner replays from their history."""
        job = await self._visible_job(job_id)
        if job.user_id != user_id:
            raise NotAllowedError(f"Job `{job.id}` is not in your history.")
        return await self.start(
            recipes.replay(job, new_seed=new_seed),
            job,
            user_id=user_id,
            team_id=team_id,
            channel_id=job.channel_id,
            thread_ts=str(job.thread_ts or job.status_ts),
        )

    async def edit_modal(self, target: Target, *, channel_id: str, thread_ts: str) -> dict[str, Any]:
        """The prefilled ✏️ Edit modal for a job. Its private_metadata carries what check_edit needs, so
        a submission is checked without any I/O."""
        job = await self._visible_job(target.job_id)
        limits = self._intake.limits_for(job.model)
        box = prompt_box_size(limits)
        prompt = split_prompt(job.prompt, box)
        view = views.edit_modal(
            job,
            target,
            reference_count=len(self.references_of(job)),
            sizes=limits.sizes,
            box=box,
            prompt=prompt,
        )
        view["private_metadata"] = json.dumps(
            {
                "target": target.value,
                "channel": channel_id,
                "thread": thread_ts,
                "model": job.model,
                "n": job.n,
                "size": job.size,
                "joins": list(prompt.joins),
            }
        )
        return view

    def check_edit(self, view: Mapping[str, Any]) -> EditSubmission:
        """A submitted Edit modal, checked without I/O (so it is answered well within Slack's 3 s);
        raises recipes.EditError with the texts to show by block id."""
        try:
            where = json.loads(str(view.get("private_metadata") or "{}"))
        except ValueError:
            where = None
        if not isinstance(where, dict):  # not what edit_modal wrote: Slack echoes it unchanged
            raise recipes.EditError(
                {"prompt": "This form is not one Dreamboard opened; press ✏️ Edit on the card again."}
            )
        edits = recipes.check_edit(
            view.get("state", {}).get("values", {}),
            self._intake.limits_for(where.get("model")),
            n=int(where.get("n") or 1),
            size=str(where.get("size") or ""),
            joins=[str(join) for join in where.get("joins") or []],
        )
        return EditSubmission(
            Target.parse(str(where.get("target", ""))),
            edits,
            channel_id=where.get("channel"),
            thread_ts=where.get("thread"),
        )

    async def start_edit(self, submission: EditSubmission, *, user_id: str, team_id: str) -> Job | None:
        """Queue a checked edit (after the submission was acked) as a branch of its job; when it cannot
        start, the user is told why, ephemerally in the thread (or by DM), and None is returned."""
        channel, thread = submission.channel_id, submission.thread_ts
        try:
            job = await self._visible_job(submission.target.job_id)
        except NotAllowedError as exc:
            await self._tell(channel, user_id, thread, refusal(exc, submission.edits.prompt))
            return None
        channel, thread = channel or job.channel_id, thread or job.thread_ts or job.status_ts
        recipe = recipes.apply_edit(job, submission.edits)
        try:
            return await self.start(
                recipe,
                job,
                user_id=user_id,
                team_id=team_id,
                channel_id=channel,
                thread_ts=str(thread),
                new_prompt=True,
            )
        except (NotAllowedError, CapReachedError, NotInChannelError, StatusPostError) as exc:
            await self._tell(channel, user_id, thread, refusal(exc, recipe.request.prompt))
            return None

    async def _tell(
        self, channel: str | None, user: str, thread_ts: str | None, message: views.Message
    ) -> None:
        """Ephemeral in the conversation; by DM when Slack refuses that (or there is no conversation)."""
        if channel and await self._slack.ephemeral(channel, user, thread_ts, message):
            return
        try:
            await self._slack.post(user, message)
        except SlackError as exc:
            log.warning("could not tell %s why their edit did not start: %s", user, exc)

    async def revive(self, job_id: str, *, user_id: str, channel_id: str) -> None:
        """Repost a job's result card, images and working buttons, in `channel_id`; raises NotAllowedError
        or NotInChannelError. Only the requester may bring a result into another conversation."""
        job = await self._visible_job(job_id)
        if job.state is not JobState.UPLOADED:
            raise NotAllowedError(f"Job `{job.id}` has no results to show ({job.state}).")
        if channel_id != job.channel_id and user_id != job.user_id:
            raise NotAllowedError(
                f"Only <@{job.user_id}> can show job `{job.id}` outside the conversation it came from."
            )
        parent = await self._store.get_job(job.parent_id) if job.parent_id else None
        ready = views.files_ready(job, time.time() - self._file_grace)
        card = views.result_card(job, await self._store.images(job.id), parent=parent, with_images=ready)
        try:
            ts = await self._post_card(channel_id, card)
        except SlackError as exc:
            if exc.kind in (SlackErrorKind.NOT_IN_CHANNEL, SlackErrorKind.ARCHIVED):
                raise NotInChannelError(archived=exc.kind is SlackErrorKind.ARCHIVED) from None
            raise
        await self._store.add_message(channel_id, ts, job.id, MessageKind.CARD, thread_ts=None)

    async def _post_card(self, channel_id: str, card: views.Message) -> str:
        """Post a card; when Slack refuses its images (a file it has not finished processing), post it
        without them, so the user still gets the card and its buttons. Returns the ts."""
        try:
            _, ts = await self._slack.post(channel_id, card)
        except SlackError as exc:
            if not (exc.invalid_payload and views.has_images(card)):
                raise
            log.warning("chat.postMessage refused the card's images (%s); posting it without them", exc)
            _, ts = await self._slack.post(channel_id, views.without_images(card))
        return ts

    async def recipe(self, job_id: str) -> views.Message:
        """The recipe message of a job."""
        job = await self._visible_job(job_id)
        parent = await self._store.get_job(job.parent_id) if job.parent_id else None
        return views.recipe(job, await self._store.images(job.id), parent=parent)

    async def react(self, event: Mapping[str, Any], *, team_id: str, bot_user_id: str | None) -> None:
        """A reaction on one of the bot's messages: look the job up, drop repeats, act, acknowledge.
        Reactions that are not in the table, or not on the bot's messages, cost no API call."""
        action = REACTIONS.get(str(event.get("reaction")))
        item = event.get("item") or {}
        if action is None or item.get("type") != "message" or event.get("item_user") != bot_user_id:
            return
        channel, ts, user = str(item.get("channel")), str(item.get("ts")), str(event.get("user"))
        found = await self._store.job_for_message(channel, ts)
        if found is None:
            return
        job, _, thread_ts = found
        if not await self._store.claim_event(f"reaction:{channel}:{ts}:{user}:{event.get('reaction')}"):
            return
        reply_in = thread_ts or ts
        try:
            if action is Action.DM_RECIPE:
                await self._slack.post(user, await self.recipe(job.id))
            elif action is Action.CANCEL_OR_DELETE:
                outcome = await self.cancel_or_delete(job.id, user_id=user)
                await self._ephemeral(channel, user, reply_in, views.notice(outcome))
            else:
                await self.branch(
                    action,
                    Target(job.id),
                    user_id=user,
                    team_id=team_id,
                    channel_id=channel,
                    thread_ts=reply_in,
                )
        except (NotAllowedError, CapReachedError, NotInChannelError, StatusPostError) as exc:
            await self._ephemeral(channel, user, reply_in, refusal(exc, job.prompt))

    async def _ephemeral(self, channel: str, user: str, thread_ts: str, message: views.Message) -> None:
        await self._slack.ephemeral(channel, user, thread_ts, message)


def refusal(exc: Exception, prompt: str) -> views.Message:
    """The ephemeral answer when an action cannot go ahead."""
    if isinstance(exc, CapReachedError):
        return views.cap_refusal(exc, prompt)
    if isinstance(exc, NotInChannelError):
        return views.not_in_channel(None, archived=exc.archived)
    if isinstance(exc, StatusPostError):
        return views.notice(exc.user_message)
    return views.notice(f":no_entry: {exc}")
