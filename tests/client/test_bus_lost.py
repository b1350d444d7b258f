"""Every client piece when the bus itself goes away (a killed dbus-daemon).

Each test has a bus of its own that it kills. A user must hear of the loss
within 2 s, whatever the client was doing: reading a stream, waiting for the
service, or awaiting a reply that will never come.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from dbus_fast import BusType, Message, MessageType, NameFlag, RequestNameReply
from dbus_fast.aio import MessageBus

from ble_scanner.client import (
    BusLostError,
    BusUnreachableError,
    ScannerClient,
    ServiceNotRunningError,
)
from ble_scanner.client.bleak import ScannerServiceBackend
from ble_scanner.client.records import Advertisement
from ble_scanner.const import SCANNER_SERVICE
from ble_scanner.main import ScannerApp
from ble_scanner.testing.simulator import BluezSimulator
from ble_scanner.testing.testbus import TestBus
from tests import ingest
from tests.client.conftest import ROOT, VICTRON
from tests.helpers import wait_until
from tests.reliability import test_bus_lost as reliability
from tests.reliability.test_bus_lost import start_simulator

ADAPTER = "hci0"
own_bus = reliability.own_bus  # the fixture: a bus of the test's own, which it kills
# docs/client.md "When the service restarts, or is not there": every user-facing
# piece says so within this.
BUS_LOST_BUDGET = 2.0
# Polling step while timing a reaction: fine enough to measure in milliseconds.
POLL = 0.005
# A command-line client's start (imports on a loaded 2-core machine).
PROCESS_START = 30.0
SYSTEM_PYTHON = "/usr/bin/python3"
LOST_TEXT = "lost the system bus"


async def _start_service(bus: TestBus, sim: BluezSimulator) -> ScannerApp:
    app = ScannerApp(ingest.config(bus.address), bus_address=bus.address, use_settings=False)
    assert await asyncio.wait_for(app.start(), 10) == 0
    await wait_until(lambda: sim.is_discovering(ADAPTER), what="the service scanning")
    return app


@pytest_asyncio.fixture
async def service(own_bus: TestBus) -> AsyncIterator[tuple[ScannerApp, BluezSimulator]]:
    """The simulator and the service in-process, on the test's bus."""
    sim = await start_simulator(own_bus)
    app = await _start_service(own_bus, sim)
    try:
        yield app, sim
    finally:
        await app.stop()
        await sim.stop()


