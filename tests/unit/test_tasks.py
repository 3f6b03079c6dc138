"""Tasks: background work is kept, its failures are logged by name, and drain waits, then cancels."""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging

import pytest

from bot.app.tasks import Tasks


async def test_a_failing_task_is_logged_with_its_name_and_never_left_unretrieved(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks = Tasks("background task")

    async def fail() -> None:
        raise OSError("disk went away")

    task = tasks.spawn(fail(), name="prune-cache")
    await asyncio.wait([task])
    del task
    gc.collect()  # an unretrieved exception would be reported now
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.getMessage() == "background task prune-cache failed: OSError"
    assert record.exc_info is not None
    assert len(tasks) == 0


async def test_drain_waits_for_running_tasks_then_cancels_the_late_ones_and_refuses_new_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks = Tasks("listener")
    finish = asyncio.Event()
    finished: list[str] = []

    async def quick() -> None:
        await finish.wait()
        finished.append("quick")

    async def stuck() -> None:
        await asyncio.Event().wait()

    tasks.spawn(quick(), name="quick")
    late = tasks.spawn(stuck(), name="stuck")
    draining = asyncio.create_task(tasks.drain(0.2))
    finish.set()
    await draining
    assert finished == ["quick"]
    assert late.cancelled()
    assert any(
        "1 listener still running after 0.2s, cancelling: stuck" in r.getMessage() for r in caplog.records
    )
    coro = stuck()
    with pytest.raises(RuntimeError, match="shutting down"):
        tasks.spawn(coro, name="too-late")
    assert inspect.getcoroutinestate(coro) == inspect.CORO_CLOSED  # no "never awaited" warning


async def test_a_task_adopted_while_draining_is_awaited_too() -> None:
    tasks = Tasks("listener")
    release = asyncio.Event()
    order: list[str] = []

    async def first() -> None:
        await release.wait()
        order.append("first")
        tasks.adopt(asyncio.create_task(second()))

    async def second() -> None:
        await asyncio.sleep(0)
        order.append("second")

    tasks.spawn(first(), name="first")
    draining = asyncio.create_task(tasks.drain(5))
    release.set()  # runs after drain has started waiting (tasks run in the order they were woken)
    await draining
    assert order == ["first", "second"]
