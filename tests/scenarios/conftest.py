"""Fixtures for end-to-end scenarios: fakes on loopback and a restartable bot on a real SQLite file (or
PostgreSQL, see tests/scenarios/backends.py)."""

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
async def harness(
    request: pytest.FixtureRequest, fake_slack: FakeSlack, fake_oxen: FakeOxen, tmp_path: Path
) -> AsyncIterator[Harness]:
    """A harness whose bot is stopped after the test (start it with `await harness.start()`). Its state
    is in a SQLite file, or, parametrised indirectly with "postgres" (tests/scenarios/backends.py), in
    a fresh PostgreSQL database; then the test fails if the bot made the SQLite file all the same."""
    backend = getattr(request, "param", "sqlite")
    assert backend in ("sqlite", "postgres"), f"no store backend {backend!r}"
    url: str | None = request.getfixturevalue("postgres_url") if backend == "postgres" else None
    bot = Harness(fake_slack, fake_oxen, tmp_path / "data" / "dreamboard.sqlite3", database_url=url)
    yield bot
    await bot.stop(grace=1.0)
    if url is not None:
        assert not bot.database.exists(), "the bot used the SQLite file instead of PostgreSQL"
