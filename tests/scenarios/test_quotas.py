"""Daily quotas end to end: refusal at the boundary, two commands racing for the last images, a thread
reply over the cap, and the channel's cap naming what would still fit."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from tests.scenarios.harness import Harness


def zone_at_noon() -> str:
    """A fixed-offset zone where it is about noon now, so no quota day ends during the test (the store
    stamps jobs with the real time)."""
    offset = 12 - datetime.now(UTC).hour
    return "UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"


async def test_the_daily_caps_refuse_at_the_boundary_and_nothing_is_queued(harness: Harness) -> None:
    await harness.start(daily_images_per_user=5, daily_images_per_channel=6, quota_timezone=zone_at_noon())
    harness.oxen.hold()
    await harness.command("first fox --n 3")
    await harness.slack.wait_for("chat.postMessage")

    await asyncio.gather(harness.command("burst a --n 2"), harness.command("burst b --n 2"))
    replies = [call.params for call in await harness.slack.wait_for("response_url", count=2)]
    assert all(reply["response_type"] == "ephemeral" for reply in replies)
    [left] = [reply["text"] for reply in replies if "left today" in reply["text"]]
    [refused] = [reply["text"] for reply in replies if "left today" not in reply["text"]]
    assert left.startswith(":bar_chart: 0 of 5 images left today (resets at 00:00 ")
    assert "You have used your 5 images for today; nothing was queued. The quota resets at 00:00" in refused
    assert "> burst " in refused, "the refused prompt is echoed so nothing is lost"
    jobs = await harness.announced_jobs(2)
    assert sorted(job.n for job, _ in jobs) == [2, 3]

    root = next(job.status_ts for job, _ in jobs if job.n == 3)
    assert root is not None
    await harness.send(harness.slack.human_message("C1", "make it night", user="U1", thread_ts=root))
    [ephemeral] = await harness.slack.wait_for("chat.postEphemeral")
    assert (ephemeral.params["user"], ephemeral.params["thread_ts"]) == ("U1", root)
    assert "You have used your 5 images for today" in ephemeral.params["text"]

    await harness.command("a stranger's owl --n 4", user_id="U2")
    [*_, crossing] = await harness.slack.wait_for("response_url", count=3)
    assert "needs 4 but this channel has 1 image left today: try `--n 1`" in crossing.params["text"]
    stored = {job.prompt for job, _ in await harness.jobs()}
    assert len(stored) == 2
    sent = {call.params["prompt"] for call in harness.oxen.recorder.calls_to("POST /ai/queue")}
    assert sent <= stored, "nothing refused reached Oxen"

    await harness.command("usage")
    [*_, usage] = await harness.slack.wait_for("response_url", count=4)
    expected = "*Today* you made 5 of 5 images (0 left); this channel made 5 of 6 images (1 left)."
    assert expected in usage.params["text"]
    assert usage.params["response_type"] == "ephemeral"

    harness.oxen.release()
    await harness.slack.wait_for("files.completeUploadExternal", count=2)
