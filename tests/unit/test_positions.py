"""Live queue positions: QueuePositions' coalesced edits (injected clock)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bot.jobs.positions import QueuePositions
from bot.store.model import Job, JobState


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def job(job_id: str) -> Job:
    return Job(
        id=job_id,
        team_id="T",
        channel_id="C1",
        thread_ts=None,
        status_ts=f"1.{job_id}",
        card_ts=None,
        user_id="U1",
        prompt="a fox",
        model="m",
        size="2K",
        aspect_ratio=None,
        seed=1,
        seed_given=False,
        n=1,
        params={},
        notes=[],
        state=JobState.QUEUED,
        error=None,
        parent_id=None,
        created_at=0.0,
        started_at=None,
        finished_at=None,
    )


class Board:
    """What the positions module sees: a line, stored jobs and Slack's answers to edits."""

    def __init__(self, clock: Clock) -> None:
        self.line: dict[str, int] = {}
        self.jobs = {job_id: job(job_id) for job_id in "abcdef"}
        self.edits: list[tuple[str, int, float]] = []
        self.refuse = False
        self.positions = QueuePositions(
            positions=self.current,
            load=self.load,
            edit=self.edit,
            min_interval=5.0,
            per_minute=12.0,
            burst=2.0,
            clock=clock,
        )
        self.clock = clock

    async def current(self) -> dict[str, int]:
        return dict(self.line)

    async def load(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    async def edit(self, edited: Job, position: int) -> bool:
        self.edits.append((edited.id, position, self.clock.now))
        return not self.refuse


async def test_edits_are_coalesced_per_message_skipped_when_unchanged_and_budgeted() -> None:
    clock = Clock()
    board = Board(clock)
    for position, job_id in enumerate("abc", start=2):
        board.positions.shown(job_id, position)
    board.line = {"a": 2, "b": 3, "c": 4}
    assert await board.positions.step() is None, "nothing changed"
    board.line = {"a": 1, "b": 2, "c": 3}
    assert await board.positions.step() == 5.0, "too soon after the status post"
    clock.now = 5.0
    wait = await board.positions.step()
    assert board.edits == [("a", 1, 5.0), ("b", 2, 5.0)], "the front first, two at once (the burst)"
    assert wait == pytest.approx(5.0), "c: the budget refills 12 a minute"
    clock.now = 10.0
    await board.positions.step()
    assert board.edits[2:] == [("c", 3, 10.0)], "c waited for the budget (12 a minute)"
    assert await board.positions.step() is None, "all shown: nothing more to do"

    board.line = {"a": 1, "b": 1, "c": 2}
    clock.now = 12.0
    assert await board.positions.step() == pytest.approx(3.0), "b is due again, the budget is not"
    clock.now = 16.0
    await board.positions.step()
    assert board.edits[3:] == [("b", 1, 16.0)], "the front first; c waits for the next token"


async def test_a_job_that_leaves_the_line_is_not_edited_and_a_refused_edit_is_tried_later() -> None:
    clock = Clock()
    board = Board(clock)
    board.positions.shown("a", 3)
    board.positions.shown("b", 4)
    board.line = {"a": 2, "b": 3}
    await board.positions.forget("b")
    board.jobs["a"] = replace(board.jobs["a"], state=JobState.RUNNING)
    clock.now = 5.0
    await board.positions.step()
    assert board.edits == [], "a started (its state is no longer queued) and b was forgotten"

    board.jobs["a"] = replace(board.jobs["a"], state=JobState.QUEUED)
    board.refuse = True
    clock.now = 10.0
    await board.positions.step()
    board.refuse = False
    clock.now = 15.0
    await board.positions.step()
    assert [edit[:2] for edit in board.edits] == [("a", 2), ("a", 2)], "refused (rate-limited), then again"
    clock.now = 30.0
    assert await board.positions.step() is None
    assert len(board.edits) == 2
