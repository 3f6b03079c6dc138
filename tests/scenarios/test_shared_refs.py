"""Reference URLs work from any replica: a `/refs/` URL signed by one bot is served by another whose cache
folder is empty, from the bytes kept in the shared database (migration 14)."""

from __future__ import annotations

import io
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from PIL import Image

from bot.app.server import reference_handler, start_server
from bot.app.services import reference_url_secret
from bot.domain.images import PreparedImage
from bot.features.reference_hosting import SignedUrlHost
from bot.store.store import Store
from tests.scenarios.harness import Harness, is_card


def png(colour: str) -> bytes:
    output = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(output, format="PNG")
    return output.getvalue()


class OtherReplica:
    """The `/refs/` route of a second replica: its own store connection to the same database, its own
    data directory (so its cache folder starts empty), the same settings otherwise."""

    def __init__(self, harness: Harness, data: Path, store: Store) -> None:
        secret = reference_url_secret(harness.settings())
        self.folder = data / "refs"
        self.host = SignedUrlHost("http://lb.example", secret, self.folder, store=store)
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/refs/{name}", reference_handler(self.host))
        self._runner, port = await start_server(app, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def store(harness: Harness) -> AsyncIterator[Store]:
    """A second connection to the harness's database (the other replica's)."""
    opened = await Store.open(harness.database)
    yield opened
    await opened.close()


@pytest.fixture
async def other(harness: Harness, store: Store, tmp_path: Path) -> AsyncIterator[OtherReplica]:
    replica = OtherReplica(harness, tmp_path / "replica-b", store)
    await replica.start()
    yield replica
    await replica.close()


async def test_a_reference_url_signed_by_one_replica_is_served_by_another_with_an_empty_cache(
    harness: Harness, other: OtherReplica
) -> None:
    # The load balancer behind PUBLIC_BASE_URL sends every /refs request to the other replica.
    await harness.start(public_base_url=other.url, oxen_reference_repo=None)
    root = await harness.generate("a lighthouse")
    image = png("teal")
    file = harness.slack.add_file(image, name="ref.png")
    await harness.send(harness.slack.human_message("C1", "in this style", thread_ts=root, files=[file]))
    await harness.slack.wait_for("chat.update", where=is_card, count=2)

    attachment_url, result_url = harness.oxen.submissions[-1]["input_image"]
    assert attachment_url.startswith(other.url + "/refs/")
    assert result_url.startswith(other.url + "/refs/")
    [(base, base_images), (iteration, _)] = await harness.jobs()
    result = harness.oxen.result_bytes(str(base_images[0].generation_id))
    assert harness.oxen.fetched_references[-1] == [image, result], "Oxen fetched both, anonymously"
    assert iteration.parent_id == base.id
    served = sorted(path.read_bytes() for path in other.folder.iterdir())
    assert served == sorted([image, result]), "the other replica kept what it served in its own cache"


async def test_without_the_stored_copy_another_replica_refuses_the_url(
    harness: Harness, store: Store, tmp_path: Path
) -> None:
    secret = reference_url_secret(harness.settings())
    signer = SignedUrlHost("http://lb.example", secret, tmp_path / "signer" / "refs", store=store)
    image = PreparedImage(png("navy"), "image/png")
    url = await signer.publish(image, "k" * 32)
    name, query = url.split("/refs/", 1)[1].split("?", 1)
    expires, signature = (part.split("=", 1)[1] for part in query.split("&"))

    elsewhere = tmp_path / "elsewhere" / "refs"
    local_only = SignedUrlHost("http://lb.example", secret, elsewhere)
    assert await local_only.resolve(name, expires, signature) is None, "no store: only its own folder"
    shared = SignedUrlHost("http://lb.example", secret, elsewhere, store=store)
    served = await shared.resolve(name, expires, signature)
    assert served is not None
    assert served.read_bytes() == image.data
    stale = int(time.time()) - 1
    assert await shared.resolve(name, str(stale), shared._sign(name, stale)) is None, "expired"


async def test_stored_references_are_written_once_and_pruned_when_unpublished_for_long(
    tmp_path: Path,
) -> None:
    store = await Store.open(tmp_path / "db.sqlite3")
    try:
        await store.publish_reference_blob("a" * 32, "image/png", b"first bytes")
        await store.publish_reference_blob("a" * 32, "image/png", b"other bytes")
        assert await store.reference_blob("a" * 32) == ("image/png", b"first bytes")
        cutoff = time.time()
        await store.publish_reference_blob("b" * 32, "image/jpeg", b"kept")
        assert await store.prune_reference_blobs(older_than=cutoff) == 1
        assert await store.reference_blob("a" * 32) is None
        assert await store.reference_blob("b" * 32) == ("image/jpeg", b"kept")
        await store.publish_reference_blob("b" * 32, "image/jpeg", b"kept")  # a new URL: published again
        assert await store.prune_reference_blobs(older_than=time.time() - 60) == 0
    finally:
        await store.close()


async def test_the_refs_route_answers_403_for_a_url_no_replica_can_serve(
    harness: Harness, other: OtherReplica
) -> None:
    name = "c" * 32 + ".png"
    expires = int(time.time()) + 60
    url = f"{other.url}/refs/{name}?exp={expires}&sig={other.host._sign(name, expires)}"
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 403
