"""bluez/ingest.py: changes of our Device1 match run one at a time, in order, and
closing ends them all (a cancelled switch used to go on to its own step)."""

from __future__ import annotations

import asyncio

import pytest
from dbus_fast.aio import MessageBus

from ble_scanner.bluez.ingest import IngestSwitch
from ble_scanner.modes import Ingest
from tests.helpers import wait_until


def switch_on(bus: MessageBus) -> IngestSwitch:
    async def resync() -> None:
        pass

    return IngestSwitch(bus, 1.0, Ingest.DBUS, "/nonexistent", lambda event: None, resync)


async def test_close_ends_a_running_switch_and_the_one_waiting_behind_it(bus: MessageBus) -> None:
    switch = switch_on(bus)
    steps: list[str] = []
    hold = asyncio.Event()

    async def first() -> None:
        steps.append("first")
        await hold.wait()
        steps.append("first done")

    async def second() -> None:
        steps.append("second")

    switch._run(first)
    switch._run(second)
    await wait_until(lambda: steps == ["first"], what="the first switch running")
    switch.close()
    await wait_until(lambda: not switch._switches, what="both switches ended")
    hold.set()
    assert steps == ["first"]


async def test_a_failing_switch_does_not_stop_the_next(
    bus: MessageBus, caplog: pytest.LogCaptureFixture
) -> None:
    switch = switch_on(bus)
    steps: list[str] = []

    async def fails() -> None:
        steps.append("fails")
        raise RuntimeError("no match")

    async def next_one() -> None:
        steps.append("next")

    switch._run(fails)
    switch._run(next_one)
    await wait_until(lambda: steps == ["fails", "next"], what="both switches, in order")
    await wait_until(lambda: not switch._switches, what="both switches ended")
    assert "ingest switch failed" in caplog.text
    switch.close()
