"""Redacted JSON logs and the Prometheus rendering."""

from __future__ import annotations

import json
import logging

from bot.app.logs import RedactingJsonFormatter
from bot.app.metrics import Metrics


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord("bot", logging.INFO, __file__, 1, message, None, None)


def test_configured_secrets_and_token_shapes_are_redacted() -> None:
    formatter = RedactingJsonFormatter(["super-secret-oxen-key"])
    line = formatter.format(
        record("key super-secret-oxen-key, xoxb-123-abc, xapp-1-A, Authorization: Bearer abc.def")
    )
    entry = json.loads(line)
    assert entry["level"] == "INFO"
    for secret in ("super-secret-oxen-key", "xoxb-123-abc", "xapp-1-A", "abc.def"):
        assert secret not in line


def test_metrics_render_prometheus_text() -> None:
    metrics = Metrics()
    metrics.inc("dreamboard_acks_total", kind="command")
    metrics.observe("dreamboard_ack_seconds", 0.02, kind="command")
    metrics.observe("dreamboard_ack_seconds", 2.0, kind="command")
    metrics.gauge("dreamboard_jobs", "state", lambda: {"queued": 2, "running": 1})
    text = metrics.render()
    assert 'dreamboard_acks_total{kind="command"} 1' in text
    assert 'dreamboard_ack_seconds_bucket{kind="command",le="0.025"} 1' in text
    assert 'dreamboard_ack_seconds_bucket{kind="command",le="+Inf"} 2' in text
    assert 'dreamboard_ack_seconds_count{kind="command"} 2' in text
    assert 'dreamboard_jobs{state="queued"} 2' in text
    assert "# TYPE dreamboard_ack_seconds histogram" in text
