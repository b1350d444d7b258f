"""Background work on the loop: a step run every so often, and fire-and-forget tasks kept alive.

One way for every part of the package (the hub's timer, the watchdog, the Venus
tree, the state file, the client), so that each starts, stops and logs a
failure the same way. Standard library only: the client uses it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

Step = Callable[[], Awaitable[object] | object]


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (None: nothing to do) and wait until it has ended."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Background:
    """One task running ``work`` from ``start`` until ``stop``: the life of every loop we keep."""

    def __init__(self, name: str, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.name = name
        self.work = work
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(self.work(), name=self.name)

    def cancel(self) -> None:
        """Stop without waiting (from code that cannot await)."""
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        """Stop, and wait until the work in progress (if any) has ended."""
        task, self._task = self._task, None
        await cancel_and_wait(task)


class Periodic(Background):
    """``step`` every ``interval`` seconds until stopped; a failing step is logged, not fatal.

    ``name`` says what the step does, for the task and the log ("<name> failed").

    ``interval`` may be a function, asked before each wait (settings change it
    live); ``immediately`` runs the first step at once instead of after a wait.
    """

    def __init__(
        self,
        name: str,
        interval: float | Callable[[], float],
        step: Step,
        logger: logging.Logger,
        immediately: bool = False,
    ) -> None:
        super().__init__(name, self._run)
        self.interval = interval
        self.step = step
        self.logger = logger
        self.immediately = immediately

    def _wait(self) -> float:
        interval = self.interval
        return interval() if callable(interval) else interval

    async def _run(self) -> None:
        if not self.immediately:
            await asyncio.sleep(self._wait())
        while True:
            try:
                result = self.step()
                if isinstance(result, Awaitable):
                    await result
            except Exception:
                self.logger.exception("%s failed", self.name)
            await asyncio.sleep(self._wait())


class TaskSet:
    """Tasks nobody awaits, held until done (the loop keeps only weak references to tasks).

    A task that fails is logged; one cancelled is not.
    """

    def __init__(self, logger: logging.Logger, what: str = "background task") -> None:
        self.logger = logger
        self.what = what
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, work: Awaitable[T], name: str | None = None) -> asyncio.Task[T]:
        async def run() -> T:
            return await work

        coroutine = work if asyncio.iscoroutine(work) else run()
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.logger.error("%s failed", self.what, exc_info=task.exception())

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()
