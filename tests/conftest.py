"""Fixtures: one system-like dbus-daemon per test session, connections per test."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from dbus_fast import BusType
from dbus_fast.aio import MessageBus
from hypothesis import HealthCheck, settings

from ble_scanner.config import ScannerConfig
from ble_scanner.main import ScannerApp
from ble_scanner.testing.localsettings import LocalSettingsStandIn
from ble_scanner.testing.simulator import BluezSimulator
from ble_scanner.testing.testbus import TestBus, start_test_bus
from tests import ingest
from tests.helpers import wait_until
from tests.leftovers import no_leftover_processes  # noqa: F401 - autouse, see tests/leftovers.py

# A skip fails the run unless its reason is allowed there.
pytest_plugins = ["tests.allowed_skips"]

# Hypothesis times its own input generation and each example by the wall clock;
# beside the suite's other workers on a shared 2-core machine both are slow for
# reasons that are not the code's. What the property tests check stays the same.
settings.register_profile(
    "shared-machine", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("shared-machine")

REPO = Path(__file__).resolve().parents[1]
# Made by `make setup` (.ci/setup): Venus OS's dbus-fast, for what must run as on a GX.
VENUS_VENV = REPO / ".venv-venus"
VENUS_DBUS_FAST = "2.21.1"


@dataclass(frozen=True)
class VenusPython:
    """The repository's .venv-venus interpreter and where its dbus-fast package lives."""

    python: Path
    dbus_fast: Path


@pytest.fixture(scope="session")
def venus_python() -> VenusPython:
    """Python with dbus-fast 2.21.1 as on Venus OS; a missing one fails, it never skips."""
    python = VENUS_VENV / "bin" / "python"  # not resolved: the venv is in the symlink's path
    if not python.exists():
        pytest.fail(
            f"{python} is missing: run `make setup` (it builds {VENUS_VENV.name})", pytrace=False
        )
    found = subprocess.run(
        [
            str(python),
            "-c",
            "import dbus_fast, os; from importlib.metadata import version; "
            "print(os.path.dirname(dbus_fast.__file__)); print(version('dbus-fast'))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert found.returncode == 0, f"{python} has no dbus-fast (run `make setup`): {found.stderr}"
    location, version = found.stdout.split()
    assert version == VENUS_DBUS_FAST, f"{python} has dbus-fast {version}: run `make setup`"
    return VenusPython(python, Path(location))


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


@contextlib.asynccontextmanager
async def simulator_on(test_bus: TestBus) -> AsyncIterator[BluezSimulator]:
    """The BlueZ simulator on ``test_bus`` with one powered adapter, hci0; stopped
    (name released) after."""
    sim = BluezSimulator(
        bus_address=test_bus.address, mgmt_socket=ingest.sim_mgmt_socket(test_bus.address)
    )
    await sim.start()
    await sim.add_adapter("hci0", address="00:1A:7D:DA:71:10")
    try:
        yield sim
    finally:
        await sim.stop()


@pytest_asyncio.fixture
async def bluez(test_bus: TestBus) -> AsyncIterator[BluezSimulator]:
    """The BlueZ simulator on the test bus with one powered adapter, hci0."""
    async with simulator_on(test_bus) as sim:
        yield sim


async def start_scanner(test_bus: TestBus, config: ScannerConfig | None = None) -> ScannerApp:
    app = ScannerApp(ingest.config(test_bus.address, config), bus_address=test_bus.address)
    assert await asyncio.wait_for(app.start(), 10) == 0
    return app


async def wait_scanning(app: ScannerApp, bluez: BluezSimulator, adapter: str = "hci0") -> None:
    """Until the service's discovery session on ``adapter`` is up, as both sides see it."""
    await wait_until(
        lambda: (
            app.bus is not None
            and app.bus.unique_name in bluez.sessions(adapter)
            and bluez.is_discovering(adapter)
            and any(a.name == adapter and a.session for a in app.status().adapters)
        ),
        what=f"the service's discovery session on {adapter}",
    )


@pytest_asyncio.fixture
async def localsettings(test_bus: TestBus) -> AsyncIterator[LocalSettingsStandIn]:
    """localsettings (the stand-in) on the test bus, for tests of live settings."""
    standin = await LocalSettingsStandIn.start(test_bus.address)
    try:
        yield standin
    finally:
        await standin.stop()


@pytest_asyncio.fixture
async def scanner(test_bus: TestBus, bluez: BluezSimulator) -> AsyncIterator[ScannerApp]:
    """The service, in-process on its own connection, scanning hci0 of the simulator."""
    app = await start_scanner(test_bus)
    try:
        # The session exists once BlueZ answered; reports count only once the
        # "kernel" scans (Discovering true), a moment later; the service knows
        # of it once BlueZ's reply reached it, later still on a loaded machine.
        await wait_scanning(app, bluez)
        # The suite's ingest is the one in use (tests/ingest.py).
        assert app.bluez is not None and app.bluez.ingest.mgmt_active == ingest.mgmt()
        yield app
    finally:
        await app.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` (each 10 s or more of a worker) run first, so that
    pytest-xdist does not start one of them last and wait for it alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
