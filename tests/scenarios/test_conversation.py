"""Who a message is for: threads Dreamboard owns, mentions in other people's threads, and `/imagine`
text that only looks like a subcommand."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from PIL import Image

from tests.fakes.recorder import Call
from tests.scenarios.harness import Harness, answers, is_card


def png(colour: str) -> bytes:
    output = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(output, format="PNG")
    return output.getvalue()


async def test_a_mention_in_a_human_thread_acts_on_that_message_only(harness: Harness) -> None:
    await harness.start_at_own_url()
    slack, bot = harness.slack, harness.slack.bot_user_id
    sketch = slack.add_file(png("red"))
    root = slack.human_message("C7", "two ideas for the poster", user="U3", files=[sketch])
    mention = slack.human_message("C7", f"<@{bot}> turn this into a poster", thread_ts=root["ts"])
    await harness.send({**mention, "type": "app_mention"})
    await harness.send(mention)
    await slack.wait_for("chat.update", where=is_card)
    [(job, _)] = await harness.jobs()
    assert (job.thread_ts, job.prompt) == (root["ts"], "turn this into a poster")
    calls_before = len(slack.calls)

    chatter = slack.human_message("C7", "haha I love the second one", user="U3", thread_ts=root["ts"])
    assert (await harness.send(chatter)).status == 200
    sentinel = slack.human_message("C7", f"<@{bot}> again --n 9", thread_ts=root["ts"])
    await harness.send({**sentinel, "type": "app_mention"})
    [answer] = await slack.wait_for("chat.postEphemeral")
    assert answers(slack.calls[calls_before:]) == [answer], "the chatter, sent first, cost no call"
    assert len(await harness.jobs()) == 1


async def test_replies_in_dreamboards_own_thread_still_iterate(harness: Harness) -> None:
    await harness.start()
    root = await harness.generate("a lighthouse")
    await harness.send(harness.slack.human_message("C1", "at night", thread_ts=root))
    await harness.slack.wait_for("chat.update", where=is_card, count=2)
    jobs = await harness.jobs()
    assert [(job.prompt, job.thread_ts) for job, _ in jobs] == [("a lighthouse", root), ("at night", root)]


async def test_a_reply_under_a_top_level_mention_is_not_addressed_to_dreamboard(harness: Harness) -> None:
    await harness.start()
    slack = harness.slack
    mention = slack.human_message("C7", f"<@{slack.bot_user_id}> a paper boat")
    await harness.send({**mention, "type": "app_mention"})
    [done] = await slack.wait_for("chat.update", where=is_card)
    assert "mention @Dreamboard in this thread to iterate" in str(done.params["blocks"])
    calls_before = len(slack.calls)
    await harness.send(slack.human_message("C7", "nice boat!", thread_ts=mention["ts"]))
    await harness.send(slack.human_message("C7", f"<@{slack.bot_user_id}> --n 9", thread_ts=mention["ts"]))
    [answer] = await slack.wait_for("chat.postEphemeral")
    assert answers(slack.calls[calls_before:]) == [answer]
    assert len(await harness.jobs()) == 1


@pytest.mark.parametrize(
    ("text", "prompt"),
    [
        ("seed pods floating on water", "seed pods floating on water"),
        ("show stoppers", "show stoppers"),
        ("history of the roman empire, oil painting", "history of the roman empire, oil painting"),
        ("-- show 0123abcdef", "show 0123abcdef"),
        ("— history", "history"),
    ],
)
async def test_text_that_only_looks_like_a_subcommand_generates(
    harness: Harness, text: str, prompt: str
) -> None:
    harness.oxen.schema = "april"
    await harness.start()
    response = await harness.command(text)
    assert (response.status, response.text) == (200, "")
    await harness.slack.wait_for("chat.update", where=is_card)
    assert [body["prompt"] for body in harness.oxen.submissions] == [prompt]
    assert harness.slack.calls_to("response_url") == []


async def test_a_seed_number_without_a_prompt_is_explained_in_the_ack(harness: Harness) -> None:
    await harness.start()
    response = await harness.command("seed 42")
    assert response.status == 200
    assert "needs a prompt after the number" in response.text
    assert "/imagine -- seed 42" in response.text
    assert await harness.jobs() == []


def edit_values(view: dict[str, Any], **changes: str) -> dict[str, dict[str, Any]]:
    """`view.state.values` for the Edit modal as opened: every input's initial value, unless changed."""
    values: dict[str, dict[str, Any]] = {}
    for block in view["blocks"]:
        if block["type"] != "input":
            continue
        element = block["element"]
        if element["type"] == "static_select":
            option = element.get("initial_option")
            selected = {"value": changes[block["block_id"]]} if block["block_id"] in changes else option
            values[block["block_id"]] = {"value": {"type": "static_select", "selected_option": selected}}
        else:
            text = changes.get(block["block_id"], element.get("initial_value"))
            values[block["block_id"]] = {"value": {"type": "plain_text_input", "value": text}}
    return values


