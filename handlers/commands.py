"""`/imagine`: the slash command that starts a job (and answers `help`)."""

from __future__ import annotations

import logging
import re
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncBoltContext, AsyncRespond

from bot.app.bolt import Listeners
from bot.app.services import Services
from bot.domain.controls import MAX_LISTED, PAGE_SIZE, HistoryQuery
from bot.domain.requests import RequestError, parse_request
from bot.features.actions import NotAllowedError
from bot.features.intake import CapReachedError, NotInChannelError, StatusPostError
from bot.store.sqlite import DuplicateRequestError
from bot.views import blocks as views

log = logging.getLogger(__name__)

JOB_ID = re.compile(r"^[0-9a-f]{10}$")


def register(app: Listeners, services: Services) -> None:
    """Register the `/imagine` command."""

    async def imagine(
        ack: AsyncAck, command: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
    ) -> None:
        await handle_imagine(services, ack, command, respond, context)

    app.command("/imagine")(imagine)


async def handle_imagine(
    services: Services,
    ack: AsyncAck,
    command: dict[str, Any],
    respond: AsyncRespond,
    context: AsyncBoltContext,
) -> None:
    """Validate before acking (so errors come back in the ack), then create the job after it."""
    text = str(command.get("text") or "")
    if text.strip().lower() in ("", "help", "--help"):
        await ack(response_type="ephemeral", **views.help_message())
        return
    words = text.split()
    if len(words) == 2 and words[0].lower() == "show":
        await ack()
        await _show(services, words[1], command, respond, context)
        return
    if words[0].lower() == "history":
        await _history(services, ack, words[1:], command, respond)
        return
    if words[0].lower() == "seed" and len(words) >= 2:
        found = await services.store.get_job(words[1]) if JOB_ID.match(words[1]) else None
        if found is not None or not words[1].isdigit():
            await ack()
            await _recipe(services, words[1], command, respond)
            return
        text = f"{' '.join(words[2:])} --seed {words[1]}"
    intake = services.intake
    try:
        request = parse_request(text, intake.limits_for())
        if request.model:
            request = parse_request(text, intake.limits_for(request.model))
    except RequestError as exc:
        await ack(response_type="ephemeral", **views.error_message(str(exc)))
        return
    await ack()
    try:
        await intake.start_job(
            request,
            team_id=str(command["team_id"]),
            channel_id=str(command["channel_id"]),
            user_id=str(command["user_id"]),
            request_key=f"command:{command.get('trigger_id') or command.get('response_url')}",
            notify=lambda message: respond(response_type="ephemeral", **message),
        )
    except DuplicateRequestError:
        log.info("duplicate /imagine delivery ignored")
    except CapReachedError as exc:
        await respond(response_type="ephemeral", **views.cap_reached(exc.queued, request.prompt))
    except NotInChannelError:
        await respond(response_type="ephemeral", **views.not_in_channel(context.bot_user_id))
    except StatusPostError as exc:
        await respond(response_type="ephemeral", **views.notice(exc.user_message))


async def _show(
    services: Services, job_id: str, command: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
) -> None:
    """`/imagine show <job id>`: repost a result card with working buttons here."""
    try:
        await services.branching.revive(
            job_id, user_id=str(command["user_id"]), channel_id=str(command["channel_id"])
        )
    except NotAllowedError as exc:
        await respond(response_type="ephemeral", **views.notice(f":no_entry: {exc}"))
    except NotInChannelError:
        await respond(response_type="ephemeral", **views.not_in_channel(context.bot_user_id))


async def _history(
    services: Services, ack: AsyncAck, words: list[str], command: dict[str, Any], respond: AsyncRespond
) -> None:
    """`/imagine history [N] [text]` and `/imagine history export`."""
    team_id, user_id = str(command["team_id"]), str(command["user_id"])
    if words[:1] == ["export"]:
        await ack(response_type="ephemeral", text="Preparing your CSV; it will arrive as a direct message.")
        count = await services.history.export(team_id, user_id)
        log.info("history export of %d rows for %s", count, user_id)
        return
    total = PAGE_SIZE
    if words and words[0].isdigit():
        total = int(words.pop(0))
        if not 1 <= total <= MAX_LISTED:
            await ack(
                response_type="ephemeral", **views.notice(f"`/imagine history N`: N is 1 to {MAX_LISTED}.")
            )
            return
    await ack()
    page = await services.history.page(team_id, user_id, HistoryQuery(total, " ".join(words)))
    await respond(response_type="ephemeral", **page)


async def _recipe(services: Services, job_id: str, command: dict[str, Any], respond: AsyncRespond) -> None:
    """`/imagine seed <job id>`: the recipe of the caller's job, or of a job from this conversation."""
    job = await services.store.get_job(job_id)
    allowed = job is not None and (
        job.user_id == command["user_id"] or job.channel_id == command["channel_id"]
    )
    if job is None or not allowed or job.deleted_at is not None:
        await respond(response_type="ephemeral", **views.notice(f"No job `{job_id}` that you can see."))
        return
    await respond(response_type="ephemeral", **await services.branching.recipe(job.id))
