"""`/imagine`: the slash command that starts a job (and answers `help`)."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncBoltContext, AsyncRespond

from bot.app.bolt import Listeners
from bot.app.services import Services
from bot.domain.commands import (
    Help,
    History,
    KitClear,
    KitSet,
    KitShow,
    KitUnpin,
    Recipe,
    Show,
    Top,
    UsageError,
    UsageReport,
    Vote,
    is_number,
    listed_count,
    parse_command,
)
from bot.domain.controls import MAX_LISTED, PAGE_SIZE, HistoryQuery
from bot.domain.kits import parse_kit_set
from bot.domain.permutations import Expansion, PermutationError, QueueRoomError, expand, unescape
from bot.domain.requests import RequestError, parse_request
from bot.features.actions import NotAllowedError
from bot.features.intake import CapReachedError, NotInChannelError, StatusPostError
from bot.store.errors import DuplicateRequestError
from bot.views import blocks as views
from bot.views import kits as kit_views
from handlers.replies import answer

log = logging.getLogger(__name__)


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
    parsed = parse_command(str(command.get("text") or ""))
    if isinstance(parsed, Help):
        await ack(response_type="ephemeral", **views.help_message())
        return
    if isinstance(parsed, UsageError):
        await ack(response_type="ephemeral", **views.error_message(parsed.message))
        return
    if isinstance(parsed, Show):
        await ack()
        await _show(services, parsed.job_id, command, respond, context)
        return
    if isinstance(parsed, History):
        await _history(services, ack, list(parsed.words), command, respond)
        return
    if isinstance(parsed, Recipe):
        await ack()
        await _recipe(services, parsed.job_id, command, respond)
        return
    if isinstance(parsed, UsageReport):
        await ack()
        await _usage(services, command, respond)
        return
    if isinstance(parsed, KitShow | KitSet | KitClear | KitUnpin):
        await _kit(services, ack, parsed, command, respond)
        return
    if isinstance(parsed, Top | Vote):
        await ack()
        await _votes(services, parsed, command, respond, context)
        return
    try:
        expansion = expand(parsed.text)
    except PermutationError as exc:
        await ack(response_type="ephemeral", **views.error_message(str(exc)))
        return
    if expansion is not None:
        await _permute(services, ack, expansion, command, respond, context)
        return
    text = unescape(parsed.text)
    intake = services.intake
    try:
        request = parse_request(text, intake.limits_for())
        if request.model:
            request = parse_request(text, intake.limits_for(request.model))
    except RequestError as exc:
        await ack(response_type="ephemeral", **views.error_message(str(exc)))
        return
    await ack()
    user_id, channel_id = str(command["user_id"]), str(command["channel_id"])
    try:
        await intake.start_job(
            request,
            team_id=str(command["team_id"]),
            channel_id=channel_id,
            user_id=user_id,
            request_key=f"command:{command.get('trigger_id') or command.get('response_url')}",
            notify=lambda message: answer(services, respond, message, user_id=user_id, channel_id=channel_id),
        )
    except DuplicateRequestError:
        log.info("duplicate /imagine delivery ignored")
    except CapReachedError as exc:
        refused = views.cap_refusal(exc, request.prompt)
        await answer(services, respond, refused, user_id=user_id, channel_id=channel_id)
    except NotInChannelError as exc:
        # An ephemeral cannot reach a conversation the bot is not in: only the response_url can.
        refused = views.not_in_channel(context.bot_user_id, archived=exc.archived)
        await answer(services, respond, refused, user_id=user_id, channel_id=None)
    except StatusPostError as exc:
        refused = views.notice(exc.user_message)
        await answer(services, respond, refused, user_id=user_id, channel_id=channel_id)


async def _usage(services: Services, command: dict[str, Any], respond: AsyncRespond) -> None:
    """`/imagine usage`: the caller's numbers (ephemeral); for admins the workspace report, and its chart
    in their DM."""
    user_id, channel_id = str(command["user_id"]), str(command["channel_id"])
    reply = await services.usage.answer(str(command["team_id"]), user_id, channel_id)
    await answer(services, respond, reply.message, user_id=user_id, channel_id=channel_id)
    if reply.chart is not None:
        refused = await services.usage.send_chart(user_id, reply.chart)
        if refused is not None:
            await answer(services, respond, refused, user_id=user_id, channel_id=channel_id)


async def _votes(
    services: Services,
    parsed: Top | Vote,
    command: dict[str, Any],
    respond: AsyncRespond,
    context: AsyncBoltContext,
) -> None:
    """`/imagine top …` posts the digest here; `/imagine vote 15m` opens a vote on this channel's latest
    thread. Refusals (and "nothing voted yet") go to the caller only."""
    user_id, channel_id = str(command["user_id"]), str(command["channel_id"])
    request_key = f"command:{command.get('trigger_id') or command.get('response_url')}"
    try:
        if isinstance(parsed, Top):
            refused = await services.votes.top(
                team_id=str(command["team_id"]),
                channel_id=channel_id,
                period=parsed.period,
                count=parsed.count,
                request_key=request_key,
            )
        else:
            refused = await services.votes.open(
                team_id=str(command["team_id"]),
                channel_id=channel_id,
                user_id=user_id,
                seconds=parsed.seconds,
                thread_ts=None,
                request_key=request_key,
            )
    except NotInChannelError as exc:
        notice = views.not_in_channel(context.bot_user_id, archived=exc.archived)
        await answer(services, respond, notice, user_id=user_id, channel_id=None)
        return
    if refused is not None:
        await answer(services, respond, refused, user_id=user_id, channel_id=channel_id)


async def _permute(
    services: Services,
    ack: AsyncAck,
    expansion: Expansion,
    command: dict[str, Any],
    respond: AsyncRespond,
    context: AsyncBoltContext,
) -> None:
    """`/imagine` with `{a|b}` groups: every combination is validated before the ack, then the set runs."""
    intake = services.intake
    requests = []
    for variant in expansion.variants:
        try:
            request = parse_request(variant.text, intake.limits_for())
            if request.model:
                request = parse_request(variant.text, intake.limits_for(request.model))
        except RequestError as exc:
            await ack(response_type="ephemeral", **views.error_message(f"Variant {variant.label}: {exc}"))
            return
        requests.append(request)
    await ack()
    user_id, channel_id = str(command["user_id"]), str(command["channel_id"])

    async def notify(message: views.Message) -> None:
        await answer(services, respond, message, user_id=user_id, channel_id=channel_id)

    try:
        await services.permutations.start(
            expansion,
            requests,
            team_id=str(command["team_id"]),
            channel_id=channel_id,
            user_id=user_id,
            request_key=f"command:{command.get('trigger_id') or command.get('response_url')}",
            notify=notify,
        )
    except DuplicateRequestError:
        log.info("duplicate /imagine delivery of a permutation set ignored")
    except QueueRoomError as exc:
        await notify(views.notice(f"{exc} Your prompt was:\n> {views.escape(expansion.template)}"))
    except CapReachedError as exc:
        await notify(views.cap_refusal(exc, expansion.template))
    except NotInChannelError as exc:
        refused = views.not_in_channel(context.bot_user_id, archived=exc.archived)
        await answer(services, respond, refused, user_id=user_id, channel_id=None)
    except StatusPostError as exc:
        await notify(views.notice(exc.user_message))


async def _show(
    services: Services, job_id: str, command: dict[str, Any], respond: AsyncRespond, context: AsyncBoltContext
) -> None:
    """`/imagine show <job id>`: repost a result card with working buttons here."""
    user_id, channel_id = str(command["user_id"]), str(command["channel_id"])
    try:
        await services.branching.revive(job_id, user_id=user_id, channel_id=channel_id)
    except NotAllowedError as exc:
        notice = views.notice(f":no_entry: {exc}")
        await answer(services, respond, notice, user_id=user_id, channel_id=channel_id)
    except NotInChannelError as exc:
        notice = views.not_in_channel(context.bot_user_id, archived=exc.archived)
        await answer(services, respond, notice, user_id=user_id, channel_id=None)


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
    if words and is_number(words[0]):
        listed = listed_count(words.pop(0))
        if listed is None:
            await ack(
                response_type="ephemeral", **views.notice(f"`/imagine history N`: N is 1 to {MAX_LISTED}.")
            )
            return
        total = listed
    await ack()
    page = await services.history.page(team_id, user_id, HistoryQuery(total, " ".join(words)))
    await answer(services, respond, page, user_id=user_id, channel_id=str(command["channel_id"]))


async def _recipe(services: Services, job_id: str, command: dict[str, Any], respond: AsyncRespond) -> None:
    """`/imagine seed <job id>`: the recipe of the caller's job, or of a job from this conversation."""
    user_id, channel_id = str(command["user_id"]), str(command["channel_id"])
    job = await services.store.get_job(job_id)
    allowed = job is not None and (job.user_id == user_id or job.channel_id == channel_id)
    if job is None or not allowed or job.deleted_at is not None:
        message = views.notice(f"No job `{views.escape(job_id)}` that you can see.")
    else:
        message = await services.branching.recipe(job.id)
    await answer(services, respond, message, user_id=user_id, channel_id=channel_id)


async def _kit(
    services: Services,
    ack: AsyncAck,
    parsed: KitShow | KitSet | KitClear | KitUnpin,
    command: dict[str, Any],
    respond: AsyncRespond,
) -> None:
    """`/imagine kit`, `kit set …`, `kit clear` and `kit unpin N` (answered only to the caller)."""
    user_id, channel_id = str(command["user_id"]), str(command["channel_id"])
    if isinstance(parsed, KitSet):
        try:
            change = parse_kit_set(parsed.args, services.intake.limits_for())
        except RequestError as exc:
            await ack(response_type="ephemeral", **kit_views.kit_error(str(exc)))
            return
        await ack()
        message = await services.kits.change(channel_id, user_id, change)
    elif isinstance(parsed, KitClear):
        await ack()
        message = await services.kits.clear(channel_id, user_id)
    elif isinstance(parsed, KitUnpin):
        await ack()
        message = await services.kits.unpin(channel_id, user_id, parsed.number)
    else:
        await ack()
        message = await services.kits.show(channel_id)
    await answer(services, respond, message, user_id=user_id, channel_id=channel_id)
