"""Previous results as references: Oxen fetches references anonymously and its result URLs need the key
and expire (tests/fakes/oxen.py), so the bot hosts a result's bytes itself, from its cache or fetched
back from Slack, and says so before anything is paid when it has nowhere to host them."""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import closing

import pytest

from bot.store.model import JobState
from tests.scenarios.harness import Harness
from tests.scenarios.test_actions import card, next_card, press
from tests.scenarios.test_history import buttons
from tests.scenarios.test_provider_faults import failure_reply, slack_saw

SHORT_LIFETIME = 5.0
"""Seconds a result URL of the fake is valid in these tests; the fake's clock is moved past it."""


@pytest.fixture(params=["public_url", "oxen_repo"])
async def hosted(request: pytest.FixtureRequest, harness: Harness) -> Harness:
    """A bot hosting references at its own signed URLs or in the fake's repository, against result URLs
    that need the key (the fake's default) and expire after SHORT_LIFETIME."""
    harness.oxen.result_url_lifetime = SHORT_LIFETIME
    if request.param == "public_url":
        await harness.start_at_own_url(oxen_reference_repo=None)
    else:
        await harness.start()
    return harness


async def test_iteration_and_vary_host_the_result_bytes_past_the_url_lifetime(hosted: Harness) -> None:
    harness = hosted
    assert harness.oxen.result_auth_required
    root = await harness.generate("a lighthouse --seed 7")
    [(_, [base])] = await harness.jobs()
    harness.oxen.advance(SHORT_LIFETIME + 60)  # every result URL signed so far has expired

    await harness.send(harness.slack.human_message("C1", "at dusk", thread_ts=root))
    await next_card(harness, 2)
    [url] = harness.oxen.submissions[-1]["input_image"]
    assert "/results/" not in url, "Oxen's own result URL is never sent back"
    result = harness.oxen.result_bytes(str(base.generation_id))
    assert harness.oxen.fetched_references[-1] == [result], "what Oxen fetched anonymously is the result"
    assert harness.slack.uploaded_files[str(base.file_id)].content == result

    iteration, [iterated] = (await harness.jobs())[-1]
    assert iteration.state is JobState.UPLOADED
    harness.oxen.advance(SHORT_LIFETIME + 60)
    await press(harness, card(harness, iteration.id), "vary")
    await next_card(harness, 3)
    vary, _ = (await harness.jobs())[-1]
    assert (vary.state, vary.parent_id) == (JobState.UPLOADED, iteration.id)
    assert harness.oxen.fetched_references[-1] == [harness.oxen.result_bytes(str(iterated.generation_id))]
    assert not harness.slack.calls_to("file_download"), "the bytes came from the bot's own cache"


@pytest.mark.parametrize("made_before_keys", [False, True], ids=["cache-lost", "made-before-keys"])
async def test_after_a_restart_without_the_cache_the_result_is_fetched_back_from_slack(
    harness: Harness, made_before_keys: bool
) -> None:
    await harness.start()
    root = await harness.generate("a lighthouse --seed 7")
    [(job, [base])] = await harness.jobs()
    await harness.stop()
    shutil.rmtree(harness.database.parent / "refs")
    if made_before_keys:  # a result stored before results were kept: no cache key recorded
        with closing(sqlite3.connect(harness.database)) as db, db:
            db.execute("UPDATE generation_images SET reference_key = NULL, reference_mimetype = NULL")
    harness.oxen.advance(24 * 3600)
    await harness.start()

    await harness.send(harness.slack.human_message("C1", "at dusk", thread_ts=root))
    await next_card(harness, 2)
    [download] = harness.slack.calls_to("file_download")
    assert str(base.file_id) in download.params["path"]
    assert any(call.params.get("file") == base.file_id for call in harness.slack.calls_to("files.info"))
    assert harness.oxen.fetched_references[-1] == [harness.oxen.result_bytes(str(base.generation_id))]
    [(_, [refetched]), _] = await harness.jobs()
    assert refetched.reference_key is not None, "the bytes fetched back are cached again"
    assert (harness.database.parent / "refs").is_dir()
    assert job.state is JobState.UPLOADED


