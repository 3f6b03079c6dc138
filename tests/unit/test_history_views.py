"""History views within Block Kit limits, and the CSV export."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from typing import Any

from bot.domain.controls import HistoryQuery
from bot.features.history import EXPORT_COLUMNS, csv_export
from bot.store.model import ImageState, Job, JobImage
from bot.views import blocks as views
from tests.unit.test_views import make_job


def jobs(count: int, prompt: str = "p" * 4000) -> list[Job]:
    return [
        replace(make_job(), id=f"job{index:06d}", prompt=prompt, finished_at=0.0) for index in range(count)
    ]


def images_for(items: list[Job]) -> dict[str, list[JobImage]]:
    return {
        job.id: [JobImage(job.id, 0, job.seed, ImageState.SUCCEEDED, "g", None, "F0123456789")]
        for job in items
    }


def check_limits(blocks: list[dict[str, Any]], *, max_blocks: int) -> None:
    assert len(blocks) <= max_blocks
    for block in blocks:
        if "text" in block and isinstance(block["text"], dict):
            assert len(block["text"]["text"]) <= 3000
        for element in block.get("elements", []):
            if element.get("type") == "button":
                assert len(element["text"]["text"]) <= 75
                assert len(element["value"]) <= 2000
                assert len(element["action_id"]) <= 255


def link(job: Job) -> str:
    return f"https://example.slack.com/archives/{job.channel_id}/p1"


def test_app_home_stays_within_block_kit_limits() -> None:
    recent, favourites = jobs(20), jobs(5)
    view = views.home(recent, favourites, images_for(recent + favourites), today=3, permalink=link)
    assert view["type"] == "home"
    check_limits(view["blocks"], max_blocks=100)
    assert len(json.dumps(view)) < 250_000
    assert "Today: 3 generations" in json.dumps(view)


def test_app_home_shows_images_only_once_slack_had_time_to_process_them() -> None:
    [fresh] = [replace(job, finished_at=10**12) for job in jobs(1, "fox")]
    [old] = jobs(1, "fox")
    fresh_view = views.home([fresh], [], images_for([fresh]), today=1, permalink=link)
    old_view = views.home([old], [], images_for([old]), today=1, permalink=link)
    assert not any(block["type"] == "image" for block in fresh_view["blocks"])
    assert any(block["type"] == "image" for block in old_view["blocks"])


def test_a_history_page_stays_within_message_limits_and_pages() -> None:
    page = jobs(10)
    message = views.history_page(
        page, images_for(page), HistoryQuery(50, "", 10), has_more=True, permalink=link
    )
    check_limits(message["blocks"], max_blocks=50)
    labels = [e["text"]["text"] for e in message["blocks"][-1]["elements"]]
    assert labels == ["← Previous", "Next →"]
    values = [HistoryQuery.parse(e["value"]) for e in message["blocks"][-1]["elements"]]
    assert [(q.offset, q.total) for q in values] == [(0, 50), (20, 50)]


def test_history_query_round_trips_text_with_separators() -> None:
    query = HistoryQuery(30, "fox | snow", 10)
    assert HistoryQuery.parse(query.value) == query


def test_export_round_trips_commas_quotes_and_newlines() -> None:
    prompt = 'a "fox", in snow,\nthen rain; 100% done'
    rows = jobs(2, prompt)
    text = csv_export(rows, link)
    parsed = list(csv.reader(io.StringIO(text)))
    assert parsed[0] == list(EXPORT_COLUMNS)
    assert [row[3] for row in parsed[1:]] == [prompt, prompt]
    assert parsed[1][0] == "job000000"
    assert parsed[1][-1] == link(rows[0])
