"""`python -m bench --quick` runs every scenario end to end and writes the documented keys;
`python -m bench replicas --quick` measures one and two replicas on a throwaway PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.postgres import PostgresUnavailable, find_binaries, server_account, unavailable

REQUIRED = (
    "ack_p50_ms",
    "ack_p99_ms",
    "ack_over_3s",
    "lost_commands",
    "overhead_median_pct_2k",
    "overhead_p95_pct_2k",
    "overhead_median_pct_4k",
    "throughput_ratio_to_ideal",
    "peak_rss_mb_50x4k",
    "history_page_p99_ms",
    "baseline_ack_p99_ms",
    "sql_statements_per_job",
    "overhead_median_ms",
    "overhead_card_median_ms",
    "baseline_overhead_median_ms",
    "api_calls_per_image_single",
    "api_calls_per_image_n4",
    "noticed_median_ms_polling",
    "burst_wall_to_ideal_polling",
    "polls_per_second_per_image_max_burst_polling",
    "params",
)


async def run_bench(out: Path, *arguments: str, within: float) -> tuple[dict[str, Any], str]:
    """Run `python -m bench *arguments --out out`, which must succeed within `within` seconds: its
    results and its output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench", *arguments, "--out", str(out), cwd=Path(__file__).parents[2],
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), within)
    assert process.returncode == 0, output.decode()[-2000:]
    results: dict[str, Any] = json.loads(await asyncio.to_thread(out.read_text))
    return results, output.decode()


@pytest.mark.timeout(240)  # several real bot processes one after another; minutes on a loaded 2-core CI
async def test_quick_benchmark_smoke_run(tmp_path: Path) -> None:
    results, output = await run_bench(tmp_path / "results.json", "--quick", within=200)
    assert all(key in results for key in REQUIRED)
    assert results["quick"] is True
    assert results["lost_commands"] == 0
    assert results["duplicate_jobs"] == 0
    assert results["ack_errors"] == 0
    assert results["peak_rss_mb_50x4k"] > 0
    assert results["sql_statements_per_job"] > 0
    assert "ack_p99_ms" in output


@pytest.mark.postgres
@pytest.mark.timeout(120)  # a PostgreSQL cluster and three bot processes; about 5 s on a quiet machine
async def test_quick_replica_benchmark_smoke_run(tmp_path: Path) -> None:
    if find_binaries() is None:
        unavailable("PostgreSQL server not found (initdb, pg_ctl, postgres)")
    try:
        server_account()
    except PostgresUnavailable as error:
        unavailable(str(error))
    results, output = await run_bench(tmp_path / "results-replicas.json", "replicas", "--quick", within=100)
    assert results["params"]["counts"] == [1, 2]
    jobs = results["params"]["jobs"]
    for count in (1, 2):
        assert results[f"jobs_per_s_{count}"] > 0
        assert results[f"wall_to_ideal_{count}"] >= 1, "no job finishes before Oxen's latency has passed"
        assert results[f"late_acks_{count}"] == 0
        assert sum(results[f"jobs_per_replica_{count}"]) == jobs
    assert results["speedup_2"] == pytest.approx(results["jobs_per_s_2"] / results["jobs_per_s_1"], rel=0.01)
    assert "speedup_2" in output
