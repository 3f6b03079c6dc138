"""Threads are where images evolve: replies iterate, attachments become references, mentions work anywhere."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest
from PIL import Image

from bot.store.model import JobState
from tests.fakes.recorder import Call
from tests.scenarios.harness import Harness, answers, is_card


def png(colour: str, size: tuple[int, int] = (64, 48)) -> bytes:
    output = io.BytesIO()
    Image.new("RGB", size, colour).save(output, format="PNG")
    return output.getvalue()


async def start_public(harness: Harness, **overrides: Any) -> None:
    """Start with bot-hosted signed reference URLs (the bot's own loopback address as PUBLIC_BASE_URL)."""
    await harness.start_at_own_url(**overrides)


async def next_job_submissions(harness: Harness, count: int) -> list[dict[str, Any]]:
    await harness.oxen.recorder.wait_for("POST /ai/queue", count=count)
    return harness.oxen.submissions[count - 1 :]


async def test_a_reply_with_two_images_iterates_on_the_latest_result(harness: Harness) -> None:
    harness.oxen.schema = "april"
    await start_public(harness)
    root = await harness.generate("a red fox in snow")
    [(first, first_images)] = await harness.jobs()
    red, blue = png("red"), png("blue")
    files = [harness.slack.add_file(red, name="red.png"), harness.slack.add_file(blue, name="blue.png")]
    await harness.send(harness.slack.human_message("C1", "make it night time", thread_ts=root, files=files))

    await harness.slack.wait_for("chat.update", where=is_card, count=2)
    body = harness.oxen.submissions[-1]
    assert body["prompt"] == "make it night time"
    assert body["aspect_ratio"] == "match_input_image"
    assert len(body["input_image"]) == 3
    assert all(url.startswith(f"{harness.url}/refs/") for url in body["input_image"]), "all hosted by the bot"
    fetched = harness.oxen.fetched_references[-1]
    first_result = harness.slack.uploaded_files[str(first_images[0].file_id)].content
    assert fetched == [red, blue, first_result]

    job, _ = (await harness.jobs())[-1]
    assert (job.parent_id, job.thread_ts, job.state) == (first.id, root, JobState.UPLOADED)
    [card] = [call for call in harness.slack.calls_to("chat.update") if is_card(call)][1:]
    assert f"↳ from job `{first.id}` by <@U1>" in json.dumps(card.params["blocks"], ensure_ascii=False)
    assert card.params["ts"] == job.status_ts, "the iteration's status message became its card"
    assert harness.slack.message("C1", str(job.status_ts))["thread_ts"] == root, "a reply in the thread"


async def test_more_than_ten_candidates_keep_the_newest_ten_and_say_which_were_left_out(
    harness: Harness,
) -> None:
    await start_public(harness)
    root = await harness.generate("a lighthouse")
    for index in range(3):
        earlier = [harness.slack.add_file(png("green"), name=f"earlier-{index}.png")]
        harness.slack.human_message("C1", "", thread_ts=root, files=earlier)
    attached = [harness.slack.add_file(png("white"), name=f"new-{index}.png") for index in range(8)]
    await harness.send(harness.slack.human_message("C1", "combine these", thread_ts=root, files=attached))

    [card] = await harness.slack.wait_for(
        "chat.update", where=lambda c: is_card(c) and "combine" in c.params["text"]
    )
    assert len(harness.oxen.submissions[-1]["input_image"]) == 10
    text = json.dumps(card.params["blocks"])
    assert "Left out (over the 10-reference limit): earlier-1.png, earlier-0.png" in text


async def test_earlier_images_are_found_in_long_threads(harness: Harness) -> None:
    await start_public(harness)
    root = await harness.generate("a lighthouse")
    early = harness.slack.add_file(png("green"), name="early.png")
    harness.slack.human_message("C1", "look", thread_ts=root, files=[early])
    for index in range(250):
        harness.slack.human_message("C1", f"chat {index}", thread_ts=root)
    await harness.send(harness.slack.human_message("C1", "use everything", thread_ts=root))
    await harness.slack.wait_for("chat.update", where=is_card, count=2)
    assert len(harness.slack.calls_to("conversations.replies")) == 2
    assert len(harness.oxen.submissions[-1]["input_image"]) == 2


async def test_fresh_ignores_the_base_and_earlier_images(harness: Harness) -> None:
    await start_public(harness)
    root = await harness.generate("a lighthouse")
    harness.slack.human_message("C1", "", thread_ts=root, files=[harness.slack.add_file(png("green"))])
    await harness.send(harness.slack.human_message("C1", "a castle instead --fresh", thread_ts=root))
    await harness.slack.wait_for("chat.update", where=is_card, count=2)
    body = harness.oxen.submissions[-1]
    assert body["prompt"] == "a castle instead"
    assert "input_image" not in body
    job, _ = (await harness.jobs())[-1]
    assert job.parent_id is None


async def test_a_sign_in_page_instead_of_the_file_is_refused_by_name(harness: Harness) -> None:
    await start_public(harness)
    root = await harness.generate("a lighthouse")
    file = harness.slack.add_file(png("red"), name="moodboard.png")
    harness.slack.serve_html_instead(file["id"])
    await harness.send(harness.slack.human_message("C1", "use this", thread_ts=root, files=[file]))
    [ephemeral] = await harness.slack.wait_for("chat.postEphemeral")
    assert ephemeral.params["user"] == "U2"
    assert ephemeral.params["thread_ts"] == root
    assert "sign-in page instead of “moodboard.png”" in ephemeral.params["text"]
    assert len(await harness.jobs()) == 1


async def test_the_token_goes_only_to_allow_listed_hosts(harness: Harness) -> None:
    await start_public(harness, slack_file_hosts="files.slack.com")
    root = await harness.generate("a lighthouse")
    file = harness.slack.add_file(png("red"), name="elsewhere.png")
    await harness.send(harness.slack.human_message("C1", "use this", thread_ts=root, files=[file]))
    [ephemeral] = await harness.slack.wait_for("chat.postEphemeral")
    assert "not stored on Slack's file servers" in ephemeral.params["text"]
    assert harness.slack.calls_to("file_download") == []
    assert len(await harness.jobs()) == 1


@pytest.mark.parametrize(("content", "name", "fragment"), [(b"%PDF-1.7", "brief.pdf", "not an image")])
async def test_non_images_are_refused(harness: Harness, content: bytes, name: str, fragment: str) -> None:
    await start_public(harness)
    root = await harness.generate("a lighthouse")
    file = harness.slack.add_file(content, name=name, mimetype="application/pdf")
    await harness.send(harness.slack.human_message("C1", "use this", thread_ts=root, files=[file]))
    [ephemeral] = await harness.slack.wait_for("chat.postEphemeral")
    assert fragment in ephemeral.params["text"]
    assert name in ephemeral.params["text"]


async def test_a_mention_with_an_image_in_any_thread_starts_a_job_there(harness: Harness) -> None:
    await start_public(harness)
    root_event = harness.slack.human_message("C7", "ideas for the poster?", user="U3")
    sketch = png("yellow")
    file = harness.slack.add_file(sketch, name="sketch.png")
    mention = harness.slack.human_message(
        "C7",
        f"<@{harness.slack.bot_user_id}> turn this into a poster",
        thread_ts=root_event["ts"],
        files=[file],
    )
    await harness.send({**mention, "type": "app_mention"})
    await harness.slack.wait_for("chat.update", where=is_card)
    body = harness.oxen.submissions[-1]
    assert body["prompt"] == "turn this into a poster"
    assert harness.oxen.fetched_references[-1] == [sketch]
    [(job, _)] = await harness.jobs()
    assert (job.channel_id, job.thread_ts) == ("C7", root_event["ts"])


async def test_a_mention_at_the_top_level_starts_a_thread_under_it(harness: Harness) -> None:
    await harness.start()
    mention = harness.slack.human_message("C7", f"<@{harness.slack.bot_user_id}> a paper boat")
    await harness.send({**mention, "type": "app_mention"})
    [complete] = await harness.slack.wait_for("files.completeUploadExternal")
    assert complete.params["thread_ts"] == mention["ts"]


async def test_mention_and_message_for_the_same_text_make_one_job(harness: Harness) -> None:
    await harness.start()
    mention = harness.slack.human_message("C7", f"<@{harness.slack.bot_user_id}> a paper boat")
    await harness.send({**mention, "type": "app_mention"})
    await harness.send(mention)
    await harness.send({**mention, "type": "app_mention"}, retry_num=1)
    await harness.slack.wait_for("files.completeUploadExternal")
    assert len(await harness.jobs()) == 1
    assert len(harness.oxen.submissions) == 1


async def test_direct_messages_need_no_mention(harness: Harness) -> None:
    await harness.start()
    await harness.send(harness.slack.human_message("D1", "a paper boat", channel_type="im"))
    [complete] = await harness.slack.wait_for("files.completeUploadExternal")
    assert complete.params["channel_id"] == "D1"


async def test_noise_is_ignored_without_any_slack_call(harness: Harness) -> None:
    await harness.start()
    root = await harness.generate("a lighthouse")
    calls_before = len(harness.slack.calls)
    bot = harness.slack.bot_user_id
    noise = [
        {**harness.slack.human_message("C1", "again", thread_ts=root), "bot_id": "B0BOT", "user": bot},
        {**harness.slack.human_message("C1", "from another bot", thread_ts=root), "bot_id": "B999"},
        {**harness.slack.human_message("C1", ":fire: :fire:", thread_ts=root)},
        {**harness.slack.human_message("C1", "edited", thread_ts=root), "subtype": "message_changed"},
        {**harness.slack.human_message("C1", "gone", thread_ts=root), "subtype": "message_deleted"},
        harness.slack.human_message("C1", "a reply in somebody else's thread", thread_ts="1600000000.000100"),
        harness.slack.human_message("C1", "a plain channel message"),
    ]
    for event in noise:
        assert (await harness.send(event)).status == 200
    sentinel = harness.slack.human_message("C1", "bad --n 9", thread_ts=root)
    await harness.send(sentinel)
    [answer] = await harness.slack.wait_for("chat.postEphemeral")
    assert answers(harness.slack.calls[calls_before:]) == [answer], (
        "only the sentinel, sent last, got an answer"
    )
    assert len(await harness.jobs()) == 1


async def test_a_bad_flag_in_a_reply_is_explained_only_to_its_author(harness: Harness) -> None:
    await harness.start()
    root = await harness.generate("a lighthouse")
    await harness.send(harness.slack.human_message("C1", "bluer --ar 5:7", thread_ts=root))
    [ephemeral] = await harness.slack.wait_for("chat.postEphemeral")
    assert "`--ar 5:7` is not supported" in ephemeral.params["text"]
    assert len(await harness.jobs()) == 1


async def test_replies_in_a_row_queue_with_their_positions(harness: Harness) -> None:
    await harness.start(max_concurrent_jobs=1)
    root = await harness.generate("a lighthouse")
    harness.oxen.hold()
    await harness.command("a job holding the only slot", user_id="U9", channel_id="C2")
    await harness.oxen.recorder.wait_for("POST /ai/queue", count=2)

    def queued_here(call: Call) -> bool:
        return call.params.get("thread_ts") == root and "Queued" in call.params["text"]

    for count, text in enumerate(("bluer", "greener", "redder"), start=1):
        await harness.send(harness.slack.human_message("C1", text, thread_ts=root, user="U1"))
        statuses = await harness.slack.wait_for("chat.postMessage", where=queued_here, count=count)
    positions = [re.findall(r"position (\d+)", status.params["text"]) for status in statuses]
    assert positions == [["1"], ["2"], ["3"]]
    harness.oxen.release()
    await harness.slack.wait_for("chat.update", where=is_card, count=5)
    assert [body["prompt"] for body in harness.oxen.submissions][2:] == ["bluer", "greener", "redder"]


async def test_files_over_the_size_cap_are_refused_before_downloading(harness: Harness) -> None:
    await start_public(harness, max_reference_mb=0.001)
    root = await harness.generate("a lighthouse")
    file = harness.slack.add_file(png("red", (256, 256)) + b"\0" * 2048, name="huge.png")
    await harness.send(harness.slack.human_message("C1", "use this", thread_ts=root, files=[file]))
    [ephemeral] = await harness.slack.wait_for("chat.postEphemeral")
    assert "“huge.png” is too large" in ephemeral.params["text"]
    assert harness.slack.calls_to("file_download") == []


async def test_a_pasted_link_to_a_file_elsewhere_is_never_fetched(harness: Harness) -> None:
    await start_public(harness)
    root = await harness.generate("a lighthouse")
    elsewhere = harness.slack.add_file(png("red"), name="secret.png", channel="CPRIVATE")
    text = f"like <{elsewhere['url_private']}|this one>"
    await harness.send(harness.slack.human_message("C1", text, thread_ts=root))
    await harness.slack.wait_for("chat.update", where=is_card, count=2)
    assert harness.slack.calls_to("file_download") == []
    assert len(harness.oxen.submissions[-1]["input_image"]) == 1
