"""The job a log line is about, carried in a ContextVar.

Call `bind_job(job_id)` at the start of a job's task: it stays in that task and the tasks it creates
(asyncio tasks copy the context when they are created). Or wrap a block in `with job_context(job_id):`.
The JSON log formatter (bot/app/logs.py) writes the bound id as `"job"`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_job: ContextVar[str | None] = ContextVar("dreamboard_log_job", default=None)


def bind_job(job_id: str) -> None:
    """Tag every later log line in the current task (and the tasks it creates) with `job_id`."""
    _job.set(job_id)


def current_job() -> str | None:
    """The job id bound in this context, if any."""
    return _job.get()


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Tag the log lines emitted inside the block with `job_id`."""
    token = _job.set(job_id)
    try:
        yield
    finally:
        _job.reset(token)
