"""`python -m bench.sql_trace`: which SQL statements one 1-image job runs (the breakdown in
docs/performance.md), counted the way the bench counts `sql_statements_per_job`.

It starts the bot as `python -m bench.sql_trace` with DREAMBOARD_SQL_TRACE set: then this module *is* the
bot, except that the store's statement counter also writes every statement to that file, numbered as
`dreamboard_sql_statements_total` counts it. The job's statements are those numbered between the counter's
values before and after the job (read from /metrics); the App Home publish that follows is listed apart.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
from collections import Counter
from pathlib import Path

from bench.process import start_bot
from bench.scenarios import (
    one_at_a_time,
    sql_statements,
    sql_statements_of_one_job,
    user_id,
    wait_for_event_stream,
)
from bot.store.sqlite import SqliteDatabase
from tests.fakes.oxen import FakeOxen
from tests.fakes.ratelimits import unlimited
from tests.fakes.slack import FakeSlack

TRACE_VARIABLE = "DREAMBOARD_SQL_TRACE"
_LITERAL = re.compile(r"'(?:[^']|'')*'|\b\d+(?:\.\d+)?\b")


def traced_bot(path: Path) -> None:
    """Run the real bot, writing each statement (numbered as the counter counts it) to `path`."""
    sink = path.open("a", buffering=1)
    counted = SqliteDatabase._count

    def count(database: SqliteDatabase, sql: str) -> None:
        counted(database, sql)
        sink.write(f"{database.statements}\t{' '.join(sql.split())}\n")

    setattr(SqliteDatabase, "_count", count)  # noqa: B010 (mypy refuses assigning to a method)
    from bot.__main__ import main

    main()


def kind(sql: str) -> str:
    """A statement with its literal values replaced by `?`, so statements group by shape."""
    return _LITERAL.sub("?", sql)


async def trace() -> None:
    """One quiet warm-up job, then the counted job; print its statements."""
    with tempfile.TemporaryDirectory(prefix="dreamboard-sql-") as name:
        folder = Path(name)
        path = folder / "statements.tsv"
        async with (
            FakeSlack(keep_uploads=False, rate_limits=unlimited()) as slack,
            FakeOxen(latency=0.3) as oxen,
        ):
            bot = await start_bot(
                slack, oxen, folder / "db.sqlite3", module="bench.sql_trace", dreamboard_sql_trace=str(path)
            )
            try:
                await wait_for_event_stream(oxen)
                await one_at_a_time(slack, oxen, bot, jobs=1, label="trace")
                before = await sql_statements(bot)
                after = before + await sql_statements_of_one_job(slack, oxen, bot, user=user_id("trace", 0))
            finally:
                await bot.stop()
        lines = [line.split("\t", 1) for line in path.read_text().splitlines()]
    statements = {int(number): sql for number, sql in lines}
    for title, first, last in (("the job (counted)", before + 1, after),):
        kinds = Counter(kind(statements[number]) for number in range(first, last + 1))
        print(f"{title}: {last - first + 1} statements")
        for sql, times in kinds.items():
            print(f"  {times} × {sql[:160]}")


if __name__ == "__main__":
    trace_path = os.environ.get(TRACE_VARIABLE)
    if trace_path:
        traced_bot(Path(trace_path))
    else:
        asyncio.run(trace())
