"""Removing secrets from any text that leaves the process: log lines and messages posted to Slack."""

from __future__ import annotations

import re
from collections.abc import Iterable

_TOKEN_SHAPES = re.compile(r"(xox[abposr]-[A-Za-z0-9-]+|xapp-[A-Za-z0-9-]+|Bearer\s+[A-Za-z0-9._~+/=-]+)")


class Redactor:
    """Replaces the configured secret values, and anything shaped like a Slack token or a bearer
    header, with `[redacted]`."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted((s for s in secrets if len(s) >= 6), key=len, reverse=True)

    def redact(self, text: str) -> str:
        """`text` without secrets."""
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        return _TOKEN_SHAPES.sub("[redacted]", text)