async def test_without_hosting_iterations_are_refused_before_anything_is_paid(harness: Harness) -> None:
    await harness.start()
    root = await harness.generate("a lighthouse --seed 7")
    await harness.send(harness.slack.human_message("C1", "at dusk", thread_ts=root))
    await next_card(harness, 2)
    base, iteration = [job for job, _ in await harness.jobs()]
    await harness.stop()
    await harness.start(oxen_reference_repo=None)
    submitted = len(harness.oxen.submissions)

    await harness.send(harness.slack.human_message("C1", "at night", thread_ts=root))
    await press(harness, card(harness, base.id), "vary")
    await press(harness, card(harness, base.id), "upscale", user="U3")
    await press(harness, card(harness, iteration.id), "reroll", user="U4")
    refusals = await harness.slack.wait_for("chat.postEphemeral", count=1)
    answers = await harness.slack.wait_for("response_url", count=3)
    await harness.command("history", user_id="U2", channel_id="C9")
    [*_, page] = await harness.slack.wait_for("response_url", count=4)
    replay = buttons(page.params)[0]
    message = {"ts": "2.2", "blocks": page.params["blocks"], "text": page.params["text"]}
    payload = harness.slack.button_payload(replay, user_id="U2", channel_id="C9", message=message)
    await harness.slack.send_action(harness.events_url, payload)
    [*_, replayed] = await harness.slack.wait_for("response_url", count=5)

    texts = [call.params["text"] for call in refusals] + [
        call.params["text"] for call in [*answers[-3:], replayed]
    ]
    assert len(texts) == 5
    for text in texts:
        assert "no place to host images that Oxen.ai can fetch" in text
        assert "nothing was paid" in text
        assert "PUBLIC_BASE_URL or OXEN_REFERENCE_REPO" in text
        assert "Reference hosting" in text
        assert "/imagine" in text
    assert "--fresh" in texts[0]
    assert len(harness.oxen.submissions) == submitted, "nothing reached POST /ai/queue"
    assert len(await harness.jobs()) == 2, "no job was stored"

    await harness.command("a fresh start")
    await next_card(harness, 3)
    assert "input_image" not in harness.oxen.submissions[-1]


async def test_reusing_result_urls_sends_oxens_own_url_when_set(harness: Harness) -> None:
    harness.oxen.result_auth_required = False
    await harness.start(oxen_reference_repo=None, oxen_reuse_result_urls=True)
    root = await harness.generate("a lighthouse --seed 7")
    [(_, [base])] = await harness.jobs()
    await harness.send(harness.slack.human_message("C1", "at dusk", thread_ts=root))
    await next_card(harness, 2)
    [url] = harness.oxen.submissions[-1]["input_image"]
    assert url == base.result_url
    assert "/results/" in url
    assert harness.oxen.fetched_references[-1] == [harness.oxen.result_bytes(str(base.generation_id))]
    assert not harness.oxen.recorder.calls_to("PUT repo file")


async def test_reused_result_urls_that_need_the_key_fail_naming_the_doctor_without_the_link(
    harness: Harness,
) -> None:
    """OXEN_REUSE_RESULT_URLS set where Oxen's result URLs need the key (the fake's default): Oxen cannot
    fetch the reference, and the user reads which answer it got and what checks it, never the link."""
    await harness.start(oxen_reference_repo=None, oxen_reuse_result_urls=True)
    root = await harness.generate("a lighthouse --seed 7")
    await harness.send(harness.slack.human_message("C1", "at dusk", thread_ts=root))
    text = await failure_reply(harness)
    assert "could not download a reference image (its host answered HTTP 401 Unauthorized)" in text
    assert "python -m bot doctor" in text
    everything = slack_saw(harness)
    assert "sig=" not in everything
    assert "refused the request" not in everything
    assert len(harness.oxen.billed) == 1, "only the first image was paid for"
