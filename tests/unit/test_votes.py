"""Vote rules (bot/domain/votes.py), the store's vote tables and the vote views' Block Kit."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from bot.domain.commands import Prompt, Top, UsageError, Vote, parse_command
from bot.domain.votes import (
    Ballot,
    DurationError,
    Period,
    Tally,
    VoteHint,
    VoteRound,
    parse_duration,
    rank,
    read_reaction,
    read_sheet_reaction,
)
from bot.store.errors import DuplicateRequestError
from bot.store.model import Job, JobState, NewJob
from bot.store.store import Store, VoteOpenError
from bot.views import votes as vote_views
from tests.fakes.blockkit import message_errors

NEW_YORK = ZoneInfo("America/New_York")


@pytest.mark.parametrize(
    ("reaction", "images", "meaning"),
    [
        ("+1", 1, Ballot(0)),
        ("thumbsup", 1, Ballot(0)),
        ("+1::skin-tone-2", 1, Ballot(0)),
        ("thumbsup::skin-tone-6", 1, Ballot(0)),
        ("one", 1, Ballot(0)),
        ("two", 1, VoteHint.NO_SUCH_IMAGE),
        ("+1", 4, VoteHint.PICK_A_NUMBER),
        ("three", 4, Ballot(2)),
        ("four", 4, Ballot(3)),
        ("four", 2, VoteHint.NO_SUCH_IMAGE),
        ("+1::skin-tone-7", 1, None),
        ("heart", 1, None),
        ("five", 4, None),
    ],
)
def test_reactions_map_to_ballots_or_hints(reaction: str, images: int, meaning: object) -> None:
    assert read_reaction(reaction, images) == meaning


@pytest.mark.parametrize(
    ("reaction", "voteable", "meaning"),
    [
        ("one", [True, True], Ballot(0)),
        ("two::skin-tone-4", [True, True], Ballot(1)),
        ("keycap_ten", [True] * 10, Ballot(9)),
        ("keycap_ten", [True] * 9, VoteHint.NO_SUCH_IMAGE),
        ("three", [True, False, False], VoteHint.NO_SUCH_IMAGE),
        ("+1", [True, True], VoteHint.PICK_A_NUMBER),
        ("heart", [True, True], None),
    ],
)
def test_keycaps_on_a_contact_sheet_vote_for_tiles_that_show_an_image(
    reaction: str, voteable: list[bool], meaning: object
) -> None:
    assert read_sheet_reaction(reaction, voteable) == meaning


def test_sheet_hints_name_the_numbers_and_what_is_beyond_ten() -> None:
    few = vote_views.sheet_hint(VoteHint.PICK_A_NUMBER, 2)
    assert ":one: :two:" in few["text"]
    many = vote_views.sheet_hint(VoteHint.NO_SUCH_IMAGE, 12)
    assert ":one:–:keycap_ten:" in many["text"]
    assert "Tiles past 10 take their votes on their results" in many["text"]
    assert message_errors(few["blocks"], lambda ref: None) == []
    assert message_errors(many["blocks"], lambda ref: None) == []


@pytest.mark.parametrize(
    ("word", "seconds"), [("1m", 60), ("15m", 900), ("90m", 5400), ("2h", 7200), ("7d", 604800)]
)
def test_durations(word: str, seconds: int) -> None:
    assert parse_duration(word) == seconds


@pytest.mark.parametrize(
    ("word", "problem"), [("30s", "at least 1 minute"), ("0m", "at least"), ("8d", "at most 7 days")]
)
def test_durations_out_of_range_are_refused(word: str, problem: str) -> None:
    with pytest.raises(DurationError, match=problem):
        parse_duration(word)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("top", Top()),
        ("top today", Top(Period.TODAY)),
        ("Top ALL 3", Top(Period.ALL, 3)),
        ("top 10", Top(Period.WEEK, 10)),
        ("top secret lab", Prompt("top secret lab")),
        ("top 3 ideas", Prompt("top 3 ideas")),
        ("vote 15m", Vote(900)),
        ("vote 2H", Vote(7200)),
        ("vote for pedro", Prompt("vote for pedro")),
    ],
)
def test_top_and_vote_shapes(text: str, expected: object) -> None:
    assert parse_command(text) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [("top 11", "1 to 10"), ("top week 0", "1 to 10"), ("vote 30s", "at least"), ("vote", "15m")],
)
def test_top_and_vote_refusals(text: str, problem: str) -> None:
    parsed = parse_command(text)
    assert isinstance(parsed, UsageError)
    assert problem in parsed.message


def test_periods_start_at_midnight_in_the_quota_zone_across_a_dst_change() -> None:
    # 2026-11-03 12:00 in New York; DST ended on 2026-11-01, inside the week.
    now = datetime(2026, 11, 3, 12, 0, tzinfo=NEW_YORK).timestamp()
    assert Period.TODAY.since(now, NEW_YORK) == datetime(2026, 11, 3, tzinfo=NEW_YORK).timestamp()
    assert Period.WEEK.since(now, NEW_YORK) == datetime(2026, 10, 28, tzinfo=NEW_YORK).timestamp()
    assert Period.ALL.since(now, NEW_YORK) == 0.0


def test_ranking_prefers_votes_then_the_earlier_result() -> None:
    tallies = [
        Tally("late", 0, 2, created_at=30.0),
        Tally("early", 1, 2, created_at=10.0),
        Tally("early", 0, 2, created_at=10.0),
        Tally("best", 0, 5, created_at=50.0),
        Tally("none", 0, 0, created_at=1.0),
    ]
    assert [(t.job_id, t.idx) for t in rank(tallies, 4)] == [
        ("best", 0),
        ("early", 0),
        ("early", 1),
        ("late", 0),
    ]
    assert len(rank(tallies, 2)) == 2


async def _store_with_job(database_url: str, n: int = 2) -> tuple[Store, str]:
    store = await Store.open(database_url)
    job = NewJob("0123abcdef", "T1", "C1", "U1", "a fox", "m", "2K", None, 1, False, n, thread_ts="1.000001")
    await store.insert_job(job)
    await store.set_status_ts(job.id, "1.000001")
    await store.mark_running(job.id, [])
    for idx in range(n):
        await store.set_image_outcome(job.id, idx, error=None)
    await store.set_file_ids(job.id, {idx: f"F{idx:09d}" for idx in range(n)})
    await store.mark_uploaded(job.id, upload_ts=None)
    return store, job.id


async def test_votes_count_once_per_person_late_redeliveries_change_nothing_deleted_results_drop_out(
    database_url: str,
) -> None:
    store, job_id = await _store_with_job(database_url)
    try:

        async def event(user: str, reaction: str, idx: int, *, present: bool, ts: str) -> None:
            await store.record_vote_reaction(
                channel_id="C1",
                message_ts="1.000001",
                user_id=user,
                reaction=reaction,
                job_id=job_id,
                idx=idx,
                present=present,
                event_ts=ts,
            )

        await event("U2", "two", 1, present=True, ts="1700000001.000001")
        await event("U2", "two", 1, present=False, ts="1700000002.000001")
        await event("U2", "two", 1, present=True, ts="1700000001.000001")  # the first add, delivered again
        assert await store.thread_tallies("C1", "1.000001") == []
        await event("U3", "one", 0, present=True, ts="1700000003.000001")
        await event("U3", "one", 0, present=True, ts="1700000003.000001")
        await event("U4", "one", 0, present=True, ts="1700000004.000001")
        [tally] = await store.thread_tallies("C1", "1.000001")
        assert (tally.idx, tally.votes) == (0, 2)
        assert await store.image_tallies("T1", "C1", since=0.0) == [tally]
        assert await store.image_tallies("T1", "C2", since=0.0) == []
        await store.mark_deleted(job_id, "U1")
        assert await store.thread_tallies("C1", "1.000001") == []
        assert await store.image_tallies("T1", "C1", since=0.0) == []
    finally:
        await store.close()


async def test_one_open_vote_per_thread_and_one_per_request(database_url: str) -> None:
    store, _ = await _store_with_job(database_url)
    try:
        opened = await store.open_vote_round(
            team_id="T1",
            channel_id="C1",
            thread_ts="1.000001",
            opened_by="U1",
            request_key="a",
            deadline=160.0,
            now=100.0,
        )
        with pytest.raises(DuplicateRequestError):
            await store.open_vote_round(
                team_id="T1",
                channel_id="C1",
                thread_ts="1.000001",
                opened_by="U1",
                request_key="a",
                deadline=1.0,
                now=0.0,
            )
        with pytest.raises(VoteOpenError) as refused:
            await store.open_vote_round(
                team_id="T1",
                channel_id="C1",
                thread_ts="1.000001",
                opened_by="U2",
                request_key="b",
                deadline=1.0,
                now=0.0,
            )
        assert refused.value.round == opened
        assert await store.next_vote_deadline() == 160.0
        assert await store.due_vote_rounds(159.0) == []
        [due] = await store.due_vote_rounds(160.0)
        assert await store.close_vote_round(due.id, 161.0) is not None
        assert await store.close_vote_round(due.id, 162.0) is None
        assert [r.id for r in await store.unposted_vote_rounds()] == [due.id]
        await store.set_vote_result(due.id, "2.000001")
        assert await store.unposted_vote_rounds() == []
        assert await store.next_vote_deadline() is None
    finally:
        await store.close()


def _mrkdwn(value: object) -> list[str]:
    """Every mrkdwn text in a payload, and its top-level `text` (what Slack parses for mentions)."""
    if isinstance(value, list):
        return [text for item in value for text in _mrkdwn(item)]
    if not isinstance(value, dict):
        return []
    own = [str(value["text"])] if value.get("type") == "mrkdwn" or "blocks" in value else []
    return own + [text for item in value.values() for text in _mrkdwn(item)]


def _round() -> VoteRound:
    return VoteRound(7, "T1", "C1", "1.000001", "U1", "k", 100.0, 1000.0, None, None, None)


def test_vote_views_pass_block_kit_validation() -> None:
    job = Job(
        "0123abcdef", "T1", "C1", "1.000001", "1.000001", "1.000001", "U1", "<!channel> & a fox " * 40, "m",
        "2K", None, 1, False, 2, {}, [], JobState.UPLOADED, None, None, 10.0, 11.0, 12.0,
    )  # fmt: skip
    picks = [vote_views.Pick(job, idx, 3 - idx, f"F{idx:09d}") for idx in range(2)]
    messages = [
        vote_views.digest(
            picks * 5, period=Period.WEEK, channel_id="C1", links={job.id: "https://x/y"}, ready_before=20.0
        ),
        vote_views.nothing_voted(Period.TODAY),
        vote_views.hint(VoteHint.PICK_A_NUMBER, 4),
        vote_views.hint(VoteHint.NO_SUCH_IMAGE, 2),
        vote_views.hint(VoteHint.NO_SUCH_IMAGE, 1),
        vote_views.announcement(_round(), thread_link="https://x/y", root=job, in_thread=False),
        vote_views.winner(_round(), picks, thread_link="https://x/y", ready_before=20.0),
        vote_views.winner(_round(), [], thread_link="", ready_before=20.0),
        vote_views.already_open(_round()),
        vote_views.no_thread(),
        vote_views.not_a_dreamboard_thread(),
        vote_views.bad_duration("`<x>` is bad"),
        vote_views.not_posted("the digest", "internal_error"),
        vote_views.winner_not_posted(
            _round(), vote_views.winner(_round(), [], thread_link="", ready_before=0), "x"
        ),
    ]
    for message in messages:
        assert message_errors(message["blocks"], lambda ref: None) == []
        assert not any("<!channel>" in text for text in _mrkdwn(message))
    digest = messages[0]["blocks"]
    assert len(digest) == 12  # the head, ten picks at most, the footer
    assert digest[1]["accessory"]["slack_file"] == {"id": "F000000000"}
    assert "tied" not in messages[6]["blocks"][0]["text"]["text"]  # 3 votes against 2
    tied = [vote_views.Pick(job, idx, 2, None) for idx in range(2)]
    assert (
        "tied"
        in vote_views.winner(_round(), tied, thread_link="", ready_before=20.0)["blocks"][0]["text"]["text"]
    )
