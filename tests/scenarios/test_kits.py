"""Channel brand kits: `/imagine kit set|clear`, :pushpin: pins, and the kit on every new prompt (the style
in the prompt Oxen receives, the pins in `input_image`), `--nokit`, the KIT_ADMINS lock, the 10-reference
limit and the result card's line."""

from __future__ import annotations

from typing import Any

from bot.domain.kits import Kit
from bot.store.store import Store
from tests.fakes.images import render_png
from tests.fakes.recorder import Call
from tests.scenarios.harness import Harness
from tests.scenarios.test_actions import april, card, next_card, parsed, press  # noqa: F401 (april: fixture)


def upload(harness: Harness, name: str, *, seed: int = 1, text: str = "our reference") -> tuple[str, bytes]:
    """A person's message in C1 with one image; its ts and the image's bytes."""
    content = render_png(name, seed, 48, 32)
    file = harness.slack.add_file(content, name=name, user="U2", channel="C1")
    return str(harness.slack.human_message("C1", text, files=[file])["ts"]), content


async def pin(
    harness: Harness, ts: str, *, user: str = "U2", item_user: str | None = "U2", removed: bool = False
) -> dict[str, Any]:
    """React (or un-react) :pushpin: on a message of C1; returns the event (to deliver it again)."""
    event = harness.slack.reaction_event(
        "pushpin", user=user, channel="C1", ts=ts, item_user=item_user, removed=removed
    )
    await harness.slack.send_event(harness.events_url, event)
    return event


async def told(harness: Harness, fragment: str, count: int = 1) -> list[Call]:
    """Wait for `count` ephemerals containing `fragment`."""
    return await harness.slack.wait_for(
        "chat.postEphemeral", where=lambda call: fragment in str(call.params.get("text")), count=count
    )


def ephemerals(harness: Harness, fragment: str) -> list[Call]:
    return [c for c in harness.slack.calls_to("chat.postEphemeral") if fragment in str(c.params.get("text"))]


async def kit_command(harness: Harness, text: str, *, user: str = "U2") -> dict[str, Any]:
    """Run `/imagine <text>` in C1 and return the answer it got through the response_url."""
    seen = len(harness.slack.calls_to("response_url"))
    await harness.command(text, user_id=user, channel_id="C1")
    return (await harness.slack.wait_for("response_url", count=seen + 1))[-1].params


def card_text(harness: Harness, job_id: str) -> str:
    return str(card(harness, job_id)["blocks"])


async def stored_kit(harness: Harness) -> Kit:
    """C1's kit as stored, once the bot has stopped (so every event it took is handled)."""
    await harness.stop()
    store = await Store.open(harness.database)
    try:
        return await store.kit("C1")
    finally:
        await store.close()


async def test_the_kit_shapes_every_new_prompt_and_repeats_keep_their_recipe(april: Harness) -> None:  # noqa: F811
    harness = april
    answer = await kit_command(harness, 'kit set --ar 16:9 --style "flat vector, brand palette"')
    assert "kit is set" in answer["text"]
    logo_ts, logo = upload(harness, "logo.png")
    await pin(harness, logo_ts)
    await told(harness, "Pinned logo.png to this channel's kit (1 of 3)")

    await harness.generate("a lighthouse --seed 7")
    lighthouse, [image] = (await harness.jobs())[-1]
    sent = harness.oxen.submissions[-1]
    assert lighthouse.prompt == "a lighthouse", "the user's prompt is kept as written"
    assert sent["prompt"] == "a lighthouse, flat vector, brand palette"
    assert sent["aspect_ratio"] == "16:9"
    assert harness.oxen.fetched_references[-1] == [logo], "Oxen fetched the pinned file's bytes"
    assert "Channel kit: style, --ar 16:9, 1 pinned reference" in card_text(harness, lighthouse.id)

    await pin(harness, card(harness, lighthouse.id)["ts"], item_user=None)  # a result: the bot's message
    await told(harness, f"Pinned image 1 of job {lighthouse.id}")
    await harness.generate("a boat")
    boat, _ = (await harness.jobs())[-1]
    assert harness.oxen.fetched_references[-1] == [logo, harness.oxen.result_bytes(str(image.generation_id))]
    assert "Channel kit: style, --ar 16:9, 2 pinned references" in card_text(harness, boat.id)

    await harness.generate("a cat --nokit")
    cat, _ = (await harness.jobs())[-1]
    sent = harness.oxen.submissions[-1]
    assert (sent["prompt"], "input_image" in sent, sent.get("aspect_ratio")) == ("a cat", False, None)
    assert "Channel kit" not in card_text(harness, cat.id)

    assert "cleared" in (await kit_command(harness, "kit clear"))["text"]
    await press(harness, card(harness, lighthouse.id), "reroll")
    await next_card(harness, 4)
    sent = harness.oxen.submissions[-1]
    assert sent["prompt"] == "a lighthouse, flat vector, brand palette", "a reroll keeps the kit it recorded"
    assert (sent["aspect_ratio"], harness.oxen.fetched_references[-1]) == ("16:9", [logo])
    recipe = await kit_command(harness, f"seed {lighthouse.id}")
    assert "a lighthouse, flat vector, brand palette --ar 16:9" in str(recipe["blocks"])
    assert "--nokit" in str(recipe["blocks"])


