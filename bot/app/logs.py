"""Structured (JSON lines) logging to stdout with secrets redacted.

A log line emitted while a job id is bound (bot/domain/logcontext.py) carries `"job": "<id>"`.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import datetime

from bot.domain.logcontext import current_job
from bot.domain.secrets import Redactor


class JobFilter(logging.Filter):
    """Copies the bound job id (if any) onto each record as `record.job`."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.job = current_job()
        return True


class RedactingJsonFormatter(logging.Formatter):
    """One JSON object per line; known secret values and token shapes are replaced by `[redacted]`."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._redactor = Redactor(secrets)

    def redact(self, text: str) -> str:
        """Remove every configured secret and anything shaped like a Slack token or bearer header."""
        return self._redactor.redact(text)

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": self.redact(record.getMessage()),
        }
        job = getattr(record, "job", None)
        if job is not None:
            entry["job"] = job
        if record.exc_info:
            entry["exception"] = self.redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str, secrets: Iterable[str]) -> None:
    """Send every log record, and every Python warning (such as Pillow's DecompressionBombWarning for a
    file that is then refused), to stdout as redacted JSON."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(RedactingJsonFormatter(secrets))
    handler.addFilter(JobFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("slack_bolt").setLevel(max(logging.getLevelName(level), logging.INFO))
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.captureWarnings(True)
