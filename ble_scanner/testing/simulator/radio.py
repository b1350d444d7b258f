"""The radio: registered advertisers re-advertise while someone is listening.

bleak's ``discover()`` only sees devices that report *during* its scan, and
BlueZ drops reports when nobody scans, so advertisers are replayed on a timer
and only while their adapter is discovering or has an active monitor (or, with
a management socket, while the kernel still runs a crashed bluetoothd's scan).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from ...tasks import cancel_and_wait
from .report import Report

if TYPE_CHECKING:
    from .simulator import BluezSimulator

ReportFactory = Callable[[], Report]
# Ticks of the radio loop: fine enough for sub-second advertising periods.
RADIO_TICK = 0.05


class _Advertiser:
    __slots__ = ("adapter", "factory", "next_due", "period")

    def __init__(self, adapter: str, factory: ReportFactory, period: float, now: float) -> None:
        self.adapter = adapter
        self.factory = factory
        self.period = period
        # Real advertisers are not in phase: spread the first report over one period.
        self.next_due = now + random.uniform(0, period)


class Radio:
    """Replays advertisers; started on the first ``add``, stopped by ``stop``."""

    def __init__(self, sim: BluezSimulator) -> None:
        self.sim = sim
        self.advertisers: dict[tuple[str, str], _Advertiser] = {}
        # Advertisers holding a connection: a connected peripheral stops advertising.
        self.muted: set[tuple[str, str]] = set()
        self._task: asyncio.Task[None] | None = None

    def add(self, adapter: str, address: str, factory: ReportFactory, period: float) -> None:
        self.add_shared(address, {adapter: factory}, period)

    def add_shared(self, address: str, factories: dict[str, ReportFactory], period: float) -> None:
        """One advertiser heard by each adapter in ``factories`` in the same events (the
        same tick, in the dict's order), each adapter's report from its own factory."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        first = None
        for adapter, factory in factories.items():
            advertiser = _Advertiser(adapter, factory, period, now)
            if first is None:
                first = advertiser.next_due
            advertiser.next_due = first  # in phase: one advertising event, several radios
            self.advertisers[(adapter, address)] = advertiser
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())

    def remove(self, adapter: str, address: str) -> None:
        self.advertisers.pop((adapter, address), None)

    def set_muted(self, adapter: str, address: str, muted: bool) -> None:
        if muted:
            self.muted.add((adapter, address))
        else:
            self.muted.discard((adapter, address))

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            for key, adv in list(self.advertisers.items()):
                if adv.next_due > now or key in self.muted:
                    continue
                adv.next_due = now + adv.period
                if self.sim.kernel_listening(adv.adapter):
                    self.sim.advertise_report(adv.adapter, adv.factory())
            if self.sim._server is not None and self.sim.server.backlog() > 0:
                await self.sim.server.drain()
            await asyncio.sleep(RADIO_TICK)