class Mute:
    """Holds the scanner's name and never answers: a call to it stays in flight."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.calls: list[str] = []
        bus.add_message_handler(self._on_message)

    def _on_message(self, msg: Message) -> bool:
        if msg.message_type == MessageType.METHOD_CALL and msg.destination == SCANNER_SERVICE:
            self.calls.append(msg.member or "")
            return True  # handled: no reply, ever
        return False


@pytest_asyncio.fixture
async def mute(own_bus: TestBus) -> AsyncIterator[Mute]:
    bus = await asyncio.wait_for(
        MessageBus(bus_address=own_bus.address, bus_type=BusType.SYSTEM).connect(), 5
    )
    try:
        reply = await bus.request_name(SCANNER_SERVICE, NameFlag.DO_NOT_QUEUE)
        assert reply == RequestNameReply.PRIMARY_OWNER
        yield Mute(bus)
    finally:
        bus.disconnect()


async def _timed(awaitable: asyncio.Future[object]) -> tuple[BaseException | None, float]:
    """What ``awaitable`` raised once the bus is killed, and how long after the kill."""
    started = time.monotonic()
    try:
        await asyncio.wait_for(awaitable, 10 * BUS_LOST_BUDGET)
    except BaseException as exc:
        return exc, time.monotonic() - started
    return None, time.monotonic() - started


# --- the dbus-fast proxy -------------------------------------------------------------


async def test_stream_raises_bus_lost_and_the_callback_hears_it_once(
    own_bus: TestBus, service: tuple[ScannerApp, BluezSimulator]
) -> None:
    _app, sim = service
    heard: list[BusLostError] = []
    async with ScannerClient(bus_address=own_bus.address, on_bus_lost=heard.append) as client:
        stream = await client.subscribe(manufacturer_id=0x02E1).start()
        await sim.advertise(ADAPTER, VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x10"})
        assert isinstance(await asyncio.wait_for(anext(stream), 5), Advertisement)
        reading = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0)  # the reader is waiting
        own_bus.kill()
        error, elapsed = await _timed(reading)
        assert isinstance(error, BusLostError), error
        assert isinstance(error, BusUnreachableError)  # old code catching that still works
        assert LOST_TEXT in str(error)
        assert elapsed < BUS_LOST_BUDGET, f"the stream heard of it after {elapsed:.2f} s"
        await wait_until(lambda: bool(heard), what="on_bus_lost")
        assert heard == [client.bus_lost] and client.mode == "waiting"
        # Everything afterwards fails at once with the same error.
        with pytest.raises(BusLostError):
            await asyncio.wait_for(client.devices(), BUS_LOST_BUDGET)
        with pytest.raises(BusLostError):
            await asyncio.wait_for(client.wait_for_service(), BUS_LOST_BUDGET)
        with pytest.raises(BusLostError):
            await asyncio.wait_for(anext(stream), BUS_LOST_BUDGET)
    assert len(heard) == 1


async def test_callback_subscriber_is_told_through_on_bus_lost(
    own_bus: TestBus, service: tuple[ScannerApp, BluezSimulator]
) -> None:
    _app, sim = service
    events: list[object] = []
    lost_at: list[float] = []
    client = ScannerClient(
        bus_address=own_bus.address, on_bus_lost=lambda error: lost_at.append(time.monotonic())
    )
    await client.connect()
    try:
        await client.on_advertisement(events.append, manufacturer_id=0x02E1)
        await sim.advertise(ADAPTER, VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x10"})
        await wait_until(lambda: bool(events), what="the first advertisement")
        own_bus.kill()
        killed = time.monotonic()
        await wait_until(lambda: bool(lost_at), timeout=10 * BUS_LOST_BUDGET, interval=POLL)
        assert lost_at[0] - killed < BUS_LOST_BUDGET
        assert len(events) == 1  # no DeviceLost flood: the devices are not known to be gone
    finally:
        await client.close()


async def test_a_call_in_flight_fails_at_once_instead_of_waiting_for_its_timeout(
    own_bus: TestBus, mute: Mute
) -> None:
    timeout = 30.0  # far beyond the budget: only the loss can end the call in time
    async with ScannerClient(bus_address=own_bus.address, timeout=timeout) as client:
        calling = asyncio.ensure_future(client.status())
        await wait_until(lambda: "GetStatus" in mute.calls, what="GetStatus in flight")
        own_bus.kill()
        error, elapsed = await _timed(calling)
        assert isinstance(error, BusLostError), error
        assert elapsed < BUS_LOST_BUDGET, f"the call failed {elapsed:.2f} s after the loss"


async def test_waiting_for_the_service_ends_with_bus_lost(own_bus: TestBus) -> None:
    client = ScannerClient(bus_address=own_bus.address, service_timeout=0)
    with pytest.raises(ServiceNotRunningError):
        await client.connect()
    client = ScannerClient(bus_address=own_bus.address, fallback="bluez")
    await client.connect()  # no service: the BlueZ fallback stands in
    try:
        waiting = asyncio.ensure_future(client.wait_for_service(None))
        await asyncio.sleep(0)
        own_bus.kill()
        error, elapsed = await _timed(waiting)
        assert isinstance(error, BusLostError), error
        assert elapsed < BUS_LOST_BUDGET
    finally:
        await client.close()


# --- the bleak backend ---------------------------------------------------------------


async def test_bleak_backend_resets_like_bleaks_own_and_scans_again_when_the_bus_is_back(
    own_bus: TestBus,
    service: tuple[ScannerApp, BluezSimulator],
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, sim = service
    seen: list[str] = []

    def on_advert(device: BLEDevice, adv: AdvertisementData) -> None:
        seen.append(device.address)

    scanner = BleakScanner(
        on_advert,
        backend=ScannerServiceBackend,
        client_options={"bus_address": own_bus.address, "service_timeout": 0},
    )
    await scanner.start()
    await sim.advertise(ADAPTER, VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x10"})
    await wait_until(lambda: len(scanner.discovered_devices) == 1, what="the device in bleak")
    with caplog.at_level(logging.WARNING, logger="ble_scanner.client.bleak"):
        own_bus.kill()
        killed = time.monotonic()
        await wait_until(
            lambda: not scanner.discovered_devices, timeout=10 * BUS_LOST_BUDGET, interval=POLL
        )
        assert time.monotonic() - killed < BUS_LOST_BUDGET
    assert [r for r in caplog.records if "was lost" in r.getMessage()], caplog.text
    started = time.monotonic()
    await scanner.stop()  # quietly, and at once
    assert time.monotonic() - started < BUS_LOST_BUDGET
    with pytest.raises(BusUnreachableError):
        await scanner.start()  # the bus is still down
    await app.stop()
    await sim.stop()

    own_bus.restart()
    sim = await start_simulator(own_bus)
    app = await _start_service(own_bus, sim)
    try:
        await scanner.start()
        await sim.advertise(ADAPTER, VICTRON, rssi=-61, manufacturer_data={0x02E1: b"\x11"})
        await wait_until(lambda: len(scanner.discovered_devices) == 1, what="scanning again")
        await scanner.stop()
        assert seen.count(VICTRON) == 2
    finally:
        await app.stop()
        await sim.stop()


# --- the command line ----------------------------------------------------------------


@contextlib.asynccontextmanager
async def _cli(bus: TestBus, *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """``ble-scanner ARGS`` on ``bus``; killed at the end if it is still running."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ble_scanner.client.cli",
        *args,
        env=dict(os.environ, PYTHONPATH=ROOT, DBUS_SYSTEM_BUS_ADDRESS=bus.address),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def _kill_and_read(bus: TestBus, proc: asyncio.subprocess.Process) -> tuple[str, float]:
    """Kill the bus; the command's stderr and how long after the kill it exited."""
    bus.kill()
    killed = time.monotonic()
    _, err = await asyncio.wait_for(proc.communicate(), 10 * BUS_LOST_BUDGET)
    return err.decode(), time.monotonic() - killed


