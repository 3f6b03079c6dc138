"""Removing secrets from any text that leaves the process: log lines, everything sent to Slack (Web API
calls, ack bodies, response_url posts, uploaded text files) and the doctor's report.

One Redactor, built from Settings.secret_values, is handed to each of those exits."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

# A bearer credential is a run of token characters holding a digit or punctuation, or a long run of
# letters: "Bearer abc.def" is a credential, the "Bearer of gifts" in a prompt is not.
_BEARER = r"Bearer\s+(?:(?=[A-Za-z]*[0-9._~+/=-])[A-Za-z0-9._~+/=-]+|[A-Za-z]{20,})"
_TOKEN_SHAPES = re.compile(rf"(xox[abposr]-[A-Za-z0-9-]+|xapp-[A-Za-z0-9-]+|{_BEARER})")
REDACTED = "[redacted]"


class Redactor:
    """Replaces the configured secret values, and anything shaped like a Slack token or a bearer
    header, with `[redacted]`."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = sorted((s for s in secrets if len(s) >= 6), key=len, reverse=True)

    def redact(self, text: str) -> str:
        """`text` without secrets."""
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return _TOKEN_SHAPES.sub(REDACTED, text)

    def redact_payload(self, value: Any) -> Any:
        """`value` (JSON-like: strings inside dicts, lists and tuples, at any depth) with every string
        redacted, keys included; other values are returned as they are."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {self.redact_payload(key): self.redact_payload(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.redact_payload(item) for item in value)
        return value
