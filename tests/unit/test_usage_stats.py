"""The usage report's numbers: percentiles, rankings, failure rate, days in a zone and spend (pure), and
the store's aggregations over jobs seeded with known timestamps, with the query plans they run on."""

from __future__ import annotations

import itertools
import json
import secrets
import sqlite3
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import aiosqlite
import pytest

from bot.domain import usage_stats as stats
from bot.store.model import Hold, NewJob
from bot.store.sqlite import SqliteDatabase
from bot.store.store import Store
from bot.views import usage as usage_views
from tests.fakes import blockkit

HOUR, DAY = 3600.0, 86400.0
BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 4, 2, 15, 0, tzinfo=BERLIN).timestamp()
"""A Thursday afternoon in Berlin, a few days after the change to summer time (29 March)."""
TODAY = datetime(2026, 4, 2, tzinfo=BERLIN).timestamp()


async def seed_job(
    store: Store,
    *,
    user: str,
    channel: str,
    created: float,
    images: Sequence[str] = ("succeeded",),
    state: str = "uploaded",
    took: float | None = 30.0,
    size: str = "2K",
    team: str = "T1",
) -> str:
    """Store a job as if it had run: created at `created`, in `state`, its images in these states (one per
    image; 'pending' ones were never submitted, the others hold a generation id), finished `took`
    seconds after it was created (None: not finished)."""
    job_id = secrets.token_hex(5)
    await store.insert_job(
        NewJob(
            id=job_id, team_id=team, channel_id=channel, user_id=user, prompt="seeded", model="m",
            size=size, aspect_ratio=None, seed=1, seed_given=False, n=len(images),
        ),
        Hold("seeding", until=1e12),  # held: a running bot's job queue must not start it meanwhile
    )  # fmt: skip
    async with store.transaction() as db:
        await db.execute(
            "UPDATE generations SET created_at = ?, state = ?, finished_at = ?, card_ts = ? WHERE id = ?",
            (
                created,
                state,
                None if took is None else created + took,
                f"{created:.6f}" if state == "uploaded" else None,
                job_id,
            ),
        )
        for idx, image in enumerate(images):
            await db.execute(
                "UPDATE generation_images SET state = ?, generation_id = ? WHERE job_id = ? AND idx = ?",
                (image, None if image == "pending" else f"gen-{job_id}-{idx}", job_id, idx),
            )
    return job_id


def test_median_is_the_middle_and_p95_the_nearest_rank() -> None:
    assert stats.median([]) is None
    assert stats.median([5.0, 1.0, 3.0]) == 3.0
    assert stats.median([4.0, 1.0, 3.0, 2.0]) == 2.5
    twenty = [float(n) for n in range(1, 21)]
    assert stats.percentile(twenty, 0.95) == 19.0, "ceil(0.95 × 20) = 19th smallest"
    assert stats.percentile([*twenty, 21.0], 0.95) == 20.0, "ceil(0.95 × 21) = 20th smallest"
    assert stats.percentile([7.0], 0.95) == 7.0
    assert stats.percentile([], 0.95) is None
    with pytest.raises(ValueError, match="share"):
        stats.percentile(twenty, 0)
    assert stats.timing([90.0, 30.0, 60.0]) == stats.Timing(3, 60.0, 90.0)


def test_rankings_show_the_top_and_sum_up_the_others() -> None:
    tallies = [stats.Tally(f"U{n:02d}", today=n % 3, week=n) for n in range(1, 14)]
    today, week = stats.rankings(tallies, top=10)
    assert week.shown[:2] == (("U13", 13), ("U12", 12))
    assert (len(week.shown), week.others, week.others_images) == (10, 3, 1 + 2 + 3)
    assert today.shown[:3] == (("U02", 2), ("U05", 2), ("U08", 2)), "ties by key; zero counts dropped"
    assert (len(today.shown) + today.others) == sum(t.today > 0 for t in tallies)
    assert stats.rank([]) == stats.Ranking((), 0, 0)


def test_failure_rate_spend_and_durations() -> None:
    assert stats.Outcomes(finished=8, failed=2).rate == 0.25
    assert stats.Outcomes(finished=0, failed=0).rate is None
    assert stats.spend(8, 0.04) == pytest.approx(0.32)
    assert [stats.duration(s) for s in (None, 42.4, 60, 90, 3600, 3720)] == [
        "–", "42 s", "1 min", "1 min 30 s", "1 h", "1 h 2 min",
    ]  # fmt: skip


def test_days_are_calendar_days_in_the_zone_across_a_dst_change() -> None:
    starts = stats.day_starts(NOW, BERLIN, 7)
    assert starts[-1] == TODAY
    assert [datetime.fromtimestamp(s, BERLIN).strftime("%d %H:%M") for s in starts] == [
        f"{day:02d} 00:00" for day in (27, 28, 29, 30, 31, 1, 2)
    ]
    lengths = [b - a for a, b in itertools.pairwise(starts)]
    assert lengths[2] == DAY - HOUR, "29 March 2026 has 23 hours in Berlin"
    assert stats.day_labels(starts[-2:], BERLIN) == ["Wed 01", "Thu 02"]
    assert stats.per_day(starts[-3:], {starts[-1]: 4}) == [0, 0, 4]


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    opened = await Store.open(database_url)
    yield opened
    await opened.close()