def _assert_told(proc: asyncio.subprocess.Process, err: str, elapsed: float) -> None:
    assert proc.returncode == 1, err
    assert LOST_TEXT in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert elapsed < BUS_LOST_BUDGET, f"exited {elapsed:.2f} s after the bus died"


async def test_cli_watch_says_lost_the_system_bus_and_exits_1(
    own_bus: TestBus, service: tuple[ScannerApp, BluezSimulator]
) -> None:
    app, _sim = service
    async with _cli(own_bus, "watch") as proc:
        await wait_until(
            lambda: app.hub is not None and len(app.hub.subscriptions) == 1,
            timeout=PROCESS_START,
            what="watch subscribed",
        )
        err, elapsed = await _kill_and_read(own_bus, proc)
    _assert_told(proc, err, elapsed)


@pytest.mark.parametrize("command", ["status", "devices"])
async def test_cli_command_in_flight_says_lost_the_system_bus_and_exits_1(
    own_bus: TestBus, mute: Mute, command: str
) -> None:
    member = {"status": "GetStatus", "devices": "GetDiscoveredDevices"}[command]
    async with _cli(own_bus, "--timeout", "30", command) as proc:
        await wait_until(
            lambda: member in mute.calls, timeout=PROCESS_START, what=f"{member} in flight"
        )
        err, elapsed = await _kill_and_read(own_bus, proc)
    _assert_told(proc, err, elapsed)


# --- the GLib helper (dbus-python) ---------------------------------------------------

GLIB_WATCHER = """
import sys
import dbus
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib
from ble_scanner.client.glib import BusLost, GlibScannerClient

DBusGMainLoop(set_as_default=True)
loop = GLib.MainLoop()
bus = dbus.SystemBus()
if sys.argv[1] == "lives-on":
    bus.set_exit_on_disconnect(False)

def lost():
    print("on_bus_lost", flush=True)
    try:
        client.devices()
    except BusLost as exc:
        print("devices:", exc, flush=True)
    loop.quit()

client = GlibScannerClient(bus, on_bus_lost=lost)
client.subscribe(print)
print("ready", flush=True)
GLib.timeout_add(60000, loop.quit)
loop.run()
sys.exit(7)
"""


@pytest.mark.skipif(
    shutil.which(SYSTEM_PYTHON) is None, reason="needs the system python with dbus-python"
)
@pytest.mark.parametrize("connection", ["libdbus-exits", "lives-on"])
async def test_glib_helper_reports_the_loss(
    own_bus: TestBus, service: tuple[ScannerApp, BluezSimulator], connection: str
) -> None:
    proc = await asyncio.create_subprocess_exec(
        SYSTEM_PYTHON,
        "-c",
        GLIB_WATCHER,
        connection,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": ROOT,
            "DBUS_SYSTEM_BUS_ADDRESS": own_bus.address,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), PROCESS_START)
        assert line == b"ready\n", (line, await proc.stderr.read())  # type: ignore[union-attr]
        own_bus.kill()
        killed = time.monotonic()
        out, err = await asyncio.wait_for(proc.communicate(), 10 * BUS_LOST_BUDGET)
        elapsed = time.monotonic() - killed
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode()
    assert "on_bus_lost" in text and "devices: lost the system bus" in text, (text, err)
    assert LOST_TEXT in err.decode() and b"Traceback" not in err, err
    # libdbus exits a process whose bus is gone (code 1, a supervisor restarts it),
    # unless told not to.
    assert proc.returncode == (1 if connection == "libdbus-exits" else 7), (proc.returncode, err)
    assert elapsed < BUS_LOST_BUDGET
