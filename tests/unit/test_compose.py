"""compose.yaml, checked without a container engine: its structure (two bot replicas on one PostgreSQL 15,
health checks, secrets only from .env, Socket Mode) and that every setting it passes is one Dreamboard
reads. PyYAML is not a dependency, so a small reader takes the block style the file is written in."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from bot.app.config import Settings

COMPOSE = Path(__file__).resolve().parents[2] / "compose.yaml"
ENV_EXAMPLE = COMPOSE.with_name(".env.example")


def _scalar(text: str) -> str | None:
    if not text:
        return None
    if text.startswith('"'):
        value: str = json.loads(text)
        return value
    if text.startswith("'"):
        return text[1:-1].replace("''", "'")
    return text


def read_block_yaml(text: str) -> Any:
    """Mappings and lists of scalars in YAML block style (no flow collections, anchors or multi-line
    scalars: the reader refuses them rather than misread them)."""
    lines: list[tuple[int, str]] = []
    for raw in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        item = line.strip()
        if item:
            value = item[2:] if item.startswith("- ") else item.partition(": ")[2]
            if value[:1] in ("[", "{", "&", "*", "|", ">", "!"):
                raise ValueError(f"not in the block style this reader takes: {raw!r}")
            lines.append((len(line) - len(line.lstrip()), item))

    def block(start: int, indent: int) -> tuple[Any, int]:
        if lines[start][1].startswith("- "):
            items: list[Any] = []
            while start < len(lines) and lines[start][0] == indent and lines[start][1].startswith("- "):
                items.append(_scalar(lines[start][1][2:].strip()))
                start += 1
            return items, start
        mapping: dict[str, Any] = {}
        while start < len(lines) and lines[start][0] == indent:
            key, _, rest = lines[start][1].partition(":")
            start += 1
            if rest.strip():
                mapping[key] = _scalar(rest.strip())
            elif start < len(lines) and lines[start][0] > indent:
                mapping[key], start = block(start, lines[start][0])
            else:
                mapping[key] = None
        return mapping, start

    document, end = block(0, 0)
    if end != len(lines):
        raise ValueError(f"unexpected indentation at {lines[end][1]!r}")
    return document


def test_the_reader_reads_mappings_lists_and_quotes_and_refuses_what_it_cannot() -> None:
    text = 'a:\n  b: "3000"\n  c:\n    - x\n    - y # note\n  d:\nz: it\'s\n'
    assert read_block_yaml(text) == {"a": {"b": "3000", "c": ["x", "y"], "d": None}, "z": "it's"}
    with pytest.raises(ValueError, match="block style"):
        read_block_yaml("a: [1, 2]\n")
    with pytest.raises(ValueError, match="block style"):
        read_block_yaml("a: &anchor\n  b: 1\n")


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    compose = read_block_yaml(COMPOSE.read_text())
    assert set(compose) == {"services", "volumes"}
    found: dict[str, Any] = compose["services"]
    return found


def bots(services: dict[str, Any]) -> dict[str, Any]:
    return {name: service for name, service in services.items() if service.get("build") == "."}


def test_postgres_15_with_a_health_check_and_its_own_volume(services: dict[str, Any]) -> None:
    postgres = services["postgres"]
    assert postgres["image"] == "postgres:15"
    assert postgres["healthcheck"]["test"][0] == "CMD-SHELL"
    assert postgres["healthcheck"]["test"][1].startswith("pg_isready")
    assert postgres["volumes"] == ["postgres-data:/var/lib/postgresql/data"]
    assert postgres["environment"]["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")


def test_two_bot_replicas_built_from_the_dockerfile_share_one_database(services: dict[str, Any]) -> None:
    replicas = bots(services)
    assert len(replicas) == 2
    assert COMPOSE.with_name("Dockerfile").is_file()
    urls = {service["environment"]["DATABASE_URL"] for service in replicas.values()}
    [url] = urls
    assert url.startswith("postgresql://dreamboard:${POSTGRES_PASSWORD:?")
    assert url.endswith("@postgres:5432/dreamboard")
    assert len({service["environment"]["REPLICA_ID"] for service in replicas.values()}) == 2
    assert len({service["ports"][0].split(":")[0] for service in replicas.values()}) == 2
    assert len({service["volumes"][0].split(":")[0] for service in replicas.values()}) == 2, "own /data"
    for service in replicas.values():
        assert service["depends_on"] == {"postgres": {"condition": "service_healthy"}}
        assert service["volumes"][0].endswith(":/data")
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD"
        assert "/healthz" in test[-1]
        assert f":{service['environment']['PORT']}/" in test[-1]


def test_secrets_come_only_from_env_file_and_socket_mode_is_the_default(services: dict[str, Any]) -> None:
    text = COMPOSE.read_text()
    assert not re.search(r"xox[bp]-|xapp-", text), "no token in the file"
    example = dict(
        line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if re.match(r"\w+=", line)
    )
    assert {"SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "OXEN_API_KEY", "POSTGRES_PASSWORD"} <= set(example)
    assert not any(example.values()), ".env.example holds no values"
    assert ".env" in COMPOSE.with_name(".gitignore").read_text().split()
    for service in bots(services).values():
        assert service["env_file"] == [".env"]
        assert "SLACK_SIGNING_SECRET" not in service["environment"], "Socket Mode: no signing secret"


def test_every_setting_passed_is_one_dreamboard_reads(services: dict[str, Any]) -> None:
    known = {name.upper() for name in Settings.model_fields}
    passed = {name for service in bots(services).values() for name in service["environment"]}
    example = {
        line.split("=", 1)[0].lstrip("# ") for line in ENV_EXAMPLE.read_text().splitlines() if "=" in line
    }
    assert passed - known == set()
    assert example - known - {"POSTGRES_PASSWORD"} == set()
