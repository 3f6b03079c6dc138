"""`/imagine usage`: everyone's own numbers, and for admins the workspace report with a 14-day chart.

Admins are the users in KIT_ADMINS and the workspace's admins and owners (users.info, the check that
guards deleting other people's results). The report is ephemeral, so it cannot carry a file: the chart
goes to the admin's direct messages with Dreamboard, as `/imagine history export` sends its CSV.
Numbers come from SQL aggregations over counted images (bot/domain/usage_stats.py defines them); days
are calendar days in QUOTA_TIMEZONE.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from bot.domain import usage_stats as stats
from bot.domain.quotas import QuotaPolicy
from bot.slack.errors import SlackError
from bot.slack.gateway import SlackGateway
from bot.store.store import Store
from bot.views import usage as views
from bot.views.blocks import Message
from bot.views.usage_chart import bar_chart

QuotaLine = Callable[[str, str, str], Awaitable[str | None]]
"""(team, user, channel) → today's quota line for that person (Intake.usage_today)."""


@dataclass(frozen=True)
class Chart:
    """The 14-day chart as drawn, with what it shows in words."""

    png: bytes
    title: str
    alt_text: str
    summary: str
    """The DM message the chart is uploaded under: the same numbers, readable if the image never arrives."""


@dataclass(frozen=True)
class UsageAnswer:
    """The ephemeral answer, and the chart to send to the admin's DM (None for everyone else)."""

    message: Message
    chart: Chart | None


class UsageReports:
    """Builds `/imagine usage` answers and delivers the chart."""

    def __init__(
        self,
        *,
        store: Store,
        slack: SlackGateway,
        quotas: QuotaPolicy,
        quota_line: QuotaLine,
        admins: frozenset[str],
        price: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`admins`: KIT_ADMINS; `price`: OXEN_PRICE_PER_IMAGE (US$); `clock` is the wall time."""
        self._store = store
        self._slack = slack
        self._quotas = quotas
        self._quota_line = quota_line
        self._admins = admins
        self._price = price
        self._clock = clock

    async def is_admin(self, user_id: str) -> bool:
        """KIT_ADMINS, or a workspace admin or owner."""
        return user_id in self._admins or await self._slack.is_admin(user_id)

    async def answer(self, team_id: str, user_id: str, channel_id: str) -> UsageAnswer:
        """The caller's answer: the workspace report and chart for admins, their own numbers otherwise."""
        now = self._clock()
        quota_line = await self._quota_line(team_id, user_id, channel_id)
        if not await self.is_admin(user_id):
            return UsageAnswer(
                views.own_report(quota_line, await self._personal(team_id, user_id, now)), None
            )
        report = await self._workspace(team_id, now)
        chart = await self._chart(team_id, now)
        return UsageAnswer(views.workspace_report(quota_line, report, chart_note=views.CHART_IN_DM), chart)

    async def _personal(self, team_id: str, user_id: str, now: float) -> stats.PersonalUsage:
        starts = stats.day_starts(now, self._quotas.tz, stats.WEEK_DAYS)
        week_start = starts[0]
        tallies = await self._store.usage_tallies(
            team_id, "user_id", today=starts[-1], since=week_start, user_id=user_id
        )
        return stats.PersonalUsage(
            sum(week for _, _, week in tallies),
            stats.Outcomes(*await self._store.image_outcomes(team_id, week_start, user_id=user_id)),
            stats.timing(await self._store.delivery_seconds(team_id, week_start, user_id=user_id)),
        )

    async def _workspace(self, team_id: str, now: float) -> stats.WorkspaceUsage:
        tz = self._quotas.tz
        today = stats.day_starts(now, tz, 1)[0]
        week_start = stats.day_starts(now, tz, stats.WEEK_DAYS)[0]
        users = [
            stats.Tally(*row)
            for row in await self._store.usage_tallies(team_id, "user_id", today=today, since=week_start)
        ]
        channels = [
            stats.Tally(*row)
            for row in await self._store.usage_tallies(team_id, "channel_id", today=today, since=week_start)
        ]
        users_today, users_week = stats.rankings(users)
        channels_today, channels_week = stats.rankings(channels)
        return stats.WorkspaceUsage(
            zone=str(tz),
            users_today=users_today,
            users_week=users_week,
            channels_today=channels_today,
            channels_week=channels_week,
            today_images=sum(t.today for t in users),
            week_images=sum(t.week for t in users),
            outcomes=stats.Outcomes(*await self._store.image_outcomes(team_id, week_start)),
            timing=stats.timing(await self._store.delivery_seconds(team_id, week_start)),
            price=self._price,
        )

    async def _chart(self, team_id: str, now: float) -> Chart:
        tz = self._quotas.tz
        starts = stats.day_starts(now, tz, stats.CHART_DAYS)
        counts = stats.per_day(starts, await self._store.usage_per_day(team_id, starts, now))
        labels = stats.day_labels(starts, tz)
        title = views.chart_title(stats.CHART_DAYS)
        return Chart(
            bar_chart(counts, labels, title=title),
            title,
            views.chart_alt_text(counts, labels),
            views.chart_summary(title, counts, labels),
        )

    async def send_chart(self, user_id: str, chart: Chart) -> Message | None:
        """Post the chart into the user's DM with Dreamboard; the notice for the user when Slack refused."""
        try:
            channel, _ = await self._slack.post(user_id, {"text": chart.summary})
            await self._slack.upload_image(
                channel,
                content=chart.png,
                filename=f"dreamboard-usage-{datetime.fromtimestamp(self._clock(), UTC):%Y-%m-%d}.png",
                title=chart.title,
                alt_text=chart.alt_text,
            )
        except SlackError as exc:
            return views.chart_failed(exc.code)
        return None
