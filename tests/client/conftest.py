"""Client-side fixtures: a client of the in-process service, scene helpers, a service process."""

from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

from ble_scanner.client import ScannerClient
from ble_scanner.client.records import Advertisement, DeviceLost, Event
from ble_scanner.config import ScannerConfig
from ble_scanner.main import ScannerApp
from ble_scanner.testing.simulator import BluezSimulator
from ble_scanner.testing.testbus import TestBus
from tests import ingest
from tests.helpers import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

VICTRON = "C0:11:22:33:44:01"
RUUVI = "C0:11:22:33:44:02"
BTHOME = "C0:11:22:33:44:03"
BTHOME_UUID = "0000fcd2-0000-1000-8000-00805f9b34fb"


async def advertise_scene(bluez: BluezSimulator) -> None:
    """Three devices of three kinds, heard once each on hci0."""
    await bluez.advertise(
        "hci0", VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x10\x02\xa3"}, name="SmartShunt"
    )
    await bluez.advertise(
        "hci0",
        RUUVI,
        address_type="random",
        rssi=-75,
        manufacturer_data={0x0499: b"\x05\x12\xfc"},
        name="Ruuvi 44CC",
    )
    await bluez.advertise("hci0", BTHOME, rssi=-82, service_data={BTHOME_UUID: b"\x40\x02\xc4"})


class Collector:
    """A callback that keeps every event, with waits on them."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()

    def adverts(self, address: str | None = None) -> list[Advertisement]:
        return [
            e
            for e in self.events
            if isinstance(e, Advertisement) and (address is None or e.address == address)
        ]

    def lost(self) -> list[str]:
        return [e.address for e in self.events if isinstance(e, DeviceLost)]

    async def wait_for(self, predicate: object, timeout: float = 5.0, what: str = "") -> None:
        assert callable(predicate)
        await wait_until(lambda: bool(predicate()), timeout=timeout, what=what or "events")


@pytest_asyncio.fixture
async def scanner(test_bus: TestBus, bluez: BluezSimulator) -> AsyncIterator[ScannerApp]:
    """As the root fixture, but without waiting for localsettings."""
    app = await start_service(test_bus)
    try:
        await wait_until(
            lambda: (
                app.bus is not None
                and app.bus.unique_name in bluez.sessions("hci0")
                and bluez.is_discovering("hci0")
            ),
            what="the service's discovery session on hci0",
        )
        yield app
    finally:
        await app.stop()


@pytest_asyncio.fixture
async def client(test_bus: TestBus, scanner: ScannerApp) -> AsyncIterator[ScannerClient]:
    """A connected client of the running service."""
    async with ScannerClient(bus_address=test_bus.address, service_timeout=5) as c:
        yield c


# Where the service can do without localsettings, tests say so: it then starts
# at once instead of waiting for a localsettings that is not on the test bus.
_NO_SETTINGS = "use_settings" in inspect.signature(ScannerApp.__init__).parameters


async def start_service(test_bus: TestBus, config: ScannerConfig | None = None) -> ScannerApp:
    """The service in-process on its own connection; stop it with ``await app.stop()``."""
    options: dict[str, Any] = {"use_settings": False} if _NO_SETTINGS else {}
    app = ScannerApp(
        ingest.config(test_bus.address, config), bus_address=test_bus.address, **options
    )
    assert await asyncio.wait_for(app.start(), 10) == 0
    return app


def spawn_service(test_bus: TestBus, *args: str) -> subprocess.Popen[str]:
    """The service as its own process (for crash and restart scenarios)."""
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=test_bus.address, PYTHONUNBUFFERED="1")
    # Never the machine's own state file (/var/lib): restarts here start empty.
    extra = [
        "--state-file",
        "",
        *(["--no-settings"] if _NO_SETTINGS else []),
        *ingest.service_args(test_bus.address),
    ]
    return subprocess.Popen(
        [sys.executable, "dbus_ble_scanner.py", *extra, *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )


@pytest.fixture
def service_processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts go here; all are killed at the end."""
    procs: list[subprocess.Popen[str]] = []
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)
