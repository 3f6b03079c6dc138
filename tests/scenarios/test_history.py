"""Per-user seed history: /imagine history, seed, replay, favourites, App Home and CSV export."""

from __future__ import annotations

import csv
import io
import json
import time
from typing import Any

from bot.features.history import History
from bot.store.model import JobState
from tests.scenarios.harness import Harness, is_card


def texts(message: dict[str, Any]) -> str:
    return json.dumps(message.get("blocks"), ensure_ascii=False)


def buttons(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for block in message["blocks"] if block["type"] == "actions" for e in block["elements"]]


async def fill(harness: Harness) -> None:
    """Alice's jobs in three channels, and one of Bob's."""
    for index, channel in enumerate(["C1", "C2", "C3"] * 4):
        await harness.generate(
            f"{'fox' if index % 2 else 'owl'} number {index} --seed {100 + index}", channel_id=channel
        )
    await harness.generate("bob's secret fox", user_id="UB", channel_id="C1")


async def test_history_lists_only_my_jobs_newest_first_filtered_and_paged(harness: Harness) -> None:
    await harness.start(max_queued_per_user=20)
    await fill(harness)

    response = await harness.command("history 15 fox")
    assert response.text == ""
    [page] = await harness.slack.wait_for("response_url")
    shown = texts(page.params)
    assert page.params["response_type"] == "ephemeral"
    assert shown.index("fox number 11") < shown.index("fox number 9")
    assert "owl" not in shown
    assert "bob" not in shown
    assert "https://dreamteam.slack.com/archives/C2/p" in shown
    assert "`109`" in shown
    assert not any(b["text"]["text"].startswith("Next") for b in buttons(page.params))

    await harness.command("history 12")
    [_, first] = await harness.slack.wait_for("response_url", count=2)
    assert [b["text"]["text"] for b in buttons(first.params)][-1] == "Next →"
    assert "number 11*" in texts(first.params)
    assert "number 1*" not in texts(first.params)
    next_button = buttons(first.params)[-1]
    message = {"ts": "1.1", "blocks": first.params["blocks"], "text": first.params["text"]}
    await harness.slack.send_action(
        harness.events_url,
        harness.slack.button_payload(next_button, user_id="U1", channel_id="C1", message=message),
    )
    [*_, second] = await harness.slack.wait_for("response_url", count=3)
    assert second.params["replace_original"] is True
    shown = texts(second.params)
    assert "number 1*" in shown
    assert "number 0*" in shown
    assert "number 2*" not in shown
    assert [b["text"]["text"] for b in buttons(second.params)][-1] == "← Previous"


async def test_history_out_of_range_and_empty(harness: Harness) -> None:
    await harness.start()
    assert "N is 1 to 50" in (await harness.command("history 51")).text
    await harness.command("history")
    [page] = await harness.slack.wait_for("response_url")
    assert "No generations yet" in page.params["text"]


async def test_replay_uses_the_stored_seed_and_settings_in_the_original_thread(harness: Harness) -> None:
    harness.oxen.schema = "april"
    await harness.start()
    root = await harness.generate("a red fox --seed 77 --ar 4:3 --size 4K", channel_id="C2")
    await harness.command("history", channel_id="C9")
    [page] = await harness.slack.wait_for("response_url")
    replay, new_seed = buttons(page.params)[:2]
    message = {"ts": "2.2", "blocks": page.params["blocks"], "text": page.params["text"]}
    for count, button in enumerate((replay, new_seed), start=2):
        payload = harness.slack.button_payload(button, user_id="U1", channel_id="C9", message=message)
        await harness.slack.send_action(harness.events_url, payload)
        await harness.oxen.recorder.wait_for("POST /ai/queue", count=count)
    await harness.slack.wait_for("chat.update", where=is_card, count=3)
    original, replayed, reseeded = harness.oxen.submissions
    assert replayed == original
    assert {k: v for k, v in reseeded.items() if k != "seed"} == {
        k: v for k, v in original.items() if k != "seed"
    }
    assert reseeded["seed"] != 77
    jobs = await harness.jobs()
    assert all((job.channel_id, job.thread_ts) == ("C2", root) for job, _ in jobs)


async def test_seed_command_shows_a_recipe_or_starts_with_that_seed(harness: Harness) -> None:
    harness.oxen.schema = "april"
    await harness.start()
    await harness.generate("a red fox --seed 5")
    [(job, _)] = await harness.jobs()
    await harness.command(f"seed {job.id}")
    [recipe] = await harness.slack.wait_for("response_url")
    assert "/imagine a red fox --size 2K --seed 5" in texts(recipe.params)

    await harness.command("seed 1234 a blue owl --ar 3:2")
    await harness.slack.wait_for("chat.update", where=is_card, count=2)
    assert {k: harness.oxen.submissions[-1][k] for k in ("prompt", "seed", "aspect_ratio")} == {
        "prompt": "a blue owl",
        "seed": 1234,
        "aspect_ratio": "3:2",
    }
    await harness.command("seed deadbeef00")
    [_, missing] = await harness.slack.wait_for("response_url", count=2)
    assert "No job `deadbeef00` that you can see" in missing.params["text"]


