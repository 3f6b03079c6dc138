"""`/imagine usage`: a person's own numbers, the workspace report for admins, and the chart's texts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from bot.domain.usage_stats import (
    WEEK_DAYS,
    Outcomes,
    PersonalUsage,
    Ranking,
    Timing,
    WorkspaceUsage,
    duration,
    spend,
)
from bot.views.blocks import SECTION_LIMIT, Message, escape

ALT_TEXT_LIMIT = 1000
"""files.getUploadURLExternal refuses a longer alt_txt (`alt_txt_too_large`, slack.md §files)."""


def _section(text: str) -> dict[str, Any]:
    clipped = text if len(text) <= SECTION_LIMIT else text[: SECTION_LIMIT - 1] + "…"
    return {"type": "section", "text": {"type": "mrkdwn", "text": clipped}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:2000]}]}


def _quota(line: str | None) -> str:
    return f":bar_chart: {line}" if line else ":bar_chart: No daily image quota is set here."


def _images(n: int) -> str:
    return f"{n} image" if n == 1 else f"{n} images"


def _failures(outcomes: Outcomes) -> str:
    rate = outcomes.rate
    if rate is None:
        return "failure rate – (no finished images)"
    return f"failure rate {rate:.1%} ({outcomes.failed} of {outcomes.finished} finished images)"


def _timing(timing: Timing) -> str:
    if timing.count == 0:
        return "time to image – (nothing delivered)"
    jobs = "job" if timing.count == 1 else "jobs"
    return (
        f"time to image median {duration(timing.median)}, p95 {duration(timing.p95)} "
        f"(over {timing.count} delivered {jobs})"
    )


def _ranking(ranking: Ranking, mention: Callable[[str], str]) -> str:
    if not ranking.shown:
        return "none"
    text = " · ".join(f"{mention(key)} {count}" for key, count in ranking.shown)
    if ranking.others:
        whom = "other" if ranking.others == 1 else "others"
        text += f" · and {ranking.others} {whom} ({ranking.others_images})"
    return text


def _user(key: str) -> str:
    return f"<@{escape(key)}>"


def _channel(key: str) -> str:
    return f"<#{escape(key)}>"


def own_report(quota_line: str | None, mine: PersonalUsage) -> Message:
    """What everyone sees: today's quota line, then their own last 7 days."""
    head = _quota(quota_line)
    week = (
        f"*Your last {WEEK_DAYS} days:* {_images(mine.week_images)}; {_failures(mine.outcomes)}; "
        f"{_timing(mine.timing)}."
    )
    return {"text": f"{head}\n{week}", "blocks": [_section(head), _section(week)]}


def workspace_report(
    quota_line: str | None, report: WorkspaceUsage, *, chart_note: str | None = None
) -> Message:
    """The admin report: images by person and by channel (today, last 7 days), failures, timing and the
    estimated Oxen spend; `chart_note` says where the chart went."""
    head = (
        f":bar_chart: *Workspace usage* (days in {escape(report.zone)}; the last {WEEK_DAYS} days are "
        f"today and the {WEEK_DAYS - 1} before)"
    )
    people = (
        f"*By person*\nToday: {_ranking(report.users_today, _user)}\n"
        f"Last {WEEK_DAYS} days: {_ranking(report.users_week, _user)}"
    )
    channels = (
        f"*By channel*\nToday: {_ranking(report.channels_today, _channel)}\n"
        f"Last {WEEK_DAYS} days: {_ranking(report.channels_week, _channel)}"
    )
    price = report.price
    totals = (
        f"*Totals*\nToday: {_images(report.today_images)}, about US${spend(report.today_images, price):.2f}\n"
        f"Last {WEEK_DAYS} days: {_images(report.week_images)}, about "
        f"US${spend(report.week_images, price):.2f}; {_failures(report.outcomes)}; {_timing(report.timing)}."
    )
    notes = (
        f"Spend is an estimate: images × US${price:g} per image (OXEN_PRICE_PER_IMAGE), 4K at the same "
        "price; an image counts once it is queued, submitted to Oxen or made. Time to image runs from the "
        "request to its images shared in Slack."
    )
    blocks = [
        _section(head),
        _section(people),
        _section(channels),
        _section(totals),
        _context(notes),
        _context(_quota(quota_line)),
    ]
    if chart_note:
        blocks.append(_context(chart_note))
    return {"text": f"{head}\n{totals}", "blocks": blocks}


def chart_title(days: int) -> str:
    """The chart's heading (also the uploaded file's title)."""
    return f"Dreamboard images per day, last {days} days"


def chart_alt_text(counts: Sequence[int], labels: Sequence[str]) -> str:
    """What the chart shows, for screen readers: every day's count."""
    days = ", ".join(f"{label}: {count}" for label, count in zip(labels, counts, strict=True))
    return f"Bar chart of images per day, the last bar is today. {days}"[:ALT_TEXT_LIMIT]


def chart_summary(title: str, counts: Sequence[int], labels: Sequence[str]) -> str:
    """The DM text above the chart: its title and every day's number (mrkdwn, well within limits)."""
    days = " · ".join(f"{label}: {count}" for label, count in zip(labels, counts, strict=True))
    return f"*{title}* (from `/imagine usage`; the last day is today)\n{days}"


CHART_IN_DM = "The chart of the last 14 days is in your direct messages with Dreamboard."


def chart_failed(code: str) -> Message:
    """The chart could not be sent to the admin's DM."""
    text = (
        f":warning: Slack refused the usage chart ({escape(code)}), so it was not sent to your direct "
        "messages; the numbers above stand."
    )
    return {"text": text, "blocks": [_section(text)]}
