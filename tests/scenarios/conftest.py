"""Fixtures for end-to-end scenarios: fakes on loopback and a restartable bot on a real SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.fakes.oxen import FakeOxen
from tests.fakes.slack import FakeSlack
from tests.scenarios.harness import Harness


@pytest.fixture
async def harness(fake_slack: FakeSlack, fake_oxen: FakeOxen, tmp_path: Path) -> AsyncIterator[Harness]:
    """A harness whose bot is stopped after the test (start it with `await harness.start()`)."""
    bot = Harness(fake_slack, fake_oxen, tmp_path / "data" / "dreamboard.sqlite3")
    yield bot
    await bot.stop(grace=1.0)