async def open_edit(harness: Harness, job_id: str) -> dict[str, Any]:
    """Press ✏️ Edit on the job's card; returns the modal as views.open received it."""
    card = next(m for m in harness.slack.messages("C1") if m["text"].startswith(f"Result of job {job_id}"))
    actions = next(block for block in card["blocks"] if block["type"] == "actions")
    edit = next(e for e in actions["elements"] if e["action_id"].startswith("dreamboard:edit:"))
    opened = len(harness.slack.calls_to("views.open"))
    payload = harness.slack.button_payload(edit, user_id="U2", channel_id="C1", message=card)
    await harness.slack.send_action(harness.events_url, payload)
    call = (await harness.slack.wait_for("views.open", count=opened + 1))[-1]
    view = call.params["view"]
    return dict(json.loads(view) if isinstance(view, str) else view)


async def test_the_edit_modal_is_acked_before_a_slow_slack_posts_the_job(harness: Harness) -> None:
    harness.oxen.schema = "april"
    await harness.start()
    await harness.generate("a red fox --seed 40")
    [(job, _)] = await harness.jobs()
    view = await open_edit(harness, job.id)
    posts = len(harness.slack.calls_to("chat.postMessage"))
    # Slack waits 3 s for the answer to a view_submission (slack.md §3.5 for the 3000 ms rule); the
    # status post taking longer than that must not delay the answer.
    harness.slack.fault("chat.postMessage", delay=3.5)
    payload = harness.slack.view_submission_payload(
        view, edit_values(view, prompt="a blue fox"), user_id="U2"
    )
    answer = await harness.slack.send_action(harness.events_url, payload)
    assert (answer.status, answer.text) == (200, "")
    assert answer.elapsed < 3.0
    await harness.slack.wait_for("chat.update", where=is_card, count=2)
    assert len(harness.slack.calls_to("chat.postMessage")) == posts + 1, "one status, which becomes the card"
    jobs = await harness.jobs()
    assert [j.prompt for j, _ in jobs] == ["a red fox", "a blue fox"]
    assert jobs[1][0].parent_id == job.id


async def test_a_prompt_longer_than_one_input_box_is_edited_without_losing_any_of_it(
    harness: Harness,
) -> None:
    harness.oxen.schema = "april"
    await harness.start()
    words = [f"word{index}" for index in range(480)]
    prompt = " ".join(words[:300]) + "\n" + " ".join(words[300:])
    assert 3000 < len(prompt) <= 4000
    await harness.generate(prompt)
    [(job, _)] = await harness.jobs()
    assert job.prompt == prompt
    view = await open_edit(harness, job.id)
    boxes = [b for b in view["blocks"] if str(b.get("block_id", "")).startswith("prompt")]
    assert [b["block_id"] for b in boxes] == ["prompt", "prompt_2"]
    assert all(b["element"]["max_length"] == 3000 for b in boxes)
    assert all(len(b["element"]["initial_value"]) <= 3000 for b in boxes)
    assert "…" not in json.dumps(boxes, ensure_ascii=False)

    payload = harness.slack.view_submission_payload(view, edit_values(view, seed="9"), user_id="U2")
    assert (await harness.slack.send_action(harness.events_url, payload)).text == ""
    await harness.slack.wait_for("chat.update", where=is_card, count=2)
    assert harness.oxen.submissions[-1]["prompt"] == prompt
    assert harness.oxen.submissions[-1]["seed"] == 9


async def test_an_edit_that_cannot_start_is_explained_by_dm_when_the_channel_is_gone(
    harness: Harness,
) -> None:
    await harness.start()
    await harness.generate("a red fox")
    [(job, _)] = await harness.jobs()
    view = await open_edit(harness, job.id)
    harness.slack.set_channel_error("C1", "channel_not_found")
    payload = harness.slack.view_submission_payload(
        view, edit_values(view, prompt="a blue fox"), user_id="U2"
    )
    assert (await harness.slack.send_action(harness.events_url, payload)).text == ""
    [dm] = await harness.slack.wait_for("chat.postMessage", where=lambda call: call.params["channel"] == "U2")
    assert "invite" in dm.params["text"].lower(), "the ephemeral was refused too, so the answer is a DM"
    assert len(await harness.jobs()) == 1