async def test_the_store_counts_images_by_the_quota_rule(store: Store) -> None:
    """U1: 2 today in C1, 4 three days ago in C2 (one failed at Oxen). U2: a failed job today in C1, a
    4K job two days ago. U3: a job ten days ago (outside the week), and one today that failed before
    submitting anything (not counted). Another team's job is never counted."""
    await seed_job(store, user="U1", channel="C1", created=NOW - HOUR, images=["succeeded"] * 2, took=30)
    await seed_job(
        store, user="U1", channel="C2", created=NOW - 3 * DAY,
        images=["succeeded", "succeeded", "failed", "succeeded"], took=90,
    )  # fmt: skip
    await seed_job(
        store, user="U2", channel="C1", created=TODAY + 60, images=["failed"], state="failed", took=5
    )
    await seed_job(store, user="U2", channel="C1", created=NOW - 2 * DAY, size="4K", took=60)
    await seed_job(store, user="U3", channel="C3", created=NOW - 10 * DAY, images=["succeeded"] * 3)
    await seed_job(store, user="U3", channel="C1", created=NOW - HOUR, images=["pending"], state="failed")
    await seed_job(store, user="U1", channel="C1", created=NOW - HOUR, images=["succeeded"] * 4, team="T2")
    week = stats.day_starts(NOW, BERLIN, 7)[0]

    by_user = await store.usage_tallies("T1", "user_id", today=TODAY, since=week)
    assert sorted(by_user) == [("U1", 2, 6), ("U2", 1, 2)]
    by_channel = await store.usage_tallies("T1", "channel_id", today=TODAY, since=week)
    assert sorted(by_channel) == [("C1", 3, 4), ("C2", 0, 4)]
    assert await store.usage_tallies("T1", "user_id", today=TODAY, since=week, user_id="U2") == [("U2", 1, 2)]

    assert await store.image_outcomes("T1", week) == (8, 2)
    assert await store.image_outcomes("T1", week, user_id="U2") == (2, 1)
    assert await store.delivery_seconds("T1", week) == [30.0, 60.0, 90.0]
    assert await store.delivery_seconds("T1", week, user_id="U1") == [30.0, 90.0]

    starts = stats.day_starts(NOW, BERLIN, 14)
    days = stats.per_day(starts, await store.usage_per_day("T1", starts, NOW))
    assert days == [0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 4, 1, 0, 3]
    assert sum(days[-7:]) == 8, "the chart's last 7 days add up to the report's week"
    mine = await store.usage_per_day("T1", starts, NOW, user_id="U2")
    assert stats.per_day(starts, mine)[-3:] == [1, 0, 1]


async def test_quota_usage_and_the_report_run_on_indexes(tmp_path: Path) -> None:
    """EXPLAIN QUERY PLAN of the statements the store really runs: the quota count is a MULTI-INDEX OR
    over the user's and the channel's index (migration 9), and the report's counts search the team's
    jobs by creation time instead of scanning the table."""
    path = tmp_path / "plans.sqlite3"
    await (await Store.open(path)).close()
    db = await aiosqlite.connect(path, isolation_level=None)
    db.row_factory = sqlite3.Row
    ran: list[str] = []
    await db.set_trace_callback(ran.append)
    store = Store(SqliteDatabase(db))
    try:
        await store.quota_usage("T1", "U1", "C1", NOW - DAY, weight_4k=2)
        await store.usage_tallies("T1", "channel_id", today=TODAY, since=TODAY - 6 * DAY)
        await store.usage_per_day("T1", stats.day_starts(NOW, BERLIN, 14), NOW)
        await store.image_outcomes("T1", TODAY - 6 * DAY)
        await store.delivery_seconds("T1", TODAY - 6 * DAY)
        statements = list(ran)
        plans = []
        for statement in statements:
            async with db.execute(f"EXPLAIN QUERY PLAN {statement}") as cursor:
                plans.append(" | ".join(str(row[3]) for row in await cursor.fetchall()))
    finally:
        await store.close()
    quota, *report = plans
    assert "MULTI-INDEX OR" in quota
    assert "generations_by_user (team_id=? AND user_id=? AND created_at>?)" in quota
    assert "generations_by_channel (team_id=? AND channel_id=? AND created_at>?)" in quota
    assert len(report) == 4
    for plan in report:
        assert "SCAN g" not in plan, plan
        assert "SCAN generations" not in plan, plan
        assert "generations_by_time (created_at>?" in plan, plan


def test_a_busy_workspace_report_stays_within_slacks_block_kit_limits() -> None:
    tallies = [stats.Tally(f"U{n:08d}", today=n, week=10 * n) for n in range(1, 400)]
    users_today, users_week = stats.rankings(tallies)
    report = stats.WorkspaceUsage(
        zone="Europe/Berlin", users_today=users_today, users_week=users_week, channels_today=users_today,
        channels_week=users_week, today_images=10**6, week_images=10**7, outcomes=stats.Outcomes(10, 1),
        timing=stats.timing([1.0, 2.0]), price=0.04,
    )  # fmt: skip
    message = usage_views.workspace_report("3 of 50 images left today.", report, chart_note="In your DM.")
    assert blockkit.message_errors(message["blocks"], lambda _: None) == []
    text = json.dumps(message)
    assert "and 389 others (" in text
    assert "<@U00000399> 399" in text
    own = usage_views.own_report(None, stats.PersonalUsage(0, stats.Outcomes(0, 0), stats.timing([])))
    assert blockkit.message_errors(own["blocks"], lambda _: None) == []
    assert "0 images; failure rate – (no finished images); time to image – (nothing delivered)" in own["text"]
    assert "No daily image quota is set here." in own["text"]
