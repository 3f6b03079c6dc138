"""Vote-to-pick end to end: votes from reaction events, the `/imagine top` digest, and timed votes that
close on a clock the test advances, across restarts, with the winner posted exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bot.features.votes import Clock
from bot.store.model import Job
from bot.store.store import Store
from bot.views.votes import WINNER_EVENT
from tests.fakes.recorder import Call
from tests.scenarios.harness import Harness
from tests.scenarios.test_permutations import sheet_posted


class ManualClock:
    """Wall time that moves only when the test advances it; waiters wake when it passes their moment."""

    def __init__(self) -> None:
        self._now = time.time()
        self._changed = asyncio.Condition()

    def now(self) -> float:
        return self._now

    async def sleep_until(self, moment: float) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._now >= moment)

    async def advance(self, seconds: float) -> None:
        self._now += seconds
        async with self._changed:
            self._changed.notify_all()

    @property
    def clock(self) -> Clock:
        return Clock(now=self.now, sleep_until=self.sleep_until)


class Seen:
    """Counts a hook's calls; `reach(n)` waits for the n-th."""

    def __init__(self) -> None:
        self.count = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def __call__(self, *_: Any) -> None:
        self.count += 1
        for wanted, future in self._waiters:
            if self.count >= wanted and not future.done():
                future.set_result(None)

    async def reach(self, wanted: int, timeout: float = 5.0) -> None:
        if self.count >= wanted:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((wanted, future))
        await asyncio.wait_for(future, timeout)


def blocks_of(call: Call) -> list[dict[str, Any]]:
    blocks = call.params.get("blocks")
    return list(json.loads(blocks) if isinstance(blocks, str) else blocks or [])


def is_winner(call: Call) -> bool:
    metadata = call.params.get("metadata")
    metadata = json.loads(metadata) if isinstance(metadata, str) else metadata or {}
    return call.method == "chat.postMessage" and metadata.get("event_type") == WINNER_EVENT


def winner_ts(harness: Harness) -> str:
    """The ts of the one winner message in C1."""
    [ts] = [
        m["ts"]
        for m in harness.slack.messages("C1")
        if (m.get("metadata") or {}).get("event_type") == WINNER_EVENT
    ]
    return str(ts)


def is_announcement(call: Call) -> bool:
    return call.params.get("text") == "A vote is open"


@contextlib.contextmanager
def database(harness: Harness) -> Iterator[sqlite3.Connection]:
    with contextlib.closing(sqlite3.connect(harness.database)) as db, db:
        yield db


async def start(harness: Harness, clock: ManualClock | None = None) -> tuple[Seen, Seen]:
    """Start the bot (on `clock` for vote deadlines); counters of handled voting reactions and of the
    deadline task's passes."""
    harness.vote_clock = clock.clock if clock else None
    harness.slack.file_processing_delay = 0.0
    await harness.start(slack_file_grace=0.0)
    assert harness.running is not None
    votes = harness.running.services.votes
    reactions, passes = Seen(), Seen()
    votes.on_reaction.append(reactions)
    votes.on_pass.append(passes)
    return reactions, passes


async def react(harness: Harness, reaction: str, ts: str | None, user: str, *, removed: bool = False) -> None:
    assert ts is not None
    event = harness.slack.reaction_event(reaction, user=user, channel="C1", ts=ts, removed=removed)
    await harness.send(event)


async def results(harness: Harness) -> list[Job]:
    return [job for job, _ in await harness.jobs()]


async def test_votes_from_reactions_rank_in_the_digest(harness: Harness) -> None:
    reactions, _ = await start(harness)
    await harness.generate("a lighthouse --seed 1")
    await harness.generate("two foxes --seed 2 --n 2")
    await harness.generate("a comet --seed 3")
    a, b, c = await results(harness)
    a_upload, c_upload = await harness.wait_upload_ts(a.id), await harness.wait_upload_ts(c.id)
    assert a.status_ts is not None
    first = harness.slack.reaction_event("+1", user="U2", channel="C1", ts=a.status_ts)
    await harness.send(first)
    await reactions.reach(1)
    events: list[tuple[str, str | None, str, bool]] = [
        ("+1::skin-tone-3", a_upload, "U3", False),
        ("two", b.status_ts, "U2", False),
        ("two", b.status_ts, "U3", False),
        ("one", b.status_ts, "U5", False),
        ("+1", c.status_ts, "U4", False),
        ("thumbsup", c_upload, "U4", False),  # the same person on the same image: one vote
        ("+1", c.status_ts, "U7", False),
        ("+1", c.status_ts, "U7", True),
        ("+1", c.status_ts, "U7", False),  # added again: counts once
    ]
    for handled, (reaction, ts, user, removed) in enumerate(events, start=2):
        await react(harness, reaction, ts, user, removed=removed)
        await reactions.reach(handled)
    # A vote taken back, then its adding event delivered again late (Slack retries until acked): still
    # taken back. A second delivery of the very first event changes nothing either.
    assert c.status_ts is not None
    taken_back = harness.slack.reaction_event("+1", user="U6", channel="C1", ts=c.status_ts)
    await harness.send(taken_back)
    await react(harness, "+1", c.status_ts, "U6", removed=True)
    await harness.send(taken_back)
    await harness.send(first)
    await react(harness, "heart", c.status_ts, "U8")  # no vote: never reaches the feature's hook
    await reactions.reach(len(events) + 5)
    await harness.command("top")
    [digest] = await harness.slack.wait_for(
        "chat.postMessage", where=lambda c: "Most-voted" in c.params["text"]
    )
    ranked = [block["text"]["text"] for block in blocks_of(digest)[1:-1]]
    assert [line.split(" · ")[0] for line in ranked] == [
        "*1.* 2 votes",
        "*2.* 2 votes",
        "*3.* 2 votes",
        "*4.* 1 vote",
    ]
    assert [
        "lighthouse" in ranked[0],
        "image 2 of 2" in ranked[1],
        "comet" in ranked[2],
        "image 1 of 2" in ranked[3],
    ] == [True] * 4
    assert all(f"<@{a.user_id}>" in line and "|thread>" in line for line in ranked)
    b_images = {job.id: images for job, images in await harness.jobs()}[b.id]
    assert blocks_of(digest)[2]["accessory"]["slack_file"] == {"id": b_images[1].file_id}
    assert harness.slack.calls_to("chat.postEphemeral") == []


