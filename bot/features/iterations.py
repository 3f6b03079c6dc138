"""Iterations: thread replies, @mentions and DMs that become jobs (the thread is where images evolve)."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from bot.domain.requests import RequestError, parse_request
from bot.features.intake import CapReachedError, Intake, NotInChannelError, StatusPostError
from bot.features.references import ReferenceError, References, slack_read_problem
from bot.slack.errors import SlackError
from bot.slack.gateway import SlackGateway
from bot.store.store import Store
from bot.views import blocks as views

log = logging.getLogger(__name__)

_HANDLED_SUBTYPES = frozenset({None, "file_share", "thread_broadcast"})
_EMOJI_ONLY = re.compile(r"^(\s*:[\w+'-]+:\s*)+$")


def is_noise(event: Mapping[str, Any], bot_user_id: str | None) -> bool:
    """Messages Dreamboard never answers: bots (itself included), edits, deletions, joins, emoji-only text."""
    if event.get("subtype") not in _HANDLED_SUBTYPES or event.get("bot_id"):
        return True
    if not event.get("user") or event.get("user") == bot_user_id:
        return True
    text = strip_mention(str(event.get("text") or ""), bot_user_id)
    return not event.get("files") and (not text.strip() or bool(_EMOJI_ONLY.match(text)))


def strip_mention(text: str, bot_user_id: str | None) -> str:
    """The text without the bot's own `<@U…>` mentions."""
    if not bot_user_id:
        return text
    return re.sub(rf"<@{re.escape(bot_user_id)}(\|[^>]*)?>", " ", text).strip()


class Iterations:
    """Decides whether a message is addressed to Dreamboard and turns it into a job."""

    def __init__(self, *, store: Store, intake: Intake, references: References, slack: SlackGateway) -> None:
        self._store = store
        self._intake = intake
        self._references = references
        self._slack = slack

    async def handle(self, event: Mapping[str, Any], *, team_id: str, bot_user_id: str | None) -> None:
        """Handle a `message` or `app_mention` event (both may arrive for one message; one job results)."""
        if is_noise(event, bot_user_id):
            return
        channel, ts = str(event["channel"]), str(event["ts"])
        thread_ts = event.get("thread_ts")
        mentioned = bool(bot_user_id) and f"<@{bot_user_id}" in str(event.get("text") or "")
        direct = event.get("channel_type") == "im"
        if not (mentioned or direct) and not (
            thread_ts and await self._is_dreamboard_thread(channel, str(thread_ts))
        ):
            return
        if not await self._store.claim_event(f"message:{channel}:{ts}"):
            return
        user = str(event["user"])
        text = strip_mention(str(event.get("text") or ""), bot_user_id)
        files = [file for file in event.get("files") or [] if isinstance(file, Mapping)]
        reply_in = str(thread_ts or ts)
        thread_jobs = await self._store.thread_jobs(channel, str(thread_ts)) if thread_ts else []
        if text.lower() in ("", "help", "--help") and not files:
            await self._ephemeral(channel, user, reply_in, views.help_message())
            return
        try:
            request = parse_request(text, self._intake.limits_for())
            collected = await self._references.collect(
                channel_id=channel,
                thread_ts=str(thread_ts) if thread_ts else None,
                message_ts=ts,
                attached=files,
                thread_jobs=thread_jobs,
                fresh=request.fresh,
            )
            await self._intake.start_job(
                request,
                team_id=str(event.get("team") or team_id),
                channel_id=channel,
                user_id=user,
                thread_ts=reply_in,
                references=collected,
                notify=lambda message: self._ephemeral(channel, user, reply_in, message),
            )
        except RequestError as exc:
            await self._ephemeral(channel, user, reply_in, views.error_message(str(exc)))
        except ReferenceError as exc:
            await self._ephemeral(
                channel, user, reply_in, views.notice(f":warning: {views.escape(str(exc))}")
            )
        except CapReachedError as exc:
            await self._ephemeral(channel, user, reply_in, views.cap_refusal(exc, text))
        except StatusPostError as exc:
            await self._ephemeral(channel, user, reply_in, views.notice(exc.user_message))
        except SlackError as exc:
            log.warning("thread reply %s in %s: Slack refused a call (%s)", ts, channel, exc)
            problem = slack_read_problem(exc, "Slack", "handle this message")
            await self._ephemeral(channel, user, reply_in, views.notice(f":warning: {views.escape(problem)}"))
        except NotInChannelError as exc:
            log.warning("cannot post in %s although a message arrived from it", channel)
            answer = views.not_in_channel(bot_user_id, archived=exc.archived)
            await self._ephemeral(channel, user, reply_in, answer)

    async def _is_dreamboard_thread(self, channel: str, thread_ts: str) -> bool:
        """Whether the thread's root is one of Dreamboard's messages (a status message or a card it
        posted): only then are plain replies in it addressed to Dreamboard. A human's thread where
        someone once mentioned Dreamboard stays theirs: only mentions there are answered."""
        return await self._store.job_for_message(channel, thread_ts) is not None

    async def _ephemeral(self, channel: str, user: str, thread_ts: str, message: views.Message) -> None:
        """Answer only the author, in the thread; by DM when Slack refuses the ephemeral (rate limit,
        membership), so an answer is never lost silently."""
        if await self._slack.ephemeral(channel, user, thread_ts, message):
            return
        try:
            await self._slack.post(user, message)
        except SlackError as exc:
            log.warning("could not answer %s about message %s in %s: %s", user, thread_ts, channel, exc)
