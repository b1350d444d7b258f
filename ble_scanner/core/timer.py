"""The hub's one timer: what the core does when time passes rather than when a report comes.

It sweeps devices not heard for their presence time (``Hub.sweep``), sends what
the hub holds back (the broadcast's held devices and, while the load budget
coalesces, the window's reports: ``Hub.flush``), ends leases at their expiry
(the BlueZ side converges then) and, with a load budget, samples the load
once a second (loadguard.py). One task sleeps until the earliest of these;
the hub wakes it through ``alarm`` when a hold makes an earlier deadline, and
``leases_changed`` when a lease starts or ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from typing import Final

from ..const import LOST_SWEEP_INTERVAL
from ..tasks import Background
from .hub import Hub
from .leases import LeaseRegistry
from .loadcap import COALESCE_WINDOW, ShedStep
from .loadguard import LoadGuard

_LOGGER = logging.getLogger(__name__)

# Never spin: a deadline that comes due early waits this at least.
_MIN_WAIT: Final = 0.01


class HubTimer:
    """Sweeps, flushes, lease expiry and load samples, on one task.

    ``on_leases``: told after leases expired or changed (``Bluez.leases_changed``:
    each adapter converges on what the leases now ask). ``guard`` None: no load
    budget (the step stays NONE).
    """

    def __init__(
        self,
        hub: Hub,
        alarm: asyncio.Event,
        leases: LeaseRegistry,
        on_leases: Callable[[], None],
        guard: LoadGuard | None = None,
        sweep_interval: float = LOST_SWEEP_INTERVAL,
    ) -> None:
        self.hub = hub
        self.alarm = alarm
        self.leases = leases
        self.on_leases = on_leases
        self.guard = guard
        self.sweep_interval = sweep_interval
        self._loop = Background("hub timer", self._run)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        """Stop, and send what the hub still holds."""
        await self._loop.stop()
        self.hub.flush()

    def leases_changed(self) -> None:
        """A lease was taken, released or dropped: converge, and wake for the next expiry."""
        self._expire_leases()
        self.alarm.set()

    def _expire_leases(self) -> None:
        self.leases.expire()
        self.on_leases()

    async def _run(self) -> None:
        hub, alarm, guard, leases = self.hub, self.alarm, self.guard, self.leases
        now = time.monotonic()
        next_sample = now if guard is not None else math.inf
        next_sweep = now + self.sweep_interval
        while True:
            alarm.clear()
            now = time.monotonic()
            if guard is not None and now >= next_sample:
                next_sample = now + guard.sample_interval
                try:
                    guard.tick()
                except Exception:
                    _LOGGER.exception("load budget check failed")
            try:
                hub.flush()
            except Exception:
                _LOGGER.exception("flushing held emissions failed")
            if now >= next_sweep:
                next_sweep = now + self.sweep_interval
                try:
                    hub.sweep()
                except Exception:
                    _LOGGER.exception("lost-device sweep failed")
            expiry = leases.next_expiry()
            if expiry is not None and leases.monotonic() >= expiry:
                try:
                    self._expire_leases()
                except Exception:
                    _LOGGER.exception("lease expiry failed")
                expiry = leases.next_expiry()
            now = time.monotonic()
            wait = min(next_sample, next_sweep) - now
            if hub.shedding >= ShedStep.COALESCE:
                wait = min(wait, COALESCE_WINDOW)
            due = hub.next_due()
            if due is not None:
                wait = min(wait, due - hub.monotonic())
            if expiry is not None:
                wait = min(wait, expiry - leases.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(alarm.wait(), max(_MIN_WAIT, wait))
