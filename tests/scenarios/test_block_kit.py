"""Every answer survives Slack's Block Kit validation: images only of files Slack has processed (and a
no-image fallback when it refuses one anyway), checked response_url answers, Replay acknowledged,
echoed input escaped, and App Home's "Today" counted in images from the user's own midnight."""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from datetime import datetime, timedelta, timezone
from typing import Any

from bot.features.history import History
from tests.fakes.recorder import Call
from tests.scenarios.harness import Harness, is_card

SLOW_PROCESSING = 600.0
"""A file-processing delay no test outlasts: every slack_file the bot sends is refused."""


def blocks_of(call: Call) -> list[dict[str, Any]]:
    value = call.params.get("blocks") or []
    return json.loads(value) if isinstance(value, str) else list(value)


def view_of(call: Call) -> dict[str, Any]:
    value = call.params["view"]
    return json.loads(value) if isinstance(value, str) else dict(value)


def shows_image(blocks: list[dict[str, Any]]) -> bool:
    return any(b["type"] == "image" or b.get("accessory", {}).get("type") == "image" for b in blocks)


async def generate_unprocessed(harness: Harness, text: str) -> None:
    """Generate a job whose files Slack will not have processed (nobody has App Home open, so its end
    publishes nothing)."""
    await harness.generate(text)
    assert harness.slack.calls_to("views.publish") == []


def refused_on(harness: Harness, surface: str) -> list[list[str]]:
    return [r.errors for r in harness.slack.rejections if r.surface == surface]


def buttons(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for block in blocks if block["type"] == "actions" for e in block["elements"]]


async def test_show_right_after_a_job_leaves_out_images_slack_may_still_be_processing(
    harness: Harness,
) -> None:
    await harness.start()
    await harness.generate("a fox")
    [(job, _)] = await harness.jobs()
    await harness.command(f"show {job.id}")
    [revived] = await harness.slack.wait_for("chat.postMessage", where=is_card)
    assert not shows_image(blocks_of(revived))
    assert buttons(blocks_of(revived))
    assert harness.slack.rejections == []


async def test_show_posts_the_card_without_images_when_slack_refuses_them(harness: Harness) -> None:
    harness.slack.file_processing_delay = SLOW_PROCESSING
    await harness.start(slack_file_grace=0.0)
    await generate_unprocessed(harness, "a fox")
    [(job, _)] = await harness.jobs()
    await harness.command(f"show {job.id}")
    [refused, posted] = await harness.slack.wait_for("chat.postMessage", where=is_card, count=2)
    assert shows_image(blocks_of(refused))
    assert not shows_image(blocks_of(posted))
    assert buttons(blocks_of(posted))
    [errors] = refused_on(harness, "chat.postMessage")
    assert errors == ["[ERROR] invalid slack file [json-pointer:/blocks/3/slack_file]"]
    harness.slack.rejections.clear()


async def test_history_answers_without_thumbnails_when_the_response_url_refuses_them(
    harness: Harness,
) -> None:
    harness.slack.file_processing_delay = SLOW_PROCESSING
    await harness.start(slack_file_grace=0.0)
    await generate_unprocessed(harness, "a fox")
    await harness.command("history")
    [refused, shown] = await harness.slack.wait_for("response_url", count=2)
    assert shows_image(blocks_of(refused))
    assert not shows_image(blocks_of(shown))
    assert "a fox" in json.dumps(blocks_of(shown))
    assert len(refused_on(harness, "response_url")) == 1
    harness.slack.rejections.clear()


async def test_history_reaches_the_user_ephemerally_when_the_response_url_fails(harness: Harness) -> None:
    await harness.start()
    await harness.generate("a fox")
    harness.slack.fault("response_url", status=500)
    await harness.command("history", channel_id="C1")
    [ephemeral] = await harness.slack.wait_for("chat.postEphemeral")
    assert (ephemeral.params["channel"], ephemeral.params["user"]) == ("C1", "U1")
    assert "a fox" in json.dumps(blocks_of(ephemeral))


async def test_app_home_is_published_without_images_when_slack_refuses_them(harness: Harness) -> None:
    harness.slack.file_processing_delay = SLOW_PROCESSING
    await harness.start(slack_file_grace=0.0)
    await harness.generate("a lighthouse")
    await harness.send({"type": "app_home_opened", "user": "U1", "channel": "DU1", "tab": "home"})
    refused, published = await harness.slack.wait_for("views.publish", count=2)
    assert shows_image(view_of(refused)["blocks"])
    assert not shows_image(view_of(published)["blocks"])
    assert "a lighthouse" in json.dumps(view_of(published))
    assert [r.surface for r in harness.slack.rejections] == ["views.publish"]
    harness.slack.rejections.clear()