async def test_a_thumbs_up_on_several_images_or_a_number_too_high_is_explained_once(harness: Harness) -> None:
    reactions, _ = await start(harness)
    await harness.generate("two foxes --seed 2 --n 2")
    [job] = await results(harness)
    await react(harness, "+1", job.status_ts, "U2")
    await react(harness, "+1::skin-tone-2", job.status_ts, "U2")
    await react(harness, "four", job.status_ts, "U3")
    await reactions.reach(3)
    hints = [call.params for call in harness.slack.calls_to("chat.postEphemeral")]
    assert [(hint["user"], hint["thread_ts"]) for hint in hints] == [
        ("U2", job.thread_ts),
        ("U3", job.thread_ts),
    ]
    assert ":one: :two:" in hints[0]["text"]
    assert "does not say which" in hints[0]["text"]
    await harness.command("top today")
    [empty] = await harness.slack.wait_for("response_url")
    assert "No result in this channel has a vote today" in empty.params["text"]


async def test_numbers_on_a_contact_sheet_vote_for_its_tiles(harness: Harness) -> None:
    reactions, _ = await start(harness)
    assert harness.running is not None
    sheet_messages: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    harness.running.services.permutations.on_sheet_message.append(
        lambda *seen: sheet_messages.put_nowait(seen)
    )
    await harness.command("a {red|blue} fox --seed 4")
    await sheet_posted(harness)
    _, sheet_ts = await asyncio.wait_for(sheet_messages.get(), timeout=10)
    by_prompt = {job.prompt: job for job in await results(harness)}
    events = [("two", "U2"), ("two::skin-tone-2", "U3"), ("one", "U4"), ("+1", "U5"), ("five", "U6")]
    for handled, (reaction, user) in enumerate(events, start=1):
        await react(harness, reaction, sheet_ts, user)
        await reactions.reach(handled)
    await react(harness, "+1", by_prompt["a red fox"].status_ts, "U4")  # the same person, image and vote
    await reactions.reach(len(events) + 1)

    hints = [call.params for call in harness.slack.calls_to("chat.postEphemeral")]
    root = by_prompt["a red fox"].thread_ts
    assert [(hint["user"], hint["thread_ts"]) for hint in hints] == [("U5", root), ("U6", root)]
    assert "2 tiles, so :+1: does not say which" in hints[0]["text"]
    assert "That tile has no image" in hints[1]["text"]
    await harness.command("top")
    [digest] = await harness.slack.wait_for(
        "chat.postMessage", where=lambda c: "Most-voted" in c.params["text"]
    )
    ranked = [block["text"]["text"] for block in blocks_of(digest)[1:-1]]
    assert [line.split(" · ")[0] for line in ranked] == ["*1.* 2 votes", "*2.* 1 vote"]
    assert ["blue fox" in ranked[0], "red fox" in ranked[1]] == [True, True]


async def test_a_vote_in_a_thread_closes_at_its_deadline_with_the_winner(harness: Harness) -> None:
    clock = ManualClock()
    reactions, passes = await start(harness, clock)
    root = await harness.generate("a red kite --seed 5 --n 2")
    [job] = await results(harness)
    bot = harness.slack.bot_user_id
    asked = harness.slack.human_message("C1", f"<@{bot}> vote 15m", user="U2", thread_ts=root)
    await harness.send(asked)
    await harness.send(harness.slack.app_mention(asked))
    [announced] = await harness.slack.wait_for("chat.postMessage", where=is_announcement)
    assert announced.params["thread_ts"] == root
    await passes.reach(2)  # the deadline task has seen the new vote: it is not due yet
    assert not any(is_winner(call) for call in harness.slack.calls)
    # A plain reply of that shape in a Dreamboard thread is a vote request too, not a prompt.
    again = harness.slack.human_message("C1", "vote 1h", user="U3", thread_ts=root)
    await harness.send(again)
    [refused] = await harness.slack.wait_for("chat.postEphemeral")
    assert refused.params["user"] == "U3"
    assert "already has a vote open" in refused.params["text"]
    for reaction, user in (("two", "U3"), ("two", "U4"), ("one", "U5")):
        await react(harness, reaction, job.status_ts, user)
    await reactions.reach(3)
    await clock.advance(15 * 60)
    [winner] = await harness.slack.wait_for("chat.postMessage", where=is_winner)
    text = blocks_of(winner)[0]["text"]["text"]
    assert "thread_ts" not in winner.params
    assert "image 2 of 2" in text
    assert "2 votes" in text
    assert f"<@{job.user_id}>" in text
    assert "tied" not in text
    assert len(await results(harness)) == 1
    assert len(harness.oxen.submissions) == 2
    assert len([c for c in harness.slack.calls_to("chat.postMessage") if is_announcement(c)]) == 1


