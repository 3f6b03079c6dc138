"""Daily quotas: the boundary, the 4K weight, what would fit, and the reset at midnight in the zone."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from bot.app.config import SettingsError, load_settings
from bot.domain.commands import Prompt, UsageReport, parse_command
from bot.domain.errors import CapReachedError
from bot.domain.quotas import QuotaExceededError, QuotaPolicy, Usage
from bot.store.model import JobState, NewJob
from bot.store.store import Store

LA = ZoneInfo("America/Los_Angeles")
NOON_UTC = datetime(2026, 3, 2, 12, 0, tzinfo=UTC).timestamp()


def policy(per_user: int = 50, per_channel: int = 200, weight_4k: int = 2, tz: object = UTC) -> QuotaPolicy:
    return QuotaPolicy(per_user=per_user, per_channel=per_channel, weight_4k=weight_4k, tz=tz)  # type: ignore[arg-type]


def test_the_last_image_fits_and_the_next_is_refused_with_the_reset_time() -> None:
    quotas = policy()
    quotas.admit(Usage(user=49, channel=49), n=1, size="2K", now=NOON_UTC)
    with pytest.raises(QuotaExceededError) as refused:
        quotas.admit(Usage(user=50, channel=50), n=1, size="2K", now=NOON_UTC)
    assert isinstance(refused.value, CapReachedError)
    assert "used your 50 images for today" in refused.value.message
    assert "resets at 00:00 UTC, in 12 h 0 min" in refused.value.message


def test_a_job_that_would_cross_the_cap_names_what_fits() -> None:
    with pytest.raises(QuotaExceededError) as refused:
        policy().admit(Usage(user=48, channel=0), n=4, size="2K", now=NOON_UTC)
    assert "you have 2 images left today: try `--n 2`" in refused.value.message


def test_a_4k_image_weighs_image_weight_4k() -> None:
    quotas = policy(weight_4k=2)
    quotas.admit(Usage(user=46, channel=0), n=2, size="4K", now=NOON_UTC)
    with pytest.raises(QuotaExceededError) as refused:
        quotas.admit(Usage(user=46, channel=0), n=3, size="4K", now=NOON_UTC)
    expected = "needs 6 but you have 4 images left today (a 4K image counts as 2): try `--n 2`"
    assert expected in str(refused.value)
    with pytest.raises(QuotaExceededError) as one_left:
        quotas.admit(Usage(user=49, channel=0), n=1, size="4K", now=NOON_UTC)
    assert "try `--size 2K --n 1`" in one_left.value.message


def test_the_channel_cap_applies_to_everyone_in_it_and_zero_means_unlimited() -> None:
    with pytest.raises(QuotaExceededError) as refused:
        policy(per_channel=10).admit(Usage(user=0, channel=9), n=2, size="2K", now=NOON_UTC)
    assert "this channel has 1 image left today: try `--n 1`" in refused.value.message
    unlimited = policy(per_user=0, per_channel=0)
    assert not unlimited.enabled
    assert unlimited.admit(Usage(user=10**6, channel=10**6), n=4, size="4K", now=NOON_UTC) is None


def test_the_left_line_appears_only_past_80_percent() -> None:
    quotas = policy(per_user=50)
    assert quotas.admit(Usage(user=39, channel=0), n=1, size="2K", now=NOON_UTC) is None
    line = quotas.admit(Usage(user=40, channel=0), n=1, size="2K", now=NOON_UTC)
    assert line == "9 of 50 images left today (resets at 00:00 UTC, in 12 h 0 min)."


def test_the_day_resets_at_midnight_in_a_non_utc_zone() -> None:
    quotas = policy(tz=LA)
    before = datetime(2026, 3, 2, 23, 59, 30, tzinfo=LA).timestamp()
    after = datetime(2026, 3, 3, 0, 0, 0, tzinfo=LA).timestamp()
    assert quotas.day_start(before) == datetime(2026, 3, 2, tzinfo=LA).timestamp()
    assert quotas.day_start(after) == after
    assert quotas.next_reset(before) == after
    assert quotas.reset_phrase(before) == "resets at 00:00 PST, in 1 min"
    # 08:00 UTC is midnight in Los Angeles (PST, UTC-8): a UTC day would not have reset yet.
    assert datetime.fromtimestamp(after, UTC).hour == 8
    assert policy().day_start(after) == datetime(2026, 3, 3, tzinfo=UTC).timestamp()


def test_settings_default_and_reject_an_unknown_zone() -> None:
    base = {"slack_bot_token": "xoxb-1", "slack_signing_secret": "s", "oxen_api_key": "k"}
    quotas = load_settings(**base).quotas
    assert (quotas.per_user, quotas.per_channel, quotas.weight_4k, quotas.tz) == (50, 200, 2, ZoneInfo("UTC"))
    with pytest.raises(SettingsError) as problem:
        load_settings(**base, quota_timezone="Mars/Olympus")
    assert "QUOTA_TIMEZONE: must be an IANA time zone" in str(problem.value)


async def test_the_store_counts_images_paid_or_being_paid(database_url: str) -> None:
    store = await Store.open(database_url)
    try:

        def job(
            job_id: str, *, user: str = "U1", channel: str = "C1", n: int = 2, size: str = "2K"
        ) -> NewJob:
            return NewJob(
                id=job_id, team_id="T1", channel_id=channel, user_id=user, prompt="fox", model="m",
                size=size, aspect_ratio=None, seed=1, seed_given=False, n=n,
            )  # fmt: skip

        await store.insert_job(job("queued"))  # 2: being paid
        await store.insert_job(job("big", size="4K", n=1))  # 1 × weight 3
        await store.insert_job(job("other-user", user="U2"))  # the channel's, not U1's
        await store.insert_job(job("elsewhere", channel="C2", n=1))  # U1's, not this channel's
        await store.insert_job(job("never-sent"))
        await store.finish("never-sent", JobState.FAILED, error="refused")  # nothing submitted: free
        await store.insert_job(job("half-sent"))
        await store.mark_submitting("half-sent", 0)
        await store.finish("half-sent", JobState.FAILED, error="timeout")  # one submitted: it counts
        assert await store.quota_usage("T1", "U1", "C1", 0.0, weight_4k=3) == (2 + 3 + 1 + 1, 2 + 3 + 2 + 1)
        assert await store.quota_usage("T1", "U1", "C1", time.time() + 60, weight_4k=3) == (0, 0)
    finally:
        await store.close()


def test_usage_is_a_subcommand_only_alone_and_reports_against_the_caps() -> None:
    assert parse_command("usage") == UsageReport()
    assert parse_command("usage of colour in posters") == Prompt("usage of colour in posters")
    report = policy(per_channel=0).report(Usage(user=12, channel=30), now=NOON_UTC)
    assert report == (
        "*Today* you made 12 of 50 images (38 left); this channel made 30 images (no cap)."
        " A 4K image counts as 2. The quota resets at 00:00 UTC, in 12 h 0 min."
    )
