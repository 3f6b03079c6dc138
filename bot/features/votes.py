"""Vote-to-pick: votes from reactions on results, the `/imagine top` digest, and timed votes on a
thread whose winner is posted to the channel at the deadline.

Votes come from `reaction_added` / `reaction_removed` events only (never recounted through history
APIs) and cost no Slack call, except a hint when a reaction cannot count (👍 on a result with several
images, a number beyond its images), at most once per person and message (the claim is a dedupe key, so
"once" lasts as long as housekeeping keeps those: a day). The rules are in bot/domain/votes.py.

A timed vote is stored with its deadline before it is announced. The deadline task (`start`) closes
due votes at once at start-up and then sleeps until the next deadline, woken early when a vote opens.
Closing writes `closed_at` before the winner is posted and `result_ts` after. A vote closed but without
`result_ts` (a crash or a lost answer in between) is settled at the next start: the channel's newest
messages are searched for the winner message tagged with the vote's id, and it is posted only when not
found, so no winner is posted twice. When Slack refuses the winner in the channel, the vote's opener
gets it by DM. The winner is counted from the votes present when the vote closes (at the deadline, or at
start-up when the bot was down then).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

from bot.domain.commands import UsageError, Vote, parse_command
from bot.domain.votes import (
    Period,
    Tally,
    VoteHint,
    VoteRound,
    is_voting_reaction,
    rank,
    read_reaction,
    read_sheet_reaction,
)
from bot.features.intake import NotInChannelError
from bot.features.iterations import is_noise, strip_mention
from bot.slack.channel_history import ChannelHistory
from bot.slack.errors import SlackError, SlackErrorKind
from bot.slack.gateway import SlackGateway
from bot.store.errors import DuplicateRequestError
from bot.store.model import Job, PermutationSet
from bot.store.store import Store, VoteOpenError
from bot.views import blocks as views
from bot.views import votes as vote_views

log = logging.getLogger(__name__)

RETRY_AFTER_FAILURE = 60.0
"""Seconds the deadline task waits after a failed round (the store or Slack refused) before trying again."""


async def _sleep_until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.time()))


@dataclass(frozen=True)
class Clock:
    """Wall-clock time and waiting for a moment of it, for deadlines (tests pass a clock they advance
    by hand). Waiting is for a moment, not a duration, so advancing the clock while the waiter is about
    to start waiting cannot be missed."""

    now: Callable[[], float] = time.time
    sleep_until: Callable[[float], Coroutine[Any, Any, None]] = field(default=_sleep_until)


class Votes:
    """Counts votes, posts digests, opens timed votes and closes them at their deadline."""

    def __init__(
        self,
        *,
        store: Store,
        slack: SlackGateway,
        history: ChannelHistory,
        tz: tzinfo,
        clock: Clock | None = None,
        file_grace: float = views.FILE_PROCESSING_GRACE,
    ) -> None:
        """`tz` is QUOTA_TIMEZONE (where "today" and "week" start); `file_grace` as for result cards."""
        self._store = store
        self._slack = slack
        self._history = history
        self._tz = tz
        self._clock = clock or Clock()
        self._file_grace = file_grace
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.on_reaction: list[Callable[[Mapping[str, Any]], None]] = []
        """Called with each voting reaction event on a result once it is handled (tests, metrics)."""
        self.on_pass: list[Callable[[], None]] = []
        """Called each time the deadline task has closed what was due and is about to wait (tests)."""

    # -- votes from reactions --

    async def reacted(self, event: Mapping[str, Any], *, bot_user_id: str | None, removed: bool) -> None:
        """A `reaction_added` (or, `removed`, `reaction_removed`) event: record the vote it adds or takes
        back when it is on one of the bot's result messages; a reaction that cannot count gets a hint."""
        reaction = str(event.get("reaction") or "")
        item = event.get("item") or {}
        if not is_voting_reaction(reaction) or item.get("type") != "message":
            return
        if event.get("item_user") != bot_user_id or not event.get("user"):
            return
        channel, ts, user = str(item.get("channel")), str(item.get("ts")), str(event["user"])
        found = await self._store.job_for_message(channel, ts)
        sheet = None if found is not None else await self._store.permutation_set_for_message(channel, ts)
        if found is None and (sheet is None or sheet.sheet_ts != ts):
            return
        try:
            if found is not None:
                job, _, thread_ts = found
                await self._count(
                    event, job, channel=channel, ts=ts, user=user, thread_ts=thread_ts, removed=removed
                )
            elif sheet is not None:
                await self._count_on_sheet(event, sheet, user=user, removed=removed)
        finally:
            for hook in self.on_reaction:
                hook(event)

    async def _count(
        self,
        event: Mapping[str, Any],
        job: Job,
        *,
        channel: str,
        ts: str,
        user: str,
        thread_ts: str | None,
        removed: bool,
    ) -> None:
        reaction = str(event.get("reaction"))
        meaning = read_reaction(reaction, job.n)
        if isinstance(meaning, VoteHint):
            if not removed and job.deleted_at is None:
                await self._hint(meaning, job, channel=channel, ts=ts, user=user, thread_ts=thread_ts or ts)
            return
        if meaning is None:
            return
        await self._record(
            event, channel=channel, ts=ts, user=user, job_id=job.id, idx=meaning.idx, removed=removed
        )

    async def _count_on_sheet(
        self, event: Mapping[str, Any], sheet: PermutationSet, *, user: str, removed: bool
    ) -> None:
        """A keycap on a contact sheet is a vote for that tile's image, counted with its result's votes."""
        reaction, ts = str(event.get("reaction")), str(sheet.sheet_ts)
        tiles = await self._store.sheet_tiles(sheet.id)
        meaning = read_sheet_reaction(
            reaction, [tile.job_id is not None and tile.image_idx is not None for tile in tiles]
        )
        if isinstance(meaning, VoteHint):
            if not removed and await self._store.claim_event(f"vote-hint:{sheet.channel_id}:{ts}:{user}"):
                hint = vote_views.sheet_hint(meaning, len(tiles))
                await self._slack.ephemeral(sheet.channel_id, user, sheet.root_ts or ts, hint)
            return
        if meaning is None:
            return
        tile = tiles[meaning.idx]
        if tile.job_id is None or tile.image_idx is None:
            return
        await self._record(
            event,
            channel=sheet.channel_id,
            ts=ts,
            user=user,
            job_id=tile.job_id,
            idx=tile.image_idx,
            removed=removed,
        )

    async def _record(
        self,
        event: Mapping[str, Any],
        *,
        channel: str,
        ts: str,
        user: str,
        job_id: str,
        idx: int,
        removed: bool,
    ) -> None:
        """Store the state the reaction event leaves: a vote by `user` for image `idx` of `job_id`."""
        await self._store.record_vote_reaction(
            channel_id=channel,
            message_ts=ts,
            user_id=user,
            reaction=str(event.get("reaction")),
            job_id=job_id,
            idx=idx,
            present=not removed,
            event_ts=str(event.get("event_ts") or f"{self._clock.now():.6f}"),
        )

    async def _hint(
        self, kind: VoteHint, job: Job, *, channel: str, ts: str, user: str, thread_ts: str
    ) -> None:
        if await self._store.claim_event(f"vote-hint:{channel}:{ts}:{user}"):
            await self._slack.ephemeral(channel, user, thread_ts, vote_views.hint(kind, job.n))

    # -- the digest --

    async def top(
        self, *, team_id: str, channel_id: str, period: Period, count: int, request_key: str
    ) -> views.Message | None:
        """Post the channel's `count` most-voted images of `period`; returns the ephemeral answer instead
        when nothing was voted (None when posted, or when this request was handled already). Raises
        NotInChannelError when Slack will not take the post."""
        tallies = await self._store.image_tallies(
            team_id, channel_id, period.since(self._clock.now(), self._tz)
        )
        picks = await self._picks(rank(tallies, count))
        if not picks:
            return vote_views.nothing_voted(period)
        if not await self._store.claim_event(f"top:{request_key}"):
            return None
        links = {
            pick.job.id: await self._thread_link(pick.job.channel_id, pick.job.root_ts) for pick in picks
        }
        digest = vote_views.digest(
            picks, period=period, channel_id=channel_id, links=links, ready_before=self._ready_before()
        )
        try:
            await self._slack.post(channel_id, digest)
        except SlackError as exc:
            return self._post_refused(exc, "the digest")
        return None

    async def _picks(self, ranked: list[Tally]) -> list[vote_views.Pick]:
        images = await self._store.images_of(list(dict.fromkeys(t.job_id for t in ranked)))
        picks = []
        for tally in ranked:
            job = await self._store.get_job(tally.job_id)
            file_id = next((i.file_id for i in images.get(tally.job_id, []) if i.idx == tally.idx), None)
            if job is not None:
                picks.append(vote_views.Pick(job, tally.idx, tally.votes, file_id))
        return picks

    # -- timed votes --

    async def handle_message(
        self, event: Mapping[str, Any], *, team_id: str, bot_user_id: str | None
    ) -> bool:
        """`@Dreamboard vote 15m` (or `vote 15m` in a Dreamboard thread): open a vote on the thread.
        True when the message was a vote request (answered or a duplicate), so it is not an iteration;
        its `message` and `app_mention` events share the iteration's dedupe key, so one outcome results."""
        if is_noise(event, bot_user_id):
            return False
        text = strip_mention(str(event.get("text") or ""), bot_user_id)
        words = text.split()
        if not words or words[0].lower() != "vote" or event.get("files"):
            return False
        parsed = parse_command(text)
        if not isinstance(parsed, Vote | UsageError):
            return False
        channel, ts, user = str(event["channel"]), str(event["ts"]), str(event["user"])
        thread_ts = str(event["thread_ts"]) if event.get("thread_ts") else None
        mentioned = bool(bot_user_id) and f"<@{bot_user_id}" in str(event.get("text") or "")
        ours = thread_ts is not None and bool(await self._store.thread_jobs(channel, thread_ts, limit=1))
        if not (mentioned or ours or event.get("channel_type") == "im"):
            return False
        if not await self._store.claim_event(f"message:{channel}:{ts}"):
            return True
        reply_in = thread_ts or ts
        if thread_ts is not None and not ours:
            await self._answer(channel, user, reply_in, vote_views.not_a_dreamboard_thread())
            return True
        if isinstance(parsed, UsageError):
            await self._answer(channel, user, reply_in, vote_views.bad_duration(parsed.message))
            return True
        try:
            answer = await self.open(
                team_id=str(event.get("team") or team_id),
                channel_id=channel,
                user_id=user,
                seconds=parsed.seconds,
                thread_ts=thread_ts,
                request_key=f"message:{channel}:{ts}",
            )
        except NotInChannelError:
            log.warning("cannot post in %s although a message arrived from it", channel)
            answer = views.not_in_channel(bot_user_id, archived=False)
        if answer is not None:
            await self._answer(channel, user, reply_in, answer)
        return True

    async def open(
        self,
        *,
        team_id: str,
        channel_id: str,
        user_id: str,
        seconds: int,
        thread_ts: str | None,
        request_key: str,
    ) -> views.Message | None:
        """Open a vote of `seconds` on `thread_ts` (None: the channel's most recent Dreamboard thread,
        announced in the channel; otherwise announced in the thread). Returns the ephemeral refusal, or
        None once announced (or when this request was handled already). Raises NotInChannelError."""
        in_thread = thread_ts is not None
        thread = thread_ts or await self._store.latest_thread(channel_id)
        if thread is None:
            return vote_views.no_thread()
        now = self._clock.now()
        try:
            round = await self._store.open_vote_round(
                team_id=team_id,
                channel_id=channel_id,
                thread_ts=thread,
                opened_by=user_id,
                request_key=request_key,
                deadline=now + seconds,
                now=now,
            )
        except DuplicateRequestError:
            log.info("duplicate vote request %s ignored", request_key)
            return None
        except VoteOpenError as exc:
            return vote_views.already_open(exc.round)
        found = await self._store.job_for_message(channel_id, thread)
        message = vote_views.announcement(
            round,
            thread_link=await self._thread_link(channel_id, thread),
            root=found[0] if found else None,
            in_thread=in_thread,
        )
        try:
            _, ts = await self._slack.post(channel_id, message, thread_ts=thread if in_thread else None)
        except SlackError as exc:
            await self._store.discard_vote_round(round.id)
            return self._post_refused(exc, "the vote's announcement")
        await self._store.set_vote_announcement(round.id, ts)
        self._wake.set()
        return None

    def start(self, spawn: Callable[..., asyncio.Task[None]]) -> None:
        """Start the deadline task with `spawn` (Services.spawn)."""
        self._task = spawn(self._run(), name="vote deadlines")

    async def stop(self) -> None:
        """Stop the deadline task (at shutdown); a vote due meanwhile closes at the next start."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        """Settle votes closed without a recorded winner, then close each vote at its deadline."""
        try:
            await self.settle_unposted()
        except Exception:
            log.exception("votes: settling earlier closed votes failed; retried at the next start")
        while True:
            self._wake.clear()
            deadline: float | None
            try:
                await self.close_due()
                deadline = await self._store.next_vote_deadline()
            except Exception:
                log.exception("votes: closing due votes failed; next try in %gs", RETRY_AFTER_FAILURE)
                deadline = self._clock.now() + RETRY_AFTER_FAILURE
            for hook in self.on_pass:
                hook()
            await self._wait(deadline)

    async def _wait(self, deadline: float | None) -> None:
        """Until the clock reaches `deadline` (forever when None) or a vote opens."""
        waits: list[asyncio.Task[Any]] = [asyncio.create_task(self._wake.wait())]
        if deadline is not None:
            waits.append(asyncio.create_task(self._clock.sleep_until(deadline)))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
            await asyncio.gather(*waits, return_exceptions=True)

    async def close_due(self) -> None:
        """Close every vote whose deadline has passed and post its winner."""
        for due in await self._store.due_vote_rounds(self._clock.now()):
            closed = await self._store.close_vote_round(due.id, self._clock.now())
            if closed is not None:
                await self._post_winner(closed)

    async def settle_unposted(self) -> None:
        """For votes closed without a recorded winner message: record the one found in the channel, or
        post it when there is none."""
        for closed in await self._store.unposted_vote_rounds():
            try:
                ts = await self._history.find_tagged(
                    closed.channel_id,
                    after_ts=closed.announce_ts,
                    event_type=vote_views.WINNER_EVENT,
                    payload={"vote_id": closed.id},
                )
            except SlackError as exc:
                log.warning(
                    "vote %d: cannot tell whether its winner was posted (%s); not posting", closed.id, exc
                )
                continue
            if ts is not None:
                await self._store.set_vote_result(closed.id, ts)
            else:
                await self._post_winner(closed)

    async def _post_winner(self, closed: VoteRound) -> None:
        tallies = await self._store.thread_tallies(closed.channel_id, closed.thread_ts)
        picks = await self._picks(rank(tallies, 2))
        message = vote_views.winner(
            closed,
            picks,
            thread_link=await self._thread_link(closed.channel_id, closed.thread_ts),
            ready_before=self._ready_before(),
        )
        try:
            _, ts = await self._slack.post(closed.channel_id, message)
        except SlackError as exc:
            log.warning("vote %d: posting its winner failed (%s); settled at the next start", closed.id, exc)
            if not exc.maybe_done:
                await self._tell_opener(closed, message, exc.code)
            return
        await self._store.set_vote_result(closed.id, ts)
        log.info("vote %d closed: winner posted", closed.id)

    async def _tell_opener(self, closed: VoteRound, winner: views.Message, code: str) -> None:
        """DM whoever opened the vote its outcome when Slack refused it in the channel."""
        try:
            await self._slack.post(closed.opened_by, vote_views.winner_not_posted(closed, winner, code))
        except SlackError as exc:
            log.warning("vote %d: telling %s its outcome failed too (%s)", closed.id, closed.opened_by, exc)

    # -- helpers --

    async def _thread_link(self, channel: str, ts: str | None) -> str:
        """A link to a thread, built from the workspace URL (no API call per link); "" when unknown."""
        if ts is None:
            return ""
        try:
            base = (await self._slack.workspace_url()).rstrip("/")
        except SlackError as exc:
            log.warning("auth.test failed: %s", exc)
            return ""
        return f"{base}/archives/{channel}/p{ts.replace('.', '')}"

    def _ready_before(self) -> float:
        return time.time() - self._file_grace

    @staticmethod
    def _post_refused(exc: SlackError, what: str) -> views.Message:
        if exc.kind in (SlackErrorKind.NOT_IN_CHANNEL, SlackErrorKind.ARCHIVED):
            raise NotInChannelError(archived=exc.kind is SlackErrorKind.ARCHIVED) from None
        return vote_views.not_posted(what, exc.code)

    async def _answer(self, channel: str, user: str, thread_ts: str, message: views.Message) -> None:
        """Answer only the author, in the thread; by DM when Slack refuses the ephemeral."""
        if await self._slack.ephemeral(channel, user, thread_ts, message):
            return
        try:
            await self._slack.post(user, message)
        except SlackError as exc:
            log.warning("could not answer %s about a vote in %s: %s", user, channel, exc)
