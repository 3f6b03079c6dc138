"""Result-card buttons and the ✏️ Edit modal (the work is in bot/features/actions.py)."""

from __future__ import annotations

import re
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncRespond

from bot.app.bolt import Listeners
from bot.app.services import Services
from bot.domain.controls import Action, HistoryQuery, Target
from bot.features.actions import NotAllowedError, refusal
from bot.jobs.recipes import EditError
from bot.slack.errors import SlackError
from bot.views import blocks as views
from bot.views.blocks import ACTION_PREFIX, EDIT_CALLBACK
from handlers.replies import answer as reply


def register(app: Listeners, services: Services) -> None:
    """Register the button and modal listeners."""

    async def on_button(
        ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond
    ) -> None:
        await ack()
        kind = Action(str(action["action_id"]).removeprefix(ACTION_PREFIX).split(":")[0])
        user_id = str(body["user"]["id"])
        team_id = str(body["user"].get("team_id") or body["team"]["id"])
        if kind is Action.HISTORY_PAGE:
            query = HistoryQuery.parse(str(action.get("value", "")))
            page = await services.history.page(team_id, user_id, query)
            channel_id = (body.get("channel") or {}).get("id")
            await reply(
                services, respond, page, user_id=user_id, channel_id=channel_id, replace_original=True
            )
            return
        target = Target.parse(str(action.get("value", "")))
        channel = (body.get("channel") or {}).get("id")
        message = body.get("message") or {}
        thread_ts = message.get("thread_ts") or message.get("ts")
        branching = services.branching
        if kind is Action.EDIT and channel and thread_ts:
            try:
                view = await branching.edit_modal(target, channel_id=channel, thread_ts=thread_ts)
                await services.gateway.open_view(str(body["trigger_id"]), view)
            except NotAllowedError as exc:
                await reply(services, respond, refusal(exc, ""), user_id=user_id, channel_id=channel)
            except SlackError as exc:
                notice = views.edit_not_opened(exc.code)
                await reply(services, respond, notice, user_id=user_id, channel_id=channel)
            return
        if kind is Action.EDIT:
            notice = views.notice(
                ":pencil2: Edit works on a result card in a conversation; use the card's button."
            )
            await reply(services, respond, notice, user_id=user_id, channel_id=channel)
            return
        answer = await branching.press(
            kind, target, user_id=user_id, team_id=team_id, channel_id=channel, thread_ts=thread_ts
        )
        if answer is None:
            return
        if body.get("response_url"):
            await reply(
                services, respond, answer, user_id=user_id, channel_id=channel, replace_original=False
            )
        else:
            await services.gateway.post(user_id, answer)

    async def on_edit_submitted(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        """Check the values without I/O and answer Slack first (errors show under their inputs);
        only then store and announce the job, which may take longer than Slack waits."""
        try:
            submission = services.branching.check_edit(view)
        except EditError as exc:
            await ack(response_action="errors", errors=exc.errors)
            return
        await ack()
        user = body["user"]
        await services.branching.start_edit(
            submission, user_id=str(user["id"]), team_id=str(user.get("team_id") or body["team"]["id"])
        )

    app.action(re.compile(f"^{re.escape(ACTION_PREFIX)}"))(on_button)
    app.view(EDIT_CALLBACK)(on_edit_submitted)
