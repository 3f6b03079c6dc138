"""Echoed user input is escaped exactly once, the recipe says what its line cannot carry, Replay answers
the presser, and "Today" starts at the user's midnight."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.domain.days import start_of_day, user_timezone
from bot.domain.requests import RequestError, parse_request
from bot.views import blocks as views
from tests.fakes import blockkit
from tests.unit.test_views import all_text, image, make_job


def ready(_: Mapping[str, Any]) -> str | None:
    return None


def test_a_request_error_quoting_the_input_cannot_ping_the_channel() -> None:
    with pytest.raises(RequestError) as raised:
        # A typed "<!channel>" arrives entity-encoded, and parse_request decodes it (slack.md §3.5).
        parse_request("a fox --ar &lt;!channel&gt;")
    message = views.error_message(str(raised.value))
    text = all_text(message)
    assert "<!channel>" not in text
    assert "&lt;!channel&gt;" in text
    assert blockkit.message_errors(message["blocks"], ready) == []


def test_a_failed_image_error_is_escaped_once_on_the_result_card() -> None:
    card = views.result_card(make_job(), [image(0), image(1, file_id=None, error="bad <input> & more")])
    text = all_text(card)
    assert "bad &lt;input&gt; &amp; more" in text
    assert "&amp;lt;" not in text
    assert "&amp;amp;" not in text


def test_the_recipe_says_its_line_cannot_carry_the_references_and_how_to_keep_them() -> None:
    references = [{"kind": "slack_file", "name": "ref.png"}, {"kind": "slack_file", "name": "b.png"}]
    job = make_job(params={"references": references})
    recipe = views.recipe(job, [image(0)])
    text = all_text(recipe)
    assert "cannot carry this job's 2 reference images" in text
    assert "reply with a prompt in the job's thread" in text
    assert "Replay" in text
    assert blockkit.message_errors(recipe["blocks"], ready) == []
    assert "reference" not in all_text(views.recipe(make_job(), [image(0)])).split("*References:* 0")[1]


def test_replay_tells_the_presser_which_job_runs_and_where() -> None:
    original, new = make_job(), make_job(id="def456", channel_id="C7")
    assert "job `def456`" in all_text(views.replay_started(original, new, new_seed=True))
    assert "<#C7>" in all_text(views.replay_started(original, new, new_seed=True))
    assert "seed `42`" in all_text(views.replay_started(original, new, new_seed=False))


def test_today_starts_at_midnight_in_the_users_zone_dst_included() -> None:
    los_angeles = ZoneInfo("America/Los_Angeles")
    # 2026-07-01 03:00 UTC is 2026-06-30 20:00 in Los Angeles (PDT, UTC-7).
    now = datetime(2026, 7, 1, 3, 0, tzinfo=ZoneInfo("UTC")).timestamp()
    expected = datetime(2026, 6, 30, 0, 0, tzinfo=los_angeles).timestamp()
    assert start_of_day(now, user_timezone("America/Los_Angeles", -25200)) == expected
    # Without a known IANA name the offset is used; without either, UTC.
    assert start_of_day(now, user_timezone("Nowhere/Unknown", -25200)) == expected
    assert (
        start_of_day(now, user_timezone(None, 0)) == datetime(2026, 7, 1, tzinfo=ZoneInfo("UTC")).timestamp()
    )
    assert (
        start_of_day(now, user_timezone(None, 10**6))
        == datetime(2026, 7, 1, tzinfo=ZoneInfo("UTC")).timestamp()
    )
