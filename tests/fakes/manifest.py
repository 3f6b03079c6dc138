"""The bot scopes manifest.yaml asks for: what a fresh install of the app is granted (FakeSlack's default)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

MANIFEST = Path(__file__).resolve().parents[2] / "manifest.yaml"


@cache
def bot_scopes(path: Path = MANIFEST) -> frozenset[str]:
    """The entries under `oauth_config.scopes.bot` (a small reader: PyYAML is not a dependency)."""
    trail: list[tuple[int, str]] = []
    scopes: set[str] = set()
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        item = line.strip()
        if item.startswith("- "):
            if [key for _, key in trail] == ["oauth_config", "scopes", "bot"]:
                scopes.add(item[2:].strip())
            continue
        while trail and trail[-1][0] >= indent:
            trail.pop()
        trail.append((indent, item.split(":", 1)[0]))
    if not scopes:
        raise ValueError(f"{path} lists no oauth_config.scopes.bot")
    return frozenset(scopes)
