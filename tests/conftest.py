"""Test-wide fixtures: no network beyond loopback, no inherited Slack/Oxen settings, the two fakes."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.fakes.oxen import FakeOxen
from tests.fakes.slack import FakeSlack
from tests.postgres import mark_postgres_tests, postgres_server, postgres_url

__all__ = ["postgres_server", "postgres_url"]

_SETTING_PREFIXES = (
    "SLACK_",
    "OXEN_",
    "DATABASE_",
    "PUBLIC_BASE_URL",
    "REFERENCE_",
    "MAX_",
    "LOG_LEVEL",
    "HOST",
    "PORT",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use a Postgres fixture carry the `postgres` marker."""
    mark_postgres_tests(items)


def _is_local(address: Any) -> bool:
    if isinstance(address, tuple) and address:
        host = str(address[0])
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host.split("%")[0]).is_loopback
        except ValueError:
            return False
    return isinstance(address, (str, bytes))  # Unix sockets stay on the machine


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that tries to reach a host other than this machine's loopback."""
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def guard(address: Any) -> None:
        if not _is_local(address):
            raise OSError(f"tests must not use the network (tried {address!r})")

    def connect(self: socket.socket, address: Any) -> None:
        guard(address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        guard(address)
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's real tokens in the environment never leak into a test."""
    for name in list(os.environ):
        if name.startswith(_SETTING_PREFIXES):
            monkeypatch.delenv(name)


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlack]:
    """A running FakeSlack. A test fails if Slack refused a payload as invalid Block Kit and the test did
    not clear `rejections` after asserting on them."""
    async with FakeSlack() as slack:
        yield slack
    assert not slack.rejections, f"Slack refused payloads as invalid Block Kit: {slack.rejections}"


@pytest.fixture
async def fake_oxen() -> AsyncIterator[FakeOxen]:
    """A running FakeOxen (current schema shape, tiny images)."""
    async with FakeOxen() as oxen:
        yield oxen
