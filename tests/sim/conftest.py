"""Fixtures for the simulator's own tests: a fresh simulator per test, extra clients."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest_asyncio
from dbus_fast import Message, Variant
from dbus_fast.aio import MessageBus

from ble_scanner.bus.calls import signal_rule
from ble_scanner.const import BLUEZ_ADAPTER, BLUEZ_SERVICE, PROPERTIES
from ble_scanner.testing.simulator import BluezSimulator
from ble_scanner.testing.testbus import TestBus
from tests.conftest import connect, disconnect, simulator_on
from tests.helpers import call

ADAPTER = "hci0"
ADAPTER_PATH = "/org/bluez/hci0"


@pytest_asyncio.fixture
async def sim(test_bus: TestBus) -> AsyncIterator[BluezSimulator]:
    """A running simulator with one powered adapter, hci0; stopped (name released) after."""
    async with simulator_on(test_bus) as simulator:
        yield simulator


@pytest_asyncio.fixture
async def new_client(test_bus: TestBus) -> AsyncIterator[Callable[[], Awaitable[MessageBus]]]:
    """Factory for extra client connections (each is its own BlueZ discovery client)."""
    opened: list[MessageBus] = []

    async def make() -> MessageBus:
        bus = await connect(test_bus)
        opened.append(bus)
        return bus

    try:
        yield make
    finally:
        for bus in opened:
            await disconnect(bus)


async def adapter_call(
    bus: MessageBus,
    member: str,
    signature: str = "",
    body: list[Any] | None = None,
    path: str = ADAPTER_PATH,
) -> Message:
    return await call(bus, BLUEZ_SERVICE, path, BLUEZ_ADAPTER, member, signature, body)


async def set_filter(bus: MessageBus, path: str = ADAPTER_PATH, **entries: Variant) -> Message:
    return await adapter_call(bus, "SetDiscoveryFilter", "a{sv}", [entries], path)


async def get_property(bus: MessageBus, path: str, interface: str, name: str) -> Message:
    return await call(bus, BLUEZ_SERVICE, path, PROPERTIES, "Get", "ss", [interface, name])


async def get_all(bus: MessageBus, path: str, interface: str) -> dict[str, Any]:
    reply = await call(bus, BLUEZ_SERVICE, path, PROPERTIES, "GetAll", "s", [interface])
    return {k: v.value for k, v in reply.body[0].items()}


PC_RULE = signal_rule(interface="org.freedesktop.DBus.Properties", path_namespace="/org/bluez")
OM_RULE = signal_rule(interface="org.freedesktop.DBus.ObjectManager", path="/")


def discovering_values(messages: list[Message], path: str = ADAPTER_PATH) -> list[bool]:
    """The Discovering values carried by PropertiesChanged signals of ``path``, in order."""
    out = []
    for m in messages:
        if m.member == "PropertiesChanged" and m.path == path and "Discovering" in m.body[1]:
            out.append(m.body[1]["Discovering"].value)
    return out


def device_changes(messages: list[Message], path: str) -> list[Message]:
    return [m for m in messages if m.member == "PropertiesChanged" and m.path == path]


def added(messages: list[Message], path: str) -> list[Message]:
    return [m for m in messages if m.member == "InterfacesAdded" and m.body[0] == path]


def removed(messages: list[Message], path: str) -> list[Message]:
    return [m for m in messages if m.member == "InterfacesRemoved" and m.body[0] == path]
