"""Fixtures for the Venus pieces: a service connection owning the scanner name with a tree."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest_asyncio
from dbus_fast import RequestNameReply
from dbus_fast.aio import MessageBus

from ble_scanner.testing.localsettings import LocalSettingsStandIn
from ble_scanner.testing.testbus import TestBus
from ble_scanner.venus.busitem import BusItemTree, Value, add_mandatory_paths
from tests.conftest import connect, disconnect

SERVICE = "com.victronenergy.ble.scanner"


@dataclass
class TreeService:
    """A connection that owns the scanner name and serves a tree of sample items."""

    bus: MessageBus
    tree: BusItemTree
    name: str = SERVICE
    changes_seen_by_onchange: list[tuple[str, Value]] = field(default_factory=list)


def _reject_empty(service: TreeService) -> object:
    def onchange(path: str, value: Value) -> bool:
        service.changes_seen_by_onchange.append((path, value))
        return value != "reject me"

    return onchange


@pytest_asyncio.fixture
async def tree_service(test_bus: TestBus) -> AsyncIterator[TreeService]:
    connection = await connect(test_bus)
    tree = BusItemTree(connection)
    service = TreeService(connection, tree)
    add_mandatory_paths(
        tree,
        processname="dbus_ble_scanner.py",
        processversion="0.1.0",
        connection="BlueZ",
        deviceinstance=20,
        productid=0xA1FF,
        productname="BLE scanner",
        firmwareversion="0.1.0",
        hardwareversion="",
        connected=1,
    )
    tree.add_item("/CustomName", "", writable=True, onchange=_reject_empty(service))  # type: ignore[arg-type]
    tree.add_item("/Stats/ReportsPerSecond", 0.0, text_fn=lambda v: f"{v:.1f}/s")
    tree.add_item("/Stats/Reports", 0)
    tree.add_item("/Devices/Count", 0, writable=True)
    tree.add_item("/Adapters/hci0/Address", "00:11:22:33:44:55")
    tree.add_item("/Adapters/hci0/State", "scanning")
    tree.add_item("/Adapters/hci0/Powered", None, kind=int)
    reply = await tree.register(SERVICE)
    assert reply == RequestNameReply.PRIMARY_OWNER
    try:
        yield service
    finally:
        await tree.close()
        await disconnect(connection)


@pytest_asyncio.fixture
async def standin(localsettings: LocalSettingsStandIn) -> LocalSettingsStandIn:
    """A fresh localsettings stand-in owning com.victronenergy.settings (tests/conftest.py)."""
    return localsettings
