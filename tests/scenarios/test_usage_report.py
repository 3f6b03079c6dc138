"""`/imagine usage` end to end: admins (KIT_ADMINS, or a workspace admin per users.info) get the workspace
report and the 14-day chart in their DM; everyone else gets their own numbers. And the quota refusals
reached through a button and a reaction: an ephemeral with the reset time, nothing sent to Oxen."""

from __future__ import annotations

import io
import json
import time
from typing import Any

from PIL import Image

from bot.store.store import Store
from tests.fakes.recorder import Call
from tests.scenarios.harness import Harness
from tests.scenarios.test_actions import card, first_job, press, react
from tests.scenarios.test_quotas import zone_at_noon
from tests.unit.test_usage_chart import row_above_baseline, runs
from tests.unit.test_usage_stats import seed_job

HOUR, DAY = 3600.0, 86400.0


def text_of(call: Call) -> str:
    """Every mrkdwn text of an answer's blocks."""
    blocks: list[dict[str, Any]] = call.params["blocks"]
    parts = [block["text"]["text"] for block in blocks if "text" in block]
    parts += [e["text"] for block in blocks for e in block.get("elements", []) if "text" in e]
    return "\n".join(parts)


async def seed_week(store: Store, team: str) -> None:
    """U1: 2 images an hour ago in C1, 4 three days ago in C2 (one failed at Oxen). U2: a job that
    failed at Oxen two hours ago in C1, a 4K image two days ago. U3: 3 images ten days ago, and a job
    today that failed before anything was submitted (not counted). The bot runs in a zone where it is
    about noon, so "an hour ago" is today and "three days ago" is three calendar days back."""
    now = time.time()
    await seed_job(store, team=team, user="U1", channel="C1", created=now - HOUR, images=["succeeded"] * 2)
    await seed_job(
        store, team=team, user="U1", channel="C2", created=now - 3 * DAY,
        images=["succeeded", "succeeded", "failed", "succeeded"], took=90,
    )  # fmt: skip
    await seed_job(
        store, team=team, user="U2", channel="C1", created=now - 2 * HOUR, images=["failed"], state="failed"
    )
    await seed_job(store, team=team, user="U2", channel="C1", created=now - 2 * DAY, size="4K", took=60)
    await seed_job(
        store, team=team, user="U3", channel="C3", created=now - 10 * DAY, images=["succeeded"] * 3
    )
    await seed_job(
        store, team=team, user="U3", channel="C1", created=now - HOUR, images=["pending"], state="failed"
    )


async def test_admins_get_the_workspace_report_and_others_their_own_numbers(harness: Harness) -> None:
    running = await harness.start(kit_admins="UBOSS", quota_timezone=zone_at_noon())
    harness.slack.admins.add("UOWNER")
    await seed_week(running.services.store, harness.slack.team_id)

    await harness.command("usage", user_id="U2")
    [own] = await harness.slack.wait_for("response_url")
    assert own.params["response_type"] == "ephemeral"
    mine = text_of(own)
    assert "*Today* you made 1 of 50 images (49 left)" in mine, "today's quota line as before"
    assert "*Your last 7 days:* 2 images; failure rate 50.0% (1 of 2 finished images)" in mine
    assert "time to image median 1 min, p95 1 min (over 1 delivered job)" in mine
    assert "Workspace usage" not in mine
    assert "<@U1>" not in mine, "nobody else's numbers"

    for admin, answered in (("UBOSS", 2), ("UOWNER", 3)):
        await harness.command("usage", user_id=admin)
        *_, report = await harness.slack.wait_for("response_url", count=answered)
        assert report.params["response_type"] == "ephemeral"
        text = text_of(report)
        assert "*Workspace usage*" in text
        assert "*By person*\nToday: <@U1> 2 · <@U2> 1\nLast 7 days: <@U1> 6 · <@U2> 2" in text
        assert "*By channel*\nToday: <#C1> 3\nLast 7 days: <#C1> 4 · <#C2> 4" in text
        assert "Today: 3 images, about US$0.12" in text
        assert "Last 7 days: 8 images, about US$0.32; failure rate 25.0% (2 of 8 finished images)" in text
        assert "time to image median 1 min, p95 1 min 30 s (over 3 delivered jobs)" in text
        assert "Spend is an estimate: images × US$0.04 per image" in text
        assert "direct messages" in text

        [complete] = await harness.slack.wait_for(
            "files.completeUploadExternal", where=lambda call, dm=f"D{admin}": call.params["channel_id"] == dm
        )
        [entry] = json.loads(complete.params["files"])
        chart = Image.open(io.BytesIO(harness.slack.uploaded_files[entry["id"]].content))
        assert (chart.format, chart.size) == ("PNG", (840, 420))
        bars = runs(row_above_baseline(chart.convert("RGB")))
        assert len(bars) == 4, "days with images: ten, three and two days ago, and today"
    [alt] = {call.params["alt_txt"] for call in harness.slack.calls_to("files.getUploadURLExternal")}
    assert alt.endswith(": 3"), "the alt text lists every day, today's 3 images last"
    assert alt.count(": 0") == 10
    assert {call.params["channel"] for call in harness.slack.calls_to("chat.postMessage")} == {
        "UBOSS",
        "UOWNER",
    }, "the chart goes to admins only, in their DMs"
    assert harness.slack.rejections == [], "every answer passed Slack's Block Kit validation"


async def test_quota_refusals_through_a_button_and_a_reaction_queue_nothing(harness: Harness) -> None:
    await harness.start(daily_images_per_user=2, quota_timezone=zone_at_noon())
    job_id, _ = await first_job(harness, "a red fox --n 2")
    submitted = len(harness.oxen.recorder.calls_to("POST /ai/queue"))

    assert (await press(harness, card(harness, job_id), "reroll", user="U1")).status == 200
    [refused] = await harness.slack.wait_for(
        "response_url", where=lambda call: "nothing was queued" in call.params["text"]
    )
    assert refused.params["response_type"] == "ephemeral"
    assert (
        "You have used your 2 images for today; nothing was queued. The quota resets at 00:00"
        in (refused.params["text"])
    )

    [(job, _)] = await harness.jobs()
    await react(harness, "repeat", str(job.status_ts), user="U1")
    [ephemeral] = await harness.slack.wait_for("chat.postEphemeral")
    assert (ephemeral.params["user"], ephemeral.params["thread_ts"]) == ("U1", job.thread_ts)
    assert (
        "You have used your 2 images for today; nothing was queued. The quota resets at 00:00"
        in (ephemeral.params["text"])
    )

    assert len(await harness.jobs()) == 1, "nothing was stored"
    assert len(harness.oxen.recorder.calls_to("POST /ai/queue")) == submitted, "nothing reached Oxen"


async def test_a_chart_slack_refuses_is_reported_to_the_admin(harness: Harness) -> None:
    await harness.start(kit_admins="UBOSS")
    harness.slack.fault("files.completeUploadExternal", error="internal_error")
    await harness.command("usage", user_id="UBOSS")
    report, refused = await harness.slack.wait_for("response_url", count=2)
    assert "*Workspace usage*" in text_of(report)
    assert "By person*\nToday: none\nLast 7 days: none" in text_of(report)
    assert refused.params["text"].startswith(":warning: Slack refused the usage chart (internal_error)")
    assert refused.params["response_type"] == "ephemeral"
    [dm] = harness.slack.calls_to("chat.postMessage")
    assert dm.params["text"].startswith("*Dreamboard images per day, last 14 days* (from `/imagine usage`")
    assert dm.params["text"].count(": 0") == 14, "the numbers are in the DM even though the image is not"