async def test_other_peoples_recipes_stay_private(harness: Harness) -> None:
    await harness.start()
    await harness.generate("bob's secret fox", user_id="UB", channel_id="CPRIVATE")
    [(job, _)] = await harness.jobs()
    await harness.command(f"seed {job.id}", user_id="U1", channel_id="C1")
    [answer] = await harness.slack.wait_for("response_url")
    assert f"No job `{job.id}` that you can see" in answer.params["text"]


async def test_app_home_shows_recent_jobs_favourites_and_usage(harness: Harness) -> None:
    await harness.start()
    await harness.generate("a lighthouse")
    [(job, _)] = await harness.jobs()
    card = next(m for m in harness.slack.messages("C1") if m["text"].startswith("Result of job"))
    favourite = next(e for e in buttons(card) if e["action_id"].startswith("dreamboard:favourite"))
    payload = harness.slack.button_payload(favourite, user_id="U1", channel_id="C1", message=card)
    await harness.slack.send_action(harness.events_url, payload)
    [added] = await harness.slack.wait_for("response_url")
    assert "Added job" in added.params["text"]

    assert harness.running is not None
    await harness.running.services.history.publish_home(harness.slack.team_id, "U1")
    publish = harness.slack.calls_to("views.publish")[-1]
    view = (
        json.loads(publish.params["view"])
        if isinstance(publish.params["view"], str)
        else publish.params["view"]
    )
    assert publish.params["user_id"] == "U1"
    assert len(view["blocks"]) <= 100
    shown = json.dumps(view, ensure_ascii=False)
    assert "⭐ Favourites" in shown
    assert "Today: 1 image " in shown
    # The job is a favourite and recent: each section has its own block_ids, so Slack took the view.
    block_ids = {block.get("block_id") for block in view["blocks"]}
    assert {f"favourite-{job.id}", f"history-{job.id}"} <= block_ids
    assert harness.slack.rejections == []


async def test_opening_app_home_publishes_it(harness: Harness) -> None:
    await harness.start()
    await harness.send({"type": "app_home_opened", "user": "U4", "channel": "D4", "tab": "home"})
    [publish] = await harness.slack.wait_for("views.publish")
    assert publish.params["user_id"] == "U4"


async def test_app_home_refreshes_are_throttled_per_user(harness: Harness) -> None:
    await harness.start()
    assert harness.running is not None
    services = harness.running.services
    history = History(store=services.store, slack=services.gateway, min_interval=0.3)
    started = time.monotonic()
    for _ in range(5):
        history.refresh_home(harness.slack.team_id, "U7")
    await harness.slack.wait_for("views.publish", where=lambda c: c.params["user_id"] == "U7")
    for _ in range(5):
        history.refresh_home(harness.slack.team_id, "U7")
    await harness.slack.wait_for("views.publish", count=2, where=lambda c: c.params["user_id"] == "U7")
    assert time.monotonic() - started >= 0.3
    assert len([c for c in harness.slack.calls_to("views.publish") if c.params["user_id"] == "U7"]) == 2
    await history.close()


async def test_export_sends_a_csv_by_dm(harness: Harness) -> None:
    await harness.start()
    await harness.generate('a "quoted", comma\nand newline fox')
    response = await harness.command("history export")
    assert "direct message" in response.text
    [complete] = await harness.slack.wait_for(
        "files.completeUploadExternal", where=lambda call: call.params["channel_id"] == "DU1"
    )
    [file_id] = [entry["id"] for entry in json.loads(complete.params["files"])]
    rows = list(csv.reader(io.StringIO(harness.slack.uploaded_files[file_id].content.decode())))
    assert rows[1][3] == 'a "quoted", comma\nand newline fox'
    assert len(rows) == 2


async def test_deleted_results_leave_history_but_keep_their_row(harness: Harness) -> None:
    await harness.start()
    await harness.generate("a fox to delete")
    [(job, _)] = await harness.jobs()
    event = harness.slack.reaction_event("x", user="U1", channel="C1", ts=str(job.card_ts))
    await harness.slack.send_event(harness.events_url, event)
    await harness.slack.wait_for("chat.update", where=lambda c: "Deleted" in c.params["text"])
    await harness.command("history")
    [*_, page] = await harness.slack.wait_for("response_url", count=1)
    assert "No generations yet" in page.params["text"]
    [(job, _)] = await harness.jobs()
    assert (job.state, job.deleted_by) == (JobState.UPLOADED, "U1")
    assert time.time() - (job.deleted_at or 0) < 60
