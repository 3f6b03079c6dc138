"""Each reference-hosting strategy, end to end: Oxen (the fake) must be able to fetch what it is given."""

from __future__ import annotations

import io
import time

import aiohttp
from PIL import Image

from bot.features.reference_hosting import SignedUrlHost
from tests.scenarios.harness import Harness, is_card
from tests.scenarios.test_actions import card, press


def png(colour: str) -> bytes:
    output = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(output, format="PNG")
    return output.getvalue()


async def iterate_with_attachment(harness: Harness, image: bytes) -> str:
    root = await harness.generate("a lighthouse")
    file = harness.slack.add_file(image, name="ref.png")
    await harness.send(harness.slack.human_message("C1", "in this style", thread_ts=root, files=[file]))
    return root


def repo_url(harness: Harness, committed: str) -> str:
    """The download URL of a file committed to the fake's repository."""
    return harness.oxen.url + "/repos/" + committed.replace("/main/", "/file/main/", 1)


async def test_oxen_repo_hosting_uploads_each_reference_once(harness: Harness) -> None:
    await harness.start(oxen_reference_repo="team/dreamboard-refs")
    image = png("purple")
    await iterate_with_attachment(harness, image)
    await harness.slack.wait_for("chat.update", where=is_card, count=2)
    uploads = harness.oxen.recorder.calls_to("PUT repo file")
    assert [upload.params["field"] for upload in uploads] == ["files[]", "files[]"]
    assert {upload.params["key"] for upload in uploads} == {"team/dreamboard-refs/main/dreamboard-references"}
    attachment, result = harness.oxen.repo_commits
    [(_, base_images), _] = await harness.jobs()
    attachment_url, result_url = harness.oxen.submissions[-1]["input_image"]
    assert (attachment_url, result_url) == (repo_url(harness, attachment), repo_url(harness, result))
    assert "/results/" not in result_url, "the previous result is hosted, not passed as Oxen's own URL"
    assert harness.oxen.fetched_references[-1] == [
        image,
        harness.oxen.result_bytes(str(base_images[0].generation_id)),
    ]


async def test_oxen_repo_commits_a_reference_once_across_rerolls_and_a_restart(harness: Harness) -> None:
    await harness.start(oxen_reference_repo="team/dreamboard-refs")
    image = png("navy")
    await iterate_with_attachment(harness, image)
    await harness.slack.wait_for("chat.update", where=is_card, count=2)
    iteration, _ = (await harness.jobs())[-1]
    await press(harness, card(harness, iteration.id), "reroll", user="U2")
    await harness.slack.wait_for("chat.update", where=is_card, count=3)
    await harness.stop()
    await harness.start()
    await press(harness, card(harness, iteration.id), "reroll", user="U3")
    await harness.slack.wait_for("chat.update", where=is_card, count=4)

    attachment, result = harness.oxen.repo_commits
    assert harness.oxen.repo_files[attachment] == image
    assert len(harness.oxen.recorder.calls_to("PUT repo file")) == 2, "one commit per distinct content"
    urls = [repo_url(harness, attachment), repo_url(harness, result)]
    submitted = [body["input_image"] for body in harness.oxen.submissions[-3:]]
    assert submitted == [urls, urls, urls], "the job and both rerolls send the two committed files"
    assert [refs[0] for refs in harness.oxen.fetched_references[-3:]] == [image, image, image]


async def test_the_fake_refuses_the_deprecated_file_field(harness: Harness) -> None:
    form = aiohttp.FormData()
    form.add_field("file", png("grey"), filename="ref.png", content_type="image/png")
    headers = {"Authorization": f"Bearer {harness.oxen.api_key}"}
    target = harness.oxen.url + "/repos/team/refs/file/main/dreamboard-references/ref.png"
    async with (
        aiohttp.ClientSession() as session,
        session.put(target, data=form, headers=headers) as response,
    ):
        assert response.status == 400
        assert "files[]" in (await response.json())["error"]["detail"]
    assert harness.oxen.repo_commits == []


async def test_data_uri_hosting_is_an_explicit_opt_in(harness: Harness) -> None:
    await harness.start(reference_hosting="data_uri")
    image = png("orange")
    await iterate_with_attachment(harness, image)
    await harness.slack.wait_for("chat.update", where=is_card, count=2)
    attachment_url = harness.oxen.submissions[-1]["input_image"][0]
    assert attachment_url.startswith("data:image/png;base64,")
    assert harness.oxen.fetched_references[-1][0] == image


async def test_without_hosting_attachments_and_results_are_refused_but_fresh_starts_work(
    harness: Harness,
) -> None:
    await harness.start(oxen_reference_repo=None)
    root = await iterate_with_attachment(harness, png("red"))
    [refusal] = await harness.slack.wait_for("chat.postEphemeral")
    assert "no place to host images that Oxen.ai can fetch" in refusal.params["text"]
    assert "PUBLIC_BASE_URL" in refusal.params["text"]

    await harness.send(harness.slack.human_message("C1", "now at dusk --fresh", thread_ts=root))
    await harness.slack.wait_for("chat.update", where=is_card, count=2)
    assert "input_image" not in harness.oxen.submissions[-1]
    assert len(harness.oxen.submissions) == 2, "the refused reply sent nothing to Oxen"
    fresh, _ = (await harness.jobs())[-1]
    assert (fresh.thread_ts, fresh.parent_id) == (root, None)


async def test_signed_reference_urls_expire_and_cannot_be_forged(harness: Harness) -> None:
    await harness.start_at_own_url()
    await iterate_with_attachment(harness, png("teal"))
    await harness.slack.wait_for("chat.update", where=is_card, count=2)
    signed = harness.oxen.submissions[-1]["input_image"][0]
    forged = signed[: signed.rindex("sig=") + 4] + "0" * 64
    outside = signed.replace("/refs/", "/refs/..%2F")
    async with aiohttp.ClientSession() as session:
        async with session.get(signed) as ok:
            assert ok.status == 200
        for url in (forged, outside):
            async with session.get(url) as refused:
                assert refused.status in (403, 404)

    host = harness.running.services.reference_host if harness.running else None
    assert isinstance(host, SignedUrlHost)
    name = signed.split("/refs/")[1].split("?")[0]
    expired = int(time.time()) - 1
    assert await host.resolve(name, str(expired), host._sign(name, expired)) is None
