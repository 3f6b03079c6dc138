"""The process's metrics, kept by prometheus-client in a registry of their own (one per `Metrics`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

_HISTOGRAMS = {
    "dreamboard_oxen_request_seconds": ("Latency of calls to Oxen.ai by route.", ("route",)),
    "dreamboard_generation_seconds": ("Time from job start to images uploaded.", ()),
    "dreamboard_ack_seconds": ("Time to acknowledge a Slack request.", ("kind",)),
}
_COUNTERS = {
    "dreamboard_oxen_requests_total": ("Calls to Oxen.ai by route and outcome.", ("route", "outcome")),
    "dreamboard_acks_total": ("Slack requests acknowledged, by kind.", ("kind",)),
}
_GAUGES = {
    "dreamboard_jobs": "Jobs in this process by state (queued and running are current; others since start).",
}
_READ_COUNTERS = {
    "dreamboard_sql_statements_total": "SQL statements the store ran since start (BEGIN and COMMIT too).",
    "dreamboard_slack_ratelimited_total": "Slack Web API calls answered 429 (sent again after Retry-After).",
    "dreamboard_slack_paced_seconds_total": "Seconds Slack calls waited for their turn or for Retry-After.",
    "dreamboard_queue_position_edits_total": "Status messages edited to show a new place in line.",
    "dreamboard_store_write_faults_total": "Writes the database refused as locked, full or failing.",
}


class Metrics:
    """Counters, histograms and gauges read at scrape time, plus the process and platform collectors."""

    def __init__(self) -> None:
        self._registry = CollectorRegistry()
        ProcessCollector(registry=self._registry)
        PlatformCollector(registry=self._registry)
        self._counters = {
            name: Counter(name, text, labels, registry=self._registry)
            for name, (text, labels) in _COUNTERS.items()
        }
        self._histograms = {
            name: Histogram(name, text, labels, registry=self._registry, buckets=_BUCKETS)
            for name, (text, labels) in _HISTOGRAMS.items()
        }

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        """Add `amount` to a declared counter."""
        counter = self._counters[name]
        (counter.labels(**labels) if labels else counter).inc(amount)

    def observe(self, name: str, value: float, **labels: str) -> None:
        """Record one observation in a declared histogram."""
        histogram = self._histograms[name]
        (histogram.labels(**labels) if labels else histogram).observe(value)

    def gauge(self, name: str, label: str, read: Callable[[], dict[str, float]]) -> None:
        """Register a declared gauge whose values, keyed by one label, come from `read()` at scrape time."""
        self._registry.register(_ReadAtScrape(name, _GAUGES[name], label, read))

    def counter(self, name: str, read: Callable[[], float]) -> None:
        """Register a declared counter kept elsewhere (e.g. by the store); `read()` gives its total at scrape
        time, so the hot path pays nothing for it."""
        self._registry.register(_CountedElsewhere(name, _READ_COUNTERS[name], read))

    def render(self) -> str:
        """The Prometheus text exposition of every metric (serve it as `CONTENT_TYPE_LATEST`)."""
        return generate_latest(self._registry).decode()


class _ReadAtScrape:
    """A collector yielding one gauge family from a callback."""

    def __init__(self, name: str, text: str, label: str, read: Callable[[], dict[str, float]]) -> None:
        self._name, self._text, self._label, self._read = name, text, label, read

    def describe(self) -> Iterable[GaugeMetricFamily]:
        return [GaugeMetricFamily(self._name, self._text, labels=[self._label])]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(self._name, self._text, labels=[self._label])
        for value, amount in sorted(self._read().items()):
            family.add_metric([value], amount)
        return [family]


class _CountedElsewhere:
    """A collector yielding one unlabelled counter from a callback."""

    def __init__(self, name: str, text: str, read: Callable[[], float]) -> None:
        self._name, self._text, self._read = name, text, read

    def describe(self) -> Iterable[CounterMetricFamily]:
        return [CounterMetricFamily(self._name, self._text)]

    def collect(self) -> Iterable[CounterMetricFamily]:
        return [CounterMetricFamily(self._name, self._text, value=self._read())]
