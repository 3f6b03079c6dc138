"""`python -m bench --quick` runs every scenario end to end and writes the documented keys;
`python -m bench replicas --quick` measures one and two replicas on a throwaway PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

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


@pytest.mark.timeout(240)  # several real bot processes one after another; minutes on a loaded 2-core CI
async def test_quick_benchmark_smoke_run(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench",
        "--quick",
        "--out",
        str(out),
        cwd=Path(__file__).parents[2],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 200)
    assert process.returncode == 0, output.decode()[-2000:]
    results = json.loads(out.read_text())
    assert all(key in results for key in REQUIRED)
    assert results["quick"] is True
    assert results["lost_commands"] == 0
    assert results["duplicate_jobs"] == 0
    assert results["ack_errors"] == 0
    assert results["peak_rss_mb_50x4k"] > 0
    assert results["sql_statements_per_job"] > 0
    assert "ack_p99_ms" in output.decode()


@pytest.mark.postgres
@pytest.mark.timeout(120)  # a PostgreSQL cluster and three bot processes; about 5 s on a quiet machine
async def test_quick_replica_benchmark_smoke_run(tmp_path: Path) -> None:
    if find_binaries() is None:
        unavailable("PostgreSQL server not found (initdb, pg_ctl, postgres)")
    try:
        server_account()
    except PostgresUnavailable as error:
        unavailable(str(error))
    out = tmp_path / "results-replicas.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench",
        "replicas",
        "--quick",
        "--out",
        str(out),
        cwd=Path(__file__).parents[2],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 100)
    assert process.returncode == 0, output.decode()[-2000:]
    results = json.loads(out.read_text())
    assert results["params"]["counts"] == [1, 2]
    jobs = results["params"]["jobs"]
    for count in (1, 2):
        assert results[f"jobs_per_s_{count}"] > 0
        assert results[f"wall_to_ideal_{count}"] >= 1, "no job finishes before Oxen's latency has passed"
        assert results[f"late_acks_{count}"] == 0
        assert sum(results[f"jobs_per_replica_{count}"]) == jobs
    assert results["speedup_2"] == pytest.approx(results["jobs_per_s_2"] / results["jobs_per_s_1"], rel=0.01)
    assert "speedup_2" in output.decode()