async def test_pins_follow_the_pushpin_reactions_once_each_and_at_most_three(harness: Harness) -> None:
    await harness.start()
    refs = [upload(harness, f"ref{number}.png", seed=number) for number in range(4)]
    first = await pin(harness, refs[0][0])
    await told(harness, "Pinned ref0.png")
    await harness.slack.send_event(harness.events_url, first)  # the same event delivered again
    await pin(harness, refs[1][0], user="U3")
    await told(harness, "Pinned ref1.png")
    await pin(harness, refs[2][0])
    await told(harness, "Pinned ref2.png")
    await pin(harness, refs[3][0])
    [full] = await told(harness, "already has 3 pinned references")
    assert "remove :pushpin: from one of those messages" in full.params["text"]
    text_only = str(harness.slack.human_message("C1", "no picture here")["ts"])
    await pin(harness, text_only)
    await told(harness, "That message has no image")

    await pin(harness, refs[1][0])
    await told(harness, "ref1.png was already pinned to this channel's kit (3 of 3)")
    await pin(harness, refs[1][0], user="U3", removed=True)
    await told(harness, "ref1.png stays pinned")
    await pin(harness, refs[0][0], removed=True)
    await told(harness, "Unpinned ref0.png")
    await harness.slack.send_event(harness.events_url, first)  # a late copy of the first add
    unpinned = await kit_command(harness, "kit unpin 1")  # held by two :pushpin:s, still unpinned
    assert "Unpinned ref1.png" in unpinned["text"]
    kit = await stored_kit(harness)
    assert [p.message_ts for p in kit.pins] == [refs[2][0]]
    assert len(ephemerals(harness, "Pinned ref0.png")) == 1, "duplicates changed nothing and said nothing"


async def test_with_kit_admins_only_they_change_the_kit(harness: Harness) -> None:
    await harness.start(kit_admins="UBOSS", slack_file_grace=0)
    refused = await kit_command(harness, "kit set --ar 1:1", user="U2")
    assert "can be changed by only <@UBOSS> (`KIT_ADMINS`); nothing was changed" in refused["text"]
    logo_ts, _ = upload(harness, "logo.png")
    await pin(harness, logo_ts, user="U2")
    await told(harness, "can be changed by only <@UBOSS>")

    # The style as Slack sends it, &, < and > HTML-escaped (requests.unescape_slack reads them back).
    style = await kit_command(harness, 'kit set --style "&lt;!channel&gt; *loud*" --size 4K', user="UBOSS")
    assert "kit is set" in style["text"]
    assert "<!channel>" not in str(style)
    await pin(harness, logo_ts, user="UBOSS")
    await told(harness, "Pinned logo.png")
    await pin(harness, logo_ts, user="U2", removed=True)
    await told(harness, "can be changed by only <@UBOSS>", count=2)

    assert "only <@UBOSS>" in (await kit_command(harness, "kit unpin 1", user="U2"))["text"]
    missing = await kit_command(harness, "kit unpin 2", user="UBOSS")
    assert "has 1 pinned reference, so there is no number 2" in missing["text"]
    shown = await kit_command(harness, "kit", user="U2")
    blocks = str(shown["blocks"])
    assert "&lt;!channel&gt; *loud*" in blocks
    assert "<!channel>" not in blocks
    assert "`--size 4K`" in blocks
    assert "1 of 3" in blocks
    assert "only <@UBOSS>" in blocks
    [thumbnail] = [b["accessory"] for b in shown["blocks"] if "accessory" in b]
    assert thumbnail["type"] == "image"
    assert thumbnail["slack_file"]["id"].startswith("F")
    assert len((await stored_kit(harness)).pins) == 1