async def test_replay_tells_the_presser_which_job_it_started(harness: Harness) -> None:
    await harness.start()
    await harness.generate("a red fox --seed 77", channel_id="C2")
    await harness.command("history", channel_id="C9")
    [page] = await harness.slack.wait_for("response_url")
    replay = next(b for b in buttons(blocks_of(page)) if ":replay:" in b["action_id"])
    message = {"ts": "2.2", "blocks": page.params["blocks"], "text": page.params["text"]}
    payload = harness.slack.button_payload(replay, user_id="U1", channel_id="C9", message=message)
    await harness.slack.send_action(harness.events_url, payload)
    [_, answer] = await harness.slack.wait_for("response_url", count=2)
    original, replayed = [job for job, _ in await harness.jobs()]
    assert f"Replaying job `{original.id}` with seed `77` as job `{replayed.id}`" in answer.params["text"]
    assert "<#C2>" in answer.params["text"]


async def test_replay_from_app_home_answers_in_the_apps_messages(harness: Harness) -> None:
    await harness.start()
    await harness.generate("a red fox")
    assert harness.running is not None
    await harness.running.services.history.publish_home(harness.slack.team_id, "U1")
    home = view_of(harness.slack.calls_to("views.publish")[-1])
    new_seed = next(b for b in buttons(home["blocks"]) if ":replay_new_seed:" in b["action_id"])
    payload = harness.slack.button_payload(new_seed, user_id="U1", channel_id="C1", message={"ts": "1.1"})
    del payload["channel"], payload["message"], payload["response_url"]
    payload["container"] = {"type": "view", "view_id": "V1"}
    await harness.slack.send_action(harness.events_url, payload)
    [dm] = await harness.slack.wait_for("chat.postMessage", where=lambda c: c.params.get("channel") == "U1")
    assert "with a new seed as job" in dm.params["text"]


async def test_subcommand_words_with_a_mention_are_prompts_that_cannot_ping_the_channel(
    harness: Harness,
) -> None:
    await harness.start()
    # A mention arrives as "<!here>", a typed "<" as "&lt;" (slack.md §3.5). `show`/`seed` take only a
    # 10-hex job id, so these are prompts: they generate, and nothing Slack shows may carry a live
    # mention or text escaped twice.
    for word in ("<!here>", "&lt;!here&gt;"):
        await harness.generate(f"seed {word}")
        await harness.generate(f"show {word}")
    assert len(await harness.jobs()) == 4
    shown = [
        *harness.slack.calls_to("chat.postMessage"),
        *harness.slack.calls_to("chat.update"),
        *harness.slack.calls_to("response_url"),
    ]
    for call in shown:
        assert "<!here>" not in json.dumps({k: call.params.get(k) for k in ("text", "blocks")})
        assert "&amp;lt;" not in json.dumps(call.params.get("blocks"))


def _zone_around_noon(now: float) -> timezone:
    """A fixed zone where it is between 06:00 and 18:00 now, at least 5 hours from UTC: its midnight is
    hours away from now and from UTC's midnight, so the test cannot straddle either."""
    for hours in [*range(5, 15), *range(-5, -13, -1)]:
        zone = timezone(timedelta(hours=hours))
        if 6 <= datetime.fromtimestamp(now, zone).hour < 18:
            return zone
    raise AssertionError("some offset from UTC+5 to +14 or UTC-5 to -12 puts the local time near noon")


async def test_app_home_today_counts_images_since_the_users_midnight(harness: Harness) -> None:
    zone = _zone_around_noon(time.time())
    offset = zone.utcoffset(None)
    assert offset is not None
    hours = int(offset.total_seconds()) // 3600
    # IANA's Etc/GMT zones have the sign reversed: Etc/GMT-5 is UTC+5.
    harness.slack.user_zones["U1"] = f"Etc/GMT{-hours:+d}"
    await harness.start()
    for text in ("yesterday's owl", "this morning's owl", "two foxes now --n 2"):
        await harness.generate(text)
    midnight = datetime.now(zone).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    yesterday, morning, _ = [job for job, _ in await harness.jobs()]
    with closing(sqlite3.connect(harness.database)) as db, db:
        db.execute("UPDATE generations SET created_at = ? WHERE id = ?", (midnight - 60, yesterday.id))
        db.execute("UPDATE generations SET created_at = ? WHERE id = ?", (midnight + 60, morning.id))
    assert harness.running is not None
    services = harness.running.services
    # No background refresh that read the store before the edit may publish after the one asserted on.
    await services.history.close()
    await History(store=services.store, slack=services.gateway).publish_home(harness.slack.team_id, "U1")
    home = json.dumps(view_of(harness.slack.calls_to("views.publish")[-1]))
    assert "Today: 3 images " in home
