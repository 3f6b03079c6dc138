"""`python -m bench [--quick] [--out PATH]`: run every scenario, print a table, write JSON.
`python -m bench --bursts [--speed X]`: only the one-channel bursts on rate-limited Slack (bench/bursts.py),
at Slack's real speed unless `--speed` runs its clock faster; several minutes, so not part of the default.
`python -m bench --completion [--quick]`: only scenario 8 (completion noticed, event stream on and off).
`python -m bench replicas [--quick]`: jobs/s for 1, 2 and 3 replicas on one throwaway PostgreSQL
(bench/replicas.py); needs the PostgreSQL server binaries."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from bench.api_calls import api_calls_per_image
from bench.bursts import run_bursts
from bench.completion import completion
from bench.history import history_page_latency
from bench.replicas import QUICK_REPLICAS, ReplicaParams, replicas
from bench.scenarios import QUICK, Params, ack_burst, baseline, memory, overhead, throughput

TARGETS = {
    "ack_p99_ms": ("<=", 50.0),
    "ack_over_3s": ("<=", 0.0),
    "lost_commands": ("<=", 0.0),
    "overhead_median_pct_2k": ("<=", 5.0),
    "throughput_ratio_to_ideal": ("<=", 1.2),
    "peak_rss_mb_50x4k": ("<=", 200.0),
    "history_page_p99_ms": ("<=", 5.0),
    "sql_statements_per_job": ("<=", 12.0),
    "overhead_median_ms": ("<=", 40.0),
    "api_calls_per_job_single": ("<=", 4.0),
    "speedup_2": (">=", 1.8),
    "noticed_median_ms_polling": ("<=", 250.0),
    **{
        f"polls_per_second_per_image_max_{kind}_{mode}": ("<=", 1.0)
        for kind in ("single", "burst")
        for mode in ("events", "polling")
    },
    **{
        f"{burst}_{key}": ("<=", 0.0)
        for burst in ("burst30", "burst_n4", "burst_threads")
        for key in ("silent_losses", "duplicates", "failed_jobs")
    },
}


async def run(params: Params) -> dict[str, Any]:
    """Every scenario in turn; each gets fresh fakes and a fresh bot process."""
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="dreamboard-bench-") as name:
        folder = Path(name)
        results.update(await ack_burst(params, folder))
        results.update(await overhead(params, folder))
        results.update(await throughput(params, folder))
        results.update(await memory(params, folder))
        results.update(await api_calls_per_image(params, folder))
        results.update(await history_page_latency(params.history_rows, params.history_samples))
        results.update(await baseline(params, folder))
        results.update(await completion(params, folder))
        results["baseline_ratio_p99"] = results["baseline_ack_p99_ms"] / results["ack_p99_ms"]
    return results


async def completion_only(params: Params) -> dict[str, Any]:
    """Scenario 8 alone."""
    with tempfile.TemporaryDirectory(prefix="dreamboard-bench-") as name:
        return await completion(params, Path(name))


async def replicas_only(params: ReplicaParams) -> dict[str, Any]:
    """The replica throughput scenario alone."""
    with tempfile.TemporaryDirectory(prefix="dreamboard-bench-") as name:
        return await replicas(params, Path(name))


async def bursts(speed: float) -> dict[str, Any]:
    """The bursts scenario alone."""
    with tempfile.TemporaryDirectory(prefix="dreamboard-bench-") as name:
        return await run_bursts(Path(name), speed)


def table(results: dict[str, Any]) -> str:
    """A readable summary with each target and whether it was met."""
    lines = [f"{'metric':32} {'value':>12}  target"]
    for key, value in results.items():
        if not isinstance(value, float):
            continue
        target = TARGETS.get(key)
        verdict = ""
        if target is not None:
            met = value >= target[1] if target[0] == ">=" else value <= target[1]
            verdict = f"{target[0]} {target[1]:g}  {'ok' if met else 'MISSED'}"
        lines.append(f"{key:32} {value:12.2f}  {verdict}")
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, run, report."""
    parser = argparse.ArgumentParser(description="Dreamboard benchmarks against the loopback fakes")
    parser.add_argument(
        "scenario",
        nargs="?",
        choices=["replicas"],
        help="replicas: only jobs/s for several replicas on one PostgreSQL database",
    )
    parser.add_argument("--quick", action="store_true", help="tiny numbers: a smoke run of every scenario")
    parser.add_argument(
        "--bursts", action="store_true", help="only the one-channel bursts on rate-limited Slack"
    )
    parser.add_argument(
        "--completion", action="store_true", help="only completion noticed with the event stream on/off"
    )
    parser.add_argument(
        "--speed", type=float, default=1.0, help="with --bursts: run Slack's clock this much faster"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    scenario: Coroutine[Any, Any, dict[str, Any]]
    if args.scenario == "replicas":
        replica_params = QUICK_REPLICAS if args.quick else ReplicaParams()
        scenario, default_out = replicas_only(replica_params), "results-replicas.json"
        recorded = dataclasses.asdict(replica_params)
    else:
        params = QUICK if args.quick else Params()
        recorded = dataclasses.asdict(params)
        if args.bursts:
            scenario, default_out = bursts(args.speed), "results-bursts.json"
        elif args.completion:
            scenario, default_out = completion_only(params), "results-completion.json"
        else:
            scenario, default_out = run(params), "results.json"
    args.out = args.out or Path(__file__).parent / default_out
    started = time.time()
    load_before = os.getloadavg()
    results = asyncio.run(scenario)
    report = {
        **{key: round(value, 3) if isinstance(value, float) else value for key, value in results.items()},
        "params": recorded,
        "quick": args.quick,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            # Other work on the machine competes for the same cores: 1-minute load before and after.
            "load_1min": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        },
        "duration_s": round(time.time() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(results))
    print(f"\nwritten to {args.out} in {report['duration_s']} s")


if __name__ == "__main__":
    main()