async def test_pins_fill_what_a_thread_reply_leaves_of_the_ten_references(harness: Harness) -> None:
    await harness.start()
    root = await harness.generate("a lighthouse")
    [(base, [result])] = await harness.jobs()
    pins = [upload(harness, f"pin{number}.png", seed=number) for number in range(2)]
    for number, (ts, _) in enumerate(pins):
        await pin(harness, ts)
        await told(harness, f"Pinned pin{number}.png")
    attached = [render_png(f"a{number}", number, 24, 24) for number in range(8)]
    files = [harness.slack.add_file(data, name=f"a{n}.png", channel="C1") for n, data in enumerate(attached)]
    await harness.send(harness.slack.human_message("C1", "at dusk", thread_ts=root, files=files))
    await next_card(harness, 2)

    iteration, _ = (await harness.jobs())[-1]
    assert len(harness.oxen.submissions[-1]["input_image"]) == 10
    own = [*attached, harness.oxen.result_bytes(str(result.generation_id))]
    assert harness.oxen.fetched_references[-1] == [*own, pins[0][1]], "the first pin fills the last place"
    line = "Channel kit: 1 pinned reference (left out over the reference limit: pin1.png)"
    assert line in card_text(harness, iteration.id)
    assert base.id != iteration.id


async def test_a_pin_without_reference_hosting_is_refused_like_a_reference(harness: Harness) -> None:
    await harness.start(oxen_reference_repo=None)
    ts, _ = upload(harness, "logo.png")
    await pin(harness, ts)
    [refusal] = await told(harness, "no place to host images that Oxen.ai can fetch")
    assert "pin logo.png to this channel's kit" in refusal.params["text"]
    assert "PUBLIC_BASE_URL or OXEN_REFERENCE_REPO" in refusal.params["text"]
    assert not (await stored_kit(harness)).pins


async def edit(harness: Harness, job_id: str, prompt: str, opened: int) -> None:
    """Press ✏️ Edit on a job's card and submit `prompt` (the `opened`-th modal of the test)."""
    await press(harness, card(harness, job_id), "edit")
    view = parsed((await harness.slack.wait_for("views.open", count=opened))[-1].params["view"])
    values = {"prompt": {"value": {"type": "plain_text_input", "value": prompt}}}
    await harness.slack.send_action(
        harness.events_url, harness.slack.view_submission_payload(view, values, user_id="U2")
    )


async def test_an_edit_is_a_new_prompt_with_todays_kit_unless_its_job_said_nokit(april: Harness) -> None:  # noqa: F811
    harness = april
    await harness.generate("a lighthouse")
    await harness.generate("a fox --nokit")
    (lighthouse, _), (fox, _) = await harness.jobs()
    await kit_command(harness, 'kit set --style "ink wash"')

    await edit(harness, lighthouse.id, "a lighthouse at night", opened=1)
    await next_card(harness, 3)
    assert harness.oxen.submissions[-1]["prompt"] == "a lighthouse at night, ink wash"
    await edit(harness, fox.id, "a red fox", opened=2)
    await next_card(harness, 4)
    assert harness.oxen.submissions[-1]["prompt"] == "a red fox"