def ephemeral_text(call: Call) -> str:
    return str(call.params.get("text"))


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ({"status": 429, "retry_after": 600}, "Send your message again in a minute"),
        ({"error": "missing_scope"}, "reinstall Dreamboard with the scopes"),
        ({"drop": True, "times": 4}, "Send your message again in a moment"),
        ({"status": 503, "times": 4}, "Send your message again in a moment"),
    ],
    ids=["ratelimited", "missing-scope", "connection-dropped", "server-error"],
)
async def test_a_thread_that_cannot_be_read_is_explained_to_the_replier(
    harness: Harness, fault: dict[str, Any], expected: str
) -> None:
    await harness.start()
    root = await harness.generate("a lighthouse")
    harness.slack.fault("conversations.replies", **fault)
    await harness.send(harness.slack.human_message("C1", "at night", user="U5", thread_ts=root))
    [answer] = await harness.slack.wait_for("chat.postEphemeral")
    assert (answer.params["user"], answer.params["thread_ts"]) == ("U5", root)
    assert "`conversations.replies` answered" in ephemeral_text(answer)
    assert "nothing was started" in ephemeral_text(answer)
    assert expected in ephemeral_text(answer)
    assert len(await harness.jobs()) == 1


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ({"error": "file_not_found"}, "it may have been deleted"),
        ({"error": "missing_scope"}, "reinstall Dreamboard with the scopes"),
        ({"status": 429, "retry_after": 600}, "Send your message again in a minute"),
        ({"drop": True, "times": 4}, "Send your message again in a moment"),
    ],
    ids=["file-not-found", "missing-scope", "ratelimited", "connection-dropped"],
)
async def test_an_attached_file_slack_will_not_describe_is_explained(
    harness: Harness, fault: dict[str, Any], expected: str
) -> None:
    await harness.start_at_own_url()
    root = await harness.generate("a lighthouse")
    file = harness.slack.add_file(png("blue"), name="night.png")
    harness.slack.fault("files.info", **fault)
    reply = harness.slack.human_message(
        "C1", "at night", user="U5", thread_ts=root, files=[harness.slack.file_stub(file)]
    )
    await harness.send(reply)
    [answer] = await harness.slack.wait_for("chat.postEphemeral")
    assert answer.params["user"] == "U5"
    assert "`files.info` answered" in ephemeral_text(answer)
    assert expected in ephemeral_text(answer)
    assert len(await harness.jobs()) == 1


async def test_a_stub_file_is_looked_up_and_used(harness: Harness) -> None:
    await harness.start_at_own_url()
    root = await harness.generate("a lighthouse")
    blue = png("blue")
    file = harness.slack.add_file(blue, name="night.png")
    reply = harness.slack.human_message(
        "C1", "at night", thread_ts=root, files=[harness.slack.file_stub(file)]
    )
    await harness.send(reply)
    await harness.slack.wait_for("chat.update", where=is_card, count=2)
    assert file["id"] in [call.params["file"] for call in harness.slack.calls_to("files.info")]
    assert harness.oxen.fetched_references[-1][0] == blue


async def test_an_answer_slack_refuses_as_an_ephemeral_arrives_by_dm(harness: Harness) -> None:
    await harness.start()
    root = await harness.generate("a lighthouse")
    # Rate-limited for longer than the pacer's patience: the ephemeral fails at once.
    harness.slack.fault("chat.postEphemeral", status=429, retry_after=600)
    await harness.send(harness.slack.human_message("C1", "again --n 9", user="U5", thread_ts=root))
    [dm] = await harness.slack.wait_for("chat.postMessage", where=lambda call: call.params["channel"] == "U5")
    assert "--n 9" in ephemeral_text(dm)


async def press_edit(harness: Harness, job_id: str) -> None:
    """Press ✏️ Edit on the job's card (without waiting for a modal)."""
    card = next(m for m in harness.slack.messages("C1") if m["text"].startswith(f"Result of job {job_id}"))
    actions = next(block for block in card["blocks"] if block["type"] == "actions")
    edit = next(e for e in actions["elements"] if e["action_id"].startswith("dreamboard:edit:"))
    payload = harness.slack.button_payload(edit, user_id="U2", channel_id="C1", message=card)
    await harness.slack.send_action(harness.events_url, payload)


async def test_an_edit_form_slack_will_not_open_is_explained(harness: Harness) -> None:
    await harness.start()
    await harness.generate("a red fox")
    [(job, _)] = await harness.jobs()
    # views.open's answer for a trigger used after its 3 s (slack.md §4, Modals).
    harness.slack.fault("views.open", error="expired_trigger_id")
    await press_edit(harness, job.id)
    [answer] = await harness.slack.wait_for("response_url")
    assert "did not open the edit form (`expired_trigger_id`)" in ephemeral_text(answer)
    assert answer.params["response_type"] == "ephemeral"


async def test_edit_on_a_deleted_result_says_so(harness: Harness) -> None:
    await harness.start()
    await harness.generate("a red fox")
    [(job, _)] = await harness.jobs()
    assert harness.running is not None
    await harness.running.services.store.mark_deleted(job.id, "U1")  # e.g. deleted from another client
    await press_edit(harness, job.id)
    [answer] = await harness.slack.wait_for("response_url")
    assert f"Job `{job.id}` does not exist or was deleted." in ephemeral_text(answer)
    assert harness.slack.calls_to("views.open") == []
