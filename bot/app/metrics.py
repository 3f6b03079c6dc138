"""A small in-process metrics registry rendered in the Prometheus text format."""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Callable

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_Labels = tuple[tuple[str, str], ...]

_HELP = {
    "dreamboard_jobs": (
        "gauge",
        "Jobs in this process by state (queued and running are current; others since start).",
    ),
    "dreamboard_oxen_request_seconds": ("histogram", "Latency of calls to Oxen.ai by route."),
    "dreamboard_oxen_requests_total": ("counter", "Calls to Oxen.ai by route and outcome."),
    "dreamboard_generation_seconds": ("histogram", "Time from job start to images uploaded."),
    "dreamboard_ack_seconds": ("histogram", "Time to acknowledge a Slack request."),
    "dreamboard_acks_total": ("counter", "Slack requests acknowledged, by kind."),
}


class Metrics:
    """Counters, gauges read at scrape time, and fixed-bucket histograms."""

    def __init__(self) -> None:
        self._counters: dict[str, dict[_Labels, float]] = defaultdict(lambda: defaultdict(float))
        self._histograms: dict[str, dict[_Labels, list[float]]] = defaultdict(dict)
        self._gauges: dict[str, Callable[[], dict[str, float]]] = {}

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        """Add `amount` to a counter."""
        self._counters[name][_key(labels)] += amount

    def observe(self, name: str, value: float, **labels: str) -> None:
        """Record one observation in a histogram."""
        series = self._histograms[name].setdefault(_key(labels), [0.0] * (len(_BUCKETS) + 2))
        series[bisect.bisect_left(_BUCKETS, value)] += 1
        series[-1] += value

    def gauge(self, name: str, label: str, read: Callable[[], dict[str, float]]) -> None:
        """Register a gauge whose values (keyed by one label) are read at scrape time."""
        self._gauges[name] = lambda: {f'{label}="{key}"': value for key, value in read().items()}

    def render(self) -> str:
        """The Prometheus text exposition of every metric."""
        lines: list[str] = []
        for name, read in sorted(self._gauges.items()):
            lines += _header(name)
            lines += [f"{name}{{{labels}}} {_num(value)}" for labels, value in sorted(read().items())]
        for name, counter_series in sorted(self._counters.items()):
            lines += _header(name)
            lines += [
                f"{name}{_fmt(labels)} {_num(value)}" for labels, value in sorted(counter_series.items())
            ]
        for name, histogram_series in sorted(self._histograms.items()):
            lines += _header(name)
            for labels, counts in sorted(histogram_series.items()):
                cumulative = 0.0
                for bound, count in zip((*_BUCKETS, float("inf")), counts[:-1], strict=True):
                    cumulative += count
                    le = "+Inf" if bound == float("inf") else repr(bound)
                    lines.append(f"{name}_bucket{_fmt((*labels, ('le', le)))} {_num(cumulative)}")
                lines.append(f"{name}_sum{_fmt(labels)} {counts[-1]!r}")
                lines.append(f"{name}_count{_fmt(labels)} {_num(cumulative)}")
        return "\n".join(lines) + "\n"


def _key(labels: dict[str, str]) -> _Labels:
    return tuple(sorted(labels.items()))


def _fmt(labels: _Labels) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{key}="{value}"' for key, value in labels)
    return "{" + inner + "}"


def _header(name: str) -> list[str]:
    kind, text = _HELP.get(name, ("untyped", name))
    return [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]


def _num(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)
