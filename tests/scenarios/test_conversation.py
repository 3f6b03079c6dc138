"""Who a message is for: threads Dreamboard owns, mentions in other people's threads, and `/imagine`
text that only looks like a subcommand."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests.scenarios.harness import Harness, answers, is_card, is_done


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
    await slack.wait_for("chat.update", where=is_done)
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
    await harness.slack.wait_for("chat.postMessage", where=is_card, count=2)
    jobs = await harness.jobs()
    assert [(job.prompt, job.thread_ts) for job, _ in jobs] == [("a lighthouse", root), ("at night", root)]


async def test_a_reply_under_a_top_level_mention_is_not_addressed_to_dreamboard(harness: Harness) -> None:
    await harness.start()
    slack = harness.slack
    mention = slack.human_message("C7", f"<@{slack.bot_user_id}> a paper boat")
    await harness.send({**mention, "type": "app_mention"})
    [done] = await slack.wait_for("chat.update", where=is_done)
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
    await harness.slack.wait_for("chat.postMessage", where=is_card)
    assert [body["prompt"] for body in harness.oxen.submissions] == [prompt]
    assert harness.slack.calls_to("response_url") == []


async def test_a_seed_number_without_a_prompt_is_explained_in_the_ack(harness: Harness) -> None:
    await harness.start()
    response = await harness.command("seed 42")
    assert response.status == 200
    assert "needs a prompt after the number" in response.text
    assert "/imagine -- seed 42" in response.text
    assert await harness.jobs() == []
