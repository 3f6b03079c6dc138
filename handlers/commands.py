"""`/imagine`: the slash command that starts a job (and answers `help`)."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncBoltContext, AsyncRespond

from bot import views
from bot.actions import NotAllowedError
from bot.intake import CapReachedError, NotInChannelError
from bot.requests import RequestError, parse_request
from bot.services import Services

log = logging.getLogger(__name__)


def register(app: AsyncApp, services: Services) -> None:
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
    intake = services.intake
    try:
        request = parse_request(text, intake.limits_for())
        if request.model:
            request = parse_request(text, intake.limits_for(request.model))
    except RequestError as exc:
        await ack(response_type="ephemeral", **views.error_message(str(exc)))
        return
    await ack()
    if not await services.store.claim_event(
        f"command:{command.get('trigger_id') or command.get('response_url')}"
    ):
        log.info("duplicate /imagine delivery ignored")
        return
    try:
        await intake.start_job(
            request,
            team_id=str(command["team_id"]),
            channel_id=str(command["channel_id"]),
            user_id=str(command["user_id"]),
        )
    except CapReachedError as exc:
        await respond(response_type="ephemeral", **views.cap_reached(exc.queued, request.prompt))
    except NotInChannelError:
        await respond(response_type="ephemeral", **views.not_in_channel(context.bot_user_id))


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
