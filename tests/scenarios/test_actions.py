"""Buttons and reactions on results: reroll, vary, 4K, edit, recipe, cancel/delete, revive."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.store.model import JobState
from tests.fakes.slack import SignedResponse
from tests.scenarios.harness import Harness, answers, is_card


def parsed(value: Any) -> Any:
    """A JSON parameter as Slack received it (slack_sdk sends some form-encoded, some as JSON)."""
    return json.loads(value) if isinstance(value, str) else value


def card(harness: Harness, job_id: str, channel: str = "C1") -> dict[str, Any]:
    """The stored result-card message of a job."""
    return next(m for m in harness.slack.messages(channel) if m["text"].startswith(f"Result of job {job_id}"))


def button(message: dict[str, Any], action: str, idx: int = 0) -> dict[str, Any]:
    actions = next(block for block in message["blocks"] if block["type"] == "actions")
    return next(
        e
        for e in actions["elements"]
        if e["action_id"].startswith(f"dreamboard:{action}:") and e["value"].endswith(f":{idx}")
    )


async def press(
    harness: Harness,
    message: dict[str, Any],
    action: str,
    *,
    user: str = "U2",
    idx: int = 0,
    channel: str = "C1",
) -> SignedResponse:
    payload = harness.slack.button_payload(
        button(message, action, idx), user_id=user, channel_id=channel, message=message
    )
    return await harness.slack.send_action(harness.events_url, payload)


async def react(
    harness: Harness, reaction: str, ts: str, *, user: str = "U2", channel: str = "C1", **fields: Any
) -> SignedResponse:
    event = harness.slack.reaction_event(reaction, user=user, channel=channel, ts=ts, **fields)
    return await harness.slack.send_event(harness.events_url, event)


async def first_job(harness: Harness, text: str = "a red fox --seed 40 --n 2") -> tuple[str, str]:
    """Generate a job; returns (job id, thread root ts)."""
    root = await harness.generate(text)
    job, _ = (await harness.jobs())[-1]
    return job.id, root


async def next_card(harness: Harness, count: int) -> None:
    """Wait for the `count`-th result card (a status message rewritten in place)."""
    await harness.slack.wait_for("chat.update", where=is_card, count=count)


@pytest.fixture
async def april(harness: Harness) -> Harness:
    harness.oxen.schema = "april"
    await harness.start()
    return harness


async def test_reroll_keeps_prompt_and_settings_with_a_new_seed(april: Harness) -> None:
    job_id, root = await first_job(april, "a red fox --seed 40 --ar 16:9 --size 4K")
    assert (await press(april, card(april, job_id), "reroll")).status == 200
    await next_card(april, 2)
    original, body = april.oxen.submissions
    assert {k: body[k] for k in ("prompt", "size", "aspect_ratio")} == {
        "prompt": "a red fox",
        "size": "4K",
        "aspect_ratio": "16:9",
    }
    assert body["seed"] != original["seed"]
    assert "input_image" not in body
    job, _ = (await april.jobs())[-1]
    assert (job.user_id, job.parent_id, job.thread_ts) == ("U2", job_id, root)
    new_card = card(april, job.id)
    assert new_card["thread_ts"] == root
    assert f"↳ from job `{job_id}` by <@U1>" in json.dumps(new_card["blocks"], ensure_ascii=False)


async def test_vary_uses_the_chosen_image_as_the_reference(april: Harness) -> None:
    job_id, _ = await first_job(april)
    [(_, images)] = await april.jobs()
    await press(april, card(april, job_id), "vary", idx=1)
    await next_card(april, 2)
    body = april.oxen.submissions[-1]
    assert body["prompt"] == "a red fox"
    assert body["seed"] not in (40, 41)
    assert body["aspect_ratio"] == "match_input_image"
    assert april.oxen.fetched_references[-1] == [april.slack.uploaded_files[str(images[1].file_id)].content]


async def test_upscale_is_4k_of_the_image_with_its_seed(april: Harness) -> None:
    job_id, _ = await first_job(april)
    await press(april, card(april, job_id), "upscale", idx=1)
    await next_card(april, 2)
    body = april.oxen.submissions[-1]
    assert (body["size"], body["seed"], body["aspect_ratio"]) == ("4K", 41, "match_input_image")
    assert len(body["input_image"]) == 1


async def test_reactions_do_what_the_buttons_do(april: Harness) -> None:
    job_id, _ = await first_job(april, "a red fox --seed 40")
    card_ts = card(april, job_id)["ts"]
    await react(april, "repeat", card_ts)
    await react(april, "twisted_rightwards_arrows", card_ts)
    await react(april, "arrow_up", card_ts)
    await next_card(april, 4)
    reroll, vary, upscale = sorted(april.oxen.submissions[1:], key=lambda b: ("input_image" in b, b["size"]))
    assert "input_image" not in reroll
    assert (vary["size"], len(vary["input_image"])) == ("2K", 1)
    assert (upscale["size"], upscale["seed"]) == ("4K", 40)


async def test_reactions_on_the_image_message_work_too(april: Harness) -> None:
    job_id, root = await first_job(april, "a red fox --seed 40")
    [(_, images)] = await april.jobs()
    upload = next(m for m in april.slack.messages("C1") if images[0].file_id in m.get("files", []))
    assert await april.wait_upload_ts(job_id) == upload["ts"]
    await react(april, "twisted_rightwards_arrows", upload["ts"])
    await next_card(april, 2)
    job, _ = (await april.jobs())[-1]
    assert (job.parent_id, job.thread_ts) == (job_id, root)
    assert len(april.oxen.submissions[-1]["input_image"]) == 1


async def test_envelope_sends_the_recipe_by_dm(april: Harness) -> None:
    job_id, _ = await first_job(april, "a red fox --seed 40")
    await react(april, "envelope", card(april, job_id)["ts"], user="U3")
    [dm] = await april.slack.wait_for("chat.postMessage", where=lambda c: c.params["channel"] == "U3")
    text = json.dumps(dm.params["blocks"])
    assert "/imagine a red fox --size 2K --seed 40 --model bytedance-seedream-4-5" in text
    assert job_id in text


async def test_recipe_button_answers_only_the_presser(april: Harness) -> None:
    job_id, _ = await first_job(april, "a red fox --seed 40")
    await press(april, card(april, job_id), "recipe", user="U3")
    [answer] = await april.slack.wait_for("response_url")
    assert answer.params["response_type"] == "ephemeral"
    assert "--seed 40" in json.dumps(answer.params["blocks"])


async def test_edit_opens_a_prefilled_modal_and_runs_the_edited_recipe(april: Harness) -> None:
    job_id, root = await first_job(april, "a red fox --seed 40 --ar 16:9")
    await press(april, card(april, job_id), "edit")
    [opened] = await april.slack.wait_for("views.open")
    view = parsed(opened.params["view"])
    prompt_block = next(b for b in view["blocks"] if b.get("block_id") == "prompt")
    assert prompt_block["element"]["initial_value"] == "a red fox"

    def values(prompt: str, seed: str) -> dict[str, dict[str, Any]]:
        return {
            "prompt": {"value": {"type": "plain_text_input", "value": prompt}},
            "aspect_ratio": {"value": {"type": "static_select", "selected_option": {"value": "9:16"}}},
            "size": {"value": {"type": "static_select", "selected_option": {"value": "4K"}}},
            "seed": {"value": {"type": "plain_text_input", "value": seed}},
        }

    bad = await april.slack.send_action(
        april.events_url, april.slack.view_submission_payload(view, values("", "x"), user_id="U2")
    )
    assert json.loads(bad.text) == {
        "response_action": "errors",
        "errors": {
            "prompt": "Describe the image.",
            "seed": "A whole number from 0 to 2147483647, or empty for a random seed.",
        },
    }
    good = await april.slack.send_action(
        april.events_url, april.slack.view_submission_payload(view, values("a blue fox", "5"), user_id="U2")
    )
    assert (good.status, good.text) == (200, "")
    await next_card(april, 2)
    body = april.oxen.submissions[-1]
    assert {k: body[k] for k in ("prompt", "aspect_ratio", "size", "seed")} == {
        "prompt": "a blue fox",
        "aspect_ratio": "9:16",
        "size": "4K",
        "seed": 5,
    }
    job, _ = (await april.jobs())[-1]
    assert (job.user_id, job.parent_id, job.thread_ts) == ("U2", job_id, root)


async def test_a_double_click_makes_one_job(april: Harness) -> None:
    job_id, _ = await first_job(april)
    message = card(april, job_id)
    await press(april, message, "reroll")
    await press(april, message, "reroll")
    await next_card(april, 2)
    await press(april, message, "recipe")
    await april.slack.wait_for("response_url")
    assert len(await april.jobs()) == 2
    assert len(april.oxen.submissions) == 4, "the first job and one reroll, two images each"


async def test_a_reaction_added_removed_and_added_again_makes_one_job(april: Harness) -> None:
    job_id, _ = await first_job(april, "a fox")
    card_ts = card(april, job_id)["ts"]
    await react(april, "repeat", card_ts)
    await next_card(april, 2)
    await react(april, "repeat", card_ts)
    await react(april, "arrows_counterclockwise", card_ts, user="U3")
    await next_card(april, 3)
    assert len(await april.jobs()) == 3


async def test_reactions_on_other_messages_cost_no_api_call(april: Harness) -> None:
    job_id, _ = await first_job(april, "a fox")
    human = april.slack.human_message("C1", "nice")
    before = len(april.slack.calls)
    await react(april, "repeat", human["ts"], item_user="U2")
    await react(april, "thumbsup", card(april, job_id)["ts"])
    await react(april, "repeat", "1500000000.000100")
    await react(april, "envelope", card(april, job_id)["ts"], user="U3")
    [dm] = await april.slack.wait_for("chat.postMessage", where=lambda c: c.params["channel"] == "U3")
    assert answers(april.slack.calls[before:]) == [dm], "only the envelope, sent last, reached Slack"
    assert len(await april.jobs()) == 1


async def test_x_by_someone_else_is_refused(april: Harness) -> None:
    job_id, root = await first_job(april, "a fox")
    await react(april, "x", card(april, job_id)["ts"], user="U2")
    [refusal] = await april.slack.wait_for("chat.postEphemeral")
    assert (refusal.params["user"], refusal.params["thread_ts"]) == ("U2", root)
    assert "Only <@U1> or a workspace admin" in refusal.params["text"]
    assert april.slack.deleted_files == []


async def test_x_by_the_requester_deletes_results_but_keeps_the_audit_row(april: Harness) -> None:
    job_id, root = await first_job(april, "a fox")
    [(job, images)] = await april.jobs()
    upload_ts = await april.wait_upload_ts(job_id)
    card_ts = card(april, job_id)["ts"]
    assert card_ts == root == job.status_ts
    await react(april, "x", card_ts, user="U1")
    await april.slack.wait_for("chat.update", where=lambda c: "Deleted" in c.params["text"])
    assert april.slack.deleted_files == [images[0].file_id]
    assert [c.params["ts"] for c in april.slack.calls_to("chat.delete")] == [upload_ts]
    # The thread root stays as one "Deleted" line (it holds the thread); nothing of the result is left.
    [left] = april.slack.messages("C1")
    assert (left["ts"], left.get("files"), "a fox" in json.dumps(left["blocks"])) == (root, None, True)
    assert not any(b["type"] == "actions" for b in left["blocks"])
    assert "Deleted" in left["text"]
    [(job, _)] = await april.jobs()
    assert (job.state, job.deleted_by) == (JobState.UPLOADED, "U1")


async def test_x_on_an_iteration_deletes_its_card_and_image_message_from_the_thread(april: Harness) -> None:
    job_id, root = await first_job(april, "a fox")
    await press(april, card(april, job_id), "reroll", user="U1")
    await next_card(april, 2)
    reroll, images = (await april.jobs())[-1]
    upload_ts = await april.wait_upload_ts(reroll.id)
    await april.slack.wait_shared()
    await react(april, "x", str(reroll.status_ts), user="U1")
    await april.slack.wait_for("chat.delete", count=2)
    assert sorted(c.params["ts"] for c in april.slack.calls_to("chat.delete")) == sorted(
        [upload_ts, str(reroll.status_ts)]
    )
    assert april.slack.deleted_files == [images[0].file_id]
    left = [m["ts"] for m in april.slack.messages("C1")]
    assert str(reroll.status_ts) not in left
    assert upload_ts not in left
    assert card(april, job_id)["ts"] == root, "the first job's result is untouched"


async def test_admins_may_delete_anyones_results(april: Harness) -> None:
    april.slack.admins.add("U9")
    job_id, _ = await first_job(april, "a fox")
    await react(april, "x", card(april, job_id)["ts"], user="U9")
    await april.slack.wait_for("chat.update", where=lambda c: "Deleted" in c.params["text"])


async def test_x_on_the_status_message_cancels_a_queued_job(april: Harness) -> None:
    await april.stop()
    await april.start(max_concurrent_jobs=1)
    april.oxen.hold()
    await april.command("keeps the only slot busy", user_id="U9")
    await april.oxen.recorder.wait_for("POST /ai/queue")
    await april.command("a fox")
    queued, _ = (await april.announced_jobs(2))[-1]
    await react(april, "x", str(queued.status_ts), user="U1")
    await april.slack.wait_for("chat.update", where=lambda c: "Cancelled" in c.params["text"])
    april.oxen.release()
    await next_card(april, 1)
    assert [body["prompt"] for body in april.oxen.submissions] == ["keeps the only slot busy"]
    assert (await april.jobs())[-1][0].state is JobState.CANCELLED


async def test_x_cancels_a_running_job_on_oxen_too(april: Harness) -> None:
    april.oxen.hold()
    await april.command("a fox")
    await april.oxen.recorder.wait_for("POST /ai/queue")
    [(job, _)] = await april.jobs()
    await react(april, "x", str(job.status_ts), user="U1")
    await april.slack.wait_for("chat.update", where=lambda c: "Cancelled" in c.params["text"])
    [cancel] = april.oxen.recorder.calls_to("DELETE /ai/queue/{id}")
    assert cancel.params["generation_id"] in april.oxen.generations
    [(job, _)] = await april.jobs()
    assert job.state is JobState.CANCELLED


async def test_show_revives_a_card_with_working_buttons_after_a_restart(april: Harness) -> None:
    job_id, _ = await first_job(april, "a fox --seed 40")
    await april.stop()
    # Slack has processed the files and the bot waits no longer for it: the card shows the images.
    april.slack.file_processing_delay = 0.0
    await april.start(slack_file_grace=0.0)
    response = await april.command(f"show {job_id}", channel_id="C1")
    assert response.text == ""
    [revived] = await april.slack.wait_for("chat.postMessage", where=is_card)
    assert "thread_ts" not in revived.params
    assert any(block["type"] == "image" for block in parsed(revived.params["blocks"]))
    [*_, message] = [
        m for m in april.slack.messages("C1") if m["text"] == revived.params["text"] and "thread_ts" not in m
    ]
    await press(april, message, "reroll", user="U5")
    await next_card(april, 2)
    job, _ = (await april.jobs())[-1]
    assert (job.user_id, job.parent_id, job.thread_ts) == ("U5", job_id, message["ts"])


async def test_show_of_an_unknown_job_is_explained(april: Harness) -> None:
    await april.command("show 0123abcdef")
    [answer] = await april.slack.wait_for("response_url")
    assert "does not exist" in answer.params["text"]


async def test_results_cannot_be_shown_elsewhere_by_others(april: Harness) -> None:
    job_id, _ = await first_job(april, "a fox")
    await april.command(f"show {job_id}", channel_id="C2", user_id="U2")
    [answer] = await april.slack.wait_for("response_url")
    assert "Only <@U1> can show" in answer.params["text"]


async def test_x_also_deletes_reposted_cards(april: Harness) -> None:
    job_id, root = await first_job(april, "a fox")
    upload_ts = await april.wait_upload_ts(job_id)
    await april.command(f"show {job_id}", channel_id="C2")
    [revived] = await april.slack.wait_for("chat.postMessage", where=is_card)
    [repost] = april.slack.messages("C2")
    await react(april, "x", root, user="U1")
    await april.slack.wait_for("chat.delete", count=2)
    deleted = sorted((c.params["channel"], c.params["ts"]) for c in april.slack.calls_to("chat.delete"))
    assert deleted == sorted([("C1", upload_ts), ("C2", repost["ts"])])
    assert april.slack.messages("C2") == []
    assert revived.params["channel"] == "C2"
