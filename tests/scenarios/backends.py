"""Which store backend a scenario's `harness` runs on: a SQLite file unless parametrised otherwise."""

from __future__ import annotations

import pytest

POSTGRES = pytest.param("postgres", marks=pytest.mark.postgres)
"""The `harness` parameter for a bot on a fresh PostgreSQL database, for
`@pytest.mark.parametrize("harness", [POSTGRES], indirect=True)`. It carries the `postgres` marker
itself: the fixture asks for `postgres_url` only at run time, so collection cannot see it."""

BOTH_BACKENDS = pytest.mark.parametrize("harness", ["sqlite", POSTGRES], indirect=True)
"""Runs a scenario twice: its bot on a SQLite file, then on PostgreSQL."""
