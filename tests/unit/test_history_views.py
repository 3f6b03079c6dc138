"""History views within Block Kit limits, and the CSV export."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from bot.domain.controls import MAX_FILTER, HistoryQuery
from bot.features.history import EXPORT_COLUMNS, csv_export
from bot.store.model import ImageState, Job, JobImage
from bot.views import blocks as views
from tests.fakes import blockkit
from tests.unit.test_views import make_job

NOW = 2_000_000_000.0
READY = NOW - views.FILE_PROCESSING_GRACE


def jobs(count: int, prompt: str = "p" * 4000) -> list[Job]:
    return [
        replace(make_job(), id=f"job{index:06d}", prompt=prompt, finished_at=0.0) for index in range(count)
    ]


def images_for(items: list[Job]) -> dict[str, list[JobImage]]:
    return {
        job.id: [JobImage(job.id, 0, job.seed, ImageState.SUCCEEDED, "g", None, "F0123456789")]
        for job in items
    }


def ready(_: Mapping[str, Any]) -> str | None:
    return None


def check_limits(blocks: list[dict[str, Any]], *, max_blocks: int) -> None:
    """As FakeSlack's validator refuses them (tests/fakes/blockkit.py)."""
    if max_blocks == 100:
        assert blockkit.view_errors({"type": "home", "blocks": blocks}, ready) == []
    else:
        assert blockkit.message_errors(blocks, ready) == []


def link(job: Job) -> str:
    return f"https://example.slack.com/archives/{job.channel_id}/p1"


def test_app_home_stays_within_block_kit_limits_with_favourites_that_are_also_recent() -> None:
    recent = jobs(20)
    favourites = recent[:5]
    view = views.home(
        recent, favourites, images_for(recent), today=3, permalink=link, files_ready_before=READY
    )
    assert view["type"] == "home"
    check_limits(view["blocks"], max_blocks=100)
    assert len(json.dumps(view)) < 250_000
    assert "Today: 3 images" in json.dumps(view)
    block_ids = {block.get("block_id") for block in view["blocks"]}
    assert {"favourite-job000000", "history-job000000"} <= block_ids


def test_app_home_leaves_out_whole_recent_items_rather_than_pass_100_blocks() -> None:
    recent = jobs(40)
    view = views.home(
        recent, recent[:5], images_for(recent), today=1, permalink=link, files_ready_before=READY
    )
    check_limits(view["blocks"], max_blocks=100)
    assert len(view["blocks"]) > 90
    assert view["blocks"][-1]["type"] == "actions"
    assert "Today: 1 image " in json.dumps(view)


def test_app_home_shows_images_only_once_slack_had_time_to_process_them() -> None:
    [fresh] = [replace(job, finished_at=READY + 1) for job in jobs(1, "fox")]
    [old] = jobs(1, "fox")
    for favourites in ([], [fresh]):
        fresh_view = views.home(
            [fresh], favourites, images_for([fresh]), today=1, permalink=link, files_ready_before=READY
        )
        assert not views.has_images(fresh_view)
    old_view = views.home([old], [old], images_for([old]), today=1, permalink=link, files_ready_before=READY)
    assert any(block["type"] == "image" for block in old_view["blocks"])
    assert any(block.get("accessory", {}).get("type") == "image" for block in old_view["blocks"])
    stripped = views.without_images(old_view)
    assert not views.has_images(stripped)
    check_limits(stripped["blocks"], max_blocks=100)


def test_a_history_page_stays_within_message_limits_and_pages() -> None:
    page = jobs(10)
    message = views.history_page(
        page,
        images_for(page),
        HistoryQuery(50, "", 10),
        has_more=True,
        permalink=link,
        files_ready_before=READY,
    )
    check_limits(message["blocks"], max_blocks=50)
    labels = [e["text"]["text"] for e in message["blocks"][-1]["elements"]]
    assert labels == ["← Previous", "Next →"]
    values = [HistoryQuery.parse(e["value"]) for e in message["blocks"][-1]["elements"]]
    assert [(q.offset, q.total) for q in values] == [(0, 50), (20, 50)]


def test_history_query_round_trips_text_with_separators() -> None:
    query = HistoryQuery(30, "fox | snow", 10)
    assert HistoryQuery.parse(query.value) == query


def test_a_long_history_filter_is_bounded_on_every_page_and_fits_the_button_value() -> None:
    query = HistoryQuery(50, "fox " * 2000, 10)
    assert len(query.text) == MAX_FILTER
    page = jobs(10)
    message = views.history_page(
        page, images_for(page), query, has_more=True, permalink=link, files_ready_before=READY
    )
    check_limits(message["blocks"], max_blocks=50)
    for button in message["blocks"][-1]["elements"]:
        assert HistoryQuery.parse(button["value"]).text == query.text


def test_export_round_trips_commas_quotes_and_newlines() -> None:
    prompt = 'a "fox", in snow,\nthen rain; 100% done'
    rows = jobs(2, prompt)
    text = csv_export(rows, link)
    parsed = list(csv.reader(io.StringIO(text)))
    assert parsed[0] == list(EXPORT_COLUMNS)
    assert [row[3] for row in parsed[1:]] == [prompt, prompt]
    assert parsed[1][0] == "job000000"
    assert parsed[1][-1] == link(rows[0])
