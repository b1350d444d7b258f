"""Fixtures: one system-like dbus-daemon per test session, connections per test."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from dbus_fast import BusType
from dbus_fast.aio import MessageBus

from ble_scanner.testbus import TestBus, start_test_bus


@pytest.fixture(scope="session")
def test_bus() -> Iterator[TestBus]:
    """A real dbus-daemon with a deny-by-default policy; DBUS_SYSTEM_BUS_ADDRESS points at it."""
    bus = start_test_bus()
    old = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
    os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = bus.address
    try:
        yield bus
    finally:
        if old is None:
            os.environ.pop("DBUS_SYSTEM_BUS_ADDRESS", None)
        else:
            os.environ["DBUS_SYSTEM_BUS_ADDRESS"] = old
        bus.stop()


async def connect(test_bus: TestBus) -> MessageBus:
    return await asyncio.wait_for(
        MessageBus(bus_address=test_bus.address, bus_type=BusType.SYSTEM).connect(), 5
    )


async def disconnect(bus: MessageBus) -> None:
    if bus.connected:
        bus.disconnect()
        try:
            await asyncio.wait_for(bus.wait_for_disconnect(), 5)
        except Exception:
            pass


@pytest_asyncio.fixture
async def bus(test_bus: TestBus) -> AsyncIterator[MessageBus]:
    """A plain client connection to the test bus."""
    connection = await connect(test_bus)
    try:
        yield connection
    finally:
        await disconnect(connection)