async def test_a_vote_survives_a_restart_and_its_winner_is_posted_once(harness: Harness) -> None:
    clock = ManualClock()
    reactions, _ = await start(harness, clock)
    root = await harness.generate("a blue owl --seed 7")
    [job] = await results(harness)
    assert (await harness.command("vote 1h")).text == ""
    [announced] = await harness.slack.wait_for("chat.postMessage", where=is_announcement)
    assert "thread_ts" not in announced.params
    assert f"/archives/C1/p{root.replace('.', '')}" in blocks_of(announced)[0]["text"]["text"]
    await react(harness, "+1", job.status_ts, "U2")
    await reactions.reach(1)
    await harness.stop()
    await clock.advance(3601)
    # Overdue at start: closed at once. Slack takes the winner but its answer is lost (a 500).
    harness.slack.fault("chat.postMessage", status=500, after=True)
    _, passes = await start(harness, clock)
    [winner] = await harness.slack.wait_for("chat.postMessage", where=is_winner)
    assert "1 vote" in blocks_of(winner)[0]["text"]["text"]
    await passes.reach(1)
    with database(harness) as db:
        assert db.execute("SELECT closed_at IS NOT NULL, result_ts FROM vote_rounds").fetchall() == [
            (1, None)
        ]
    # The next start finds the post by its metadata instead of posting again.
    await harness.stop()
    _, passes = await start(harness, clock)
    await passes.reach(1)
    assert len([call for call in harness.slack.calls if is_winner(call)]) == 1
    assert not [call for call in harness.slack.calls_to("chat.postMessage") if call.params["channel"] == "U1"]
    with database(harness) as db:
        assert db.execute("SELECT result_ts FROM vote_rounds").fetchall() == [(winner_ts(harness),)]


async def test_a_vote_closed_but_its_winner_not_posted_before_a_crash_is_posted_at_start(
    harness: Harness,
) -> None:
    clock = ManualClock()
    await start(harness, clock)
    await harness.generate("a green heron --seed 8")
    await harness.command("vote 2h")
    await harness.slack.wait_for("chat.postMessage", where=is_announcement)
    await harness.stop()
    store = await Store.open(harness.database)
    try:
        [due] = await store.due_vote_rounds(clock.now() + 7200)
        assert await store.close_vote_round(due.id, clock.now()) is not None
    finally:
        await store.close()
    _, passes = await start(harness, clock)
    [winner] = await harness.slack.wait_for("chat.postMessage", where=is_winner)
    assert "no votes" in winner.params["text"]
    await passes.reach(1)
    assert len([call for call in harness.slack.calls if is_winner(call)]) == 1


async def test_a_winner_slack_refuses_in_the_channel_reaches_the_opener_by_dm(harness: Harness) -> None:
    clock = ManualClock()
    await start(harness, clock)
    await harness.generate("a grey seal --seed 9")
    await harness.command("vote 1m", user_id="U4")
    await harness.slack.wait_for("chat.postMessage", where=is_announcement)
    harness.slack.set_channel_error("C1", "is_archived")
    await clock.advance(60)
    [dm] = await harness.slack.wait_for("chat.postMessage", where=lambda call: call.params["channel"] == "U4")
    texts = [block["text"]["text"] for block in blocks_of(dm)]
    assert "refused its result in <#C1> (is_archived)" in texts[0]
    assert "closed with no votes" in texts[1]
    with database(harness) as db:
        assert db.execute("SELECT closed_at IS NOT NULL, result_ts FROM vote_rounds").fetchall() == [
            (1, None)
        ]


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("vote 30s", "at least 1 minute"),
        ("vote 8d", "at most 7 days"),
        ("top 11", "N is 1 to 10"),
    ],
)
async def test_bad_vote_and_top_commands_are_refused_in_the_ack(
    harness: Harness, text: str, answer: str
) -> None:
    await start(harness)
    response = await harness.command(text)
    assert answer in json.loads(response.text)["text"]


async def test_a_vote_needs_a_dreamboard_thread(harness: Harness) -> None:
    await start(harness)
    await harness.command("vote 15m", channel_id="C1")
    [refused] = await harness.slack.wait_for("response_url")
    assert "no Dreamboard thread in this channel" in refused.params["text"]
