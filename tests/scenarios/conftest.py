"""Fixtures for end-to-end scenarios: fakes on loopback and a restartable bot on a real SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.fakes.oxen import FakeOxen
from tests.fakes.slack import ACK_DEADLINE, FakeSlack
from tests.scenarios.harness import Harness


@pytest.fixture(autouse=True)
def acks_within_deadline(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail any scenario whose bot answered a command, action or view submission after Slack's 3 s: the
    user would have seen an error (FakeSlack.ACK_DEADLINE says what Slack and Bolt do then)."""
    if "fake_slack" not in request.fixturenames:
        yield
        return
    slack: FakeSlack = request.getfixturevalue("fake_slack")
    yield
    late = [f"{r.kind} answered {r.status} after {r.elapsed:.2f} s" for r in slack.late_acks()]
    if late:
        pytest.fail(f"acked after Slack's {ACK_DEADLINE:g} s deadline: " + "; ".join(late))


@pytest.fixture
async def harness(fake_slack: FakeSlack, fake_oxen: FakeOxen, tmp_path: Path) -> AsyncIterator[Harness]:
    """A harness whose bot is stopped after the test (start it with `await harness.start()`)."""
    bot = Harness(fake_slack, fake_oxen, tmp_path / "data" / "dreamboard.sqlite3")
    yield bot
    await bot.stop(grace=1.0)
