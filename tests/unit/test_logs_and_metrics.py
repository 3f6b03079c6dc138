"""Redacted JSON logs and the Prometheus rendering."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from bot.app.logs import JobFilter, RedactingJsonFormatter
from bot.app.metrics import Metrics
from bot.domain.logcontext import bind_job, job_context


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


def test_log_time_has_milliseconds_and_offset() -> None:
    entry = json.loads(RedactingJsonFormatter([]).format(record("hello")))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", entry["time"])


@pytest.fixture
def job_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing redacted JSON through the job filter into a buffer."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingJsonFormatter([]))
    handler.addFilter(JobFilter())
    logger = logging.getLogger("tests.job_log")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def entries(stream: io.StringIO) -> list[dict[str, str]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_lines_inside_job_context_carry_the_job(job_log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = job_log
    with job_context("abc"):
        logger.info("inside")
    logger.info("outside")
    inside, outside = entries(stream)
    assert inside["job"] == "abc"
    assert "job" not in outside


async def test_concurrent_tasks_each_see_their_own_job(job_log: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = job_log
    both_bound = asyncio.Barrier(2)

    async def job(job_id: str) -> None:
        bind_job(job_id)
        await both_bound.wait()
        logger.info(job_id)

    await asyncio.gather(job("one"), job("two"))
    logger.info("caller")
    assert {entry["message"]: entry.get("job") for entry in entries(stream)} == {
        "one": "one",
        "two": "two",
        "caller": None,
    }


def test_metrics_render_prometheus_text() -> None:
    metrics = Metrics()
    metrics.inc("dreamboard_acks_total", kind="command")
    metrics.observe("dreamboard_ack_seconds", 0.02, kind="command")
    metrics.observe("dreamboard_ack_seconds", 2.0, kind="command")
    metrics.observe("dreamboard_generation_seconds", 12.5)
    metrics.gauge("dreamboard_jobs", "state", lambda: {"queued": 2, "running": 1})
    lines = metrics.render().splitlines()
    for line in (
        "# HELP dreamboard_acks_total Slack requests acknowledged, by kind.",
        "# TYPE dreamboard_acks_total counter",
        'dreamboard_acks_total{kind="command"} 1.0',
        "# TYPE dreamboard_ack_seconds histogram",
        'dreamboard_ack_seconds_bucket{kind="command",le="0.01"} 0.0',
        'dreamboard_ack_seconds_bucket{kind="command",le="0.025"} 1.0',
        'dreamboard_ack_seconds_bucket{kind="command",le="2.5"} 2.0',
        'dreamboard_ack_seconds_bucket{kind="command",le="300.0"} 2.0',
        'dreamboard_ack_seconds_bucket{kind="command",le="+Inf"} 2.0',
        'dreamboard_ack_seconds_count{kind="command"} 2.0',
        'dreamboard_ack_seconds_sum{kind="command"} 2.02',
        'dreamboard_generation_seconds_bucket{le="10.0"} 0.0',
        'dreamboard_generation_seconds_bucket{le="30.0"} 1.0',
        "# TYPE dreamboard_jobs gauge",
        'dreamboard_jobs{state="queued"} 2.0',
        'dreamboard_jobs{state="running"} 1.0',
    ):
        assert line in lines


def test_gauges_are_read_at_scrape_time() -> None:
    metrics = Metrics()
    counts = {"queued": 1.0}
    metrics.gauge("dreamboard_jobs", "state", lambda: counts)
    counts["queued"] = 3.0
    assert 'dreamboard_jobs{state="queued"} 3.0' in metrics.render().splitlines()


def test_counters_kept_elsewhere_are_read_at_scrape_time() -> None:
    metrics = Metrics()
    statements = [4]
    metrics.counter("dreamboard_sql_statements_total", lambda: float(statements[0]))
    statements[0] = 9
    lines = metrics.render().splitlines()
    assert "# TYPE dreamboard_sql_statements_total counter" in lines
    assert "dreamboard_sql_statements_total 9.0" in lines


def test_label_values_are_escaped() -> None:
    metrics = Metrics()
    metrics.inc("dreamboard_acks_total", kind='say "hi"\\now\nplease')
    assert 'dreamboard_acks_total{kind="say \\"hi\\"\\\\now\\nplease"} 1.0' in metrics.render().splitlines()


def test_process_metrics_come_with_the_registry() -> None:
    text = Metrics().render()
    assert "# TYPE process_resident_memory_bytes gauge" in text
    assert "# TYPE python_info gauge" in text
