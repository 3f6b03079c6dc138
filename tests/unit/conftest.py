"""Unit-test fixtures: the store's backends."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A DATABASE_URL for an empty database: a SQLite file under `tmp_path`, or a fresh database on the
    test session's PostgreSQL server. Tests using it run once on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'nested' / 'db.sqlite3'}"
    url: str = request.getfixturevalue("postgres_url")
    return url
