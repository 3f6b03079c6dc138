"""History query latency: one page of a user's history with 100 000 stored generations."""

from __future__ import annotations

import random
import sqlite3
import tempfile
import time
from pathlib import Path

from bot.store.store import Store


def _fill(path: Path, rows: int) -> None:
    """Write `rows` jobs for user U1 (and as many for other users) straight into the schema."""
    with sqlite3.connect(path) as db:
        columns = (
            "id, team_id, channel_id, thread_ts, user_id, prompt, model, size, seed, seed_given, n, state,"
            " created_at"
        )
        values = [
            (
                *(
                    f"{user}-{index:07d}",
                    "T1",
                    f"C{index % 7}",
                    f"{index}.0",
                    user,
                    f"prompt {index} of {user}",
                ),
                *("bytedance-seedream-4-5", "2K", index, 0, 1, "uploaded", 1_700_000_000 + index),
            )
            for user in ("U1", "U2")
            for index in range(rows)
        ]
        db.executemany(f"INSERT INTO generations ({columns}) VALUES ({', '.join('?' * 13)})", values)  # noqa: S608


async def history_page_latency(rows: int, samples: int) -> dict[str, float]:
    """Milliseconds per history page (10 rows + 1 to detect the next page): p50, p99 and max."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "history.sqlite3"
        store = await Store.open(path)
        _fill(path, rows)
        timings = []
        try:
            for _ in range(samples):
                offset = random.choice((0, 0, 0, 10, 20, 40))
                started = time.perf_counter()
                page = await store.history("T1", "U1", limit=11, offset=offset)
                timings.append((time.perf_counter() - started) * 1000)
                assert len(page) == 11
        finally:
            await store.close()
    timings.sort()
    return {
        "history_page_p50_ms": timings[len(timings) // 2],
        "history_page_p99_ms": timings[int(len(timings) * 0.99) - 1],
        "history_page_max_ms": timings[-1],
    }
