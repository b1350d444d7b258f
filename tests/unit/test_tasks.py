"""tasks.py: a periodic step survives failures and stops when asked; spawned tasks are
kept until done and their failures logged."""

from __future__ import annotations

import asyncio
import logging

import pytest

from ble_scanner.tasks import Background, Periodic, TaskSet
from tests.helpers import wait_until

LOGGER = logging.getLogger("tests.tasks")


async def test_a_periodic_step_runs_again_after_it_failed_and_stops_when_asked(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[int] = []

    def step() -> None:
        runs.append(len(runs))
        if len(runs) == 1:
            raise RuntimeError("first step fails")

    periodic = Periodic("counting", 0.001, step, LOGGER, immediately=True)
    periodic.start()
    await wait_until(lambda: len(runs) >= 3, what="three steps")
    await periodic.stop()
    assert not periodic.running
    assert [r.getMessage() for r in caplog.records] == ["counting failed"]


async def test_a_periodic_step_may_be_a_coroutine_and_its_interval_a_function() -> None:
    intervals: list[float] = []
    steps: list[str] = []

    def interval() -> float:
        intervals.append(0.001)
        return 0.001

    async def step() -> None:
        steps.append("step")

    periodic = Periodic("async", interval, step, LOGGER)
    periodic.start()
    await wait_until(lambda: len(steps) >= 2, what="two steps")
    await periodic.stop()
    assert len(intervals) >= len(steps)  # asked before each wait, the first one too


async def test_background_stop_waits_for_the_work_and_start_twice_runs_it_once() -> None:
    started: list[str] = []
    never = asyncio.Event()

    async def work() -> None:
        started.append("work")
        await never.wait()

    background = Background("waiting", work)
    background.start()
    background.start()
    await wait_until(lambda: bool(started), what="the work started")
    assert background.running
    await background.stop()
    assert started == ["work"] and not background.running


async def test_a_task_set_keeps_tasks_until_done_and_logs_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks = TaskSet(LOGGER, "a spawned step")
    release = asyncio.Event()

    async def fails() -> None:
        await release.wait()
        raise ValueError("boom")

    tasks.spawn(fails())
    assert len(tasks) == 1
    release.set()
    await wait_until(lambda: len(tasks) == 0, what="the task done")
    assert [r.getMessage() for r in caplog.records] == ["a spawned step failed"]


async def test_a_cancelled_task_is_not_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    tasks = TaskSet(LOGGER)
    tasks.spawn(asyncio.Event().wait())
    tasks.cancel()
    await wait_until(lambda: len(tasks) == 0, what="the task cancelled")
    assert not caplog.records
