"""Structured (JSON lines) logging to stdout with secrets redacted.

A log line emitted while a job id is bound carries `"job": "<id>"`. Call `bind_job(job_id)` at the start
of a job's task (it stays in that task and the tasks it creates, since asyncio tasks copy the context
when they are created), or wrap a block in `with job_context(job_id):`.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime

_TOKEN_SHAPES = re.compile(r"(xox[abposr]-[A-Za-z0-9-]+|xapp-[A-Za-z0-9-]+|Bearer\s+[A-Za-z0-9._~+/=-]+)")
_job: ContextVar[str | None] = ContextVar("dreamboard_log_job", default=None)


def bind_job(job_id: str) -> None:
    """Tag every later log line in the current task (and the tasks it creates) with `job_id`."""
    _job.set(job_id)


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Tag the log lines emitted inside the block with `job_id`."""
    token = _job.set(job_id)
    try:
        yield
    finally:
        _job.reset(token)


class JobFilter(logging.Filter):
    """Copies the bound job id (if any) onto each record as `record.job`."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.job = _job.get()
        return True


class RedactingJsonFormatter(logging.Formatter):
    """One JSON object per line; known secret values and token shapes are replaced by `[redacted]`."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._secrets = sorted((s for s in secrets if len(s) >= 6), key=len, reverse=True)

    def redact(self, text: str) -> str:
        """Remove every configured secret and anything shaped like a Slack token or bearer header."""
        for secret in self._secrets:
            text = text.replace(secret, "[redacted]")
        return _TOKEN_SHAPES.sub("[redacted]", text)

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
    """Send every log record to stdout as redacted JSON."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(RedactingJsonFormatter(secrets))
    handler.addFilter(JobFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("slack_bolt").setLevel(max(logging.getLevelName(level), logging.INFO))
    logging.getLogger("httpx").setLevel(logging.WARNING)
