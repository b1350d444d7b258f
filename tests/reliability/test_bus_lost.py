"""The service when the bus itself goes away (killed dbus-daemon).

Each test has a bus of its own that it kills; the session's bus stays up for
everyone else. The service must log one line and exit with EXIT_BUS_LOST
within 2 s whatever it was doing, and under daemontools be back on the bus
once the bus is back.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from dbus_fast import BusType
from dbus_fast.aio import MessageBus

from ble_scanner.client import ScannerClient
from ble_scanner.main import EXIT_BUS_LOST, SHUTDOWN_STEP_TIMEOUT, ScannerApp
from ble_scanner.testing.simulator import BluezSimulator
from ble_scanner.testing.simulator.report import Report
from ble_scanner.testing.testbus import TestBus, start_test_bus
from tests import ingest
from tests.helpers import call, has_owner, scanning, wait_until
from tests.reliability.conftest import PROCESS_START, output_of, spawn_service
from tests.reliability.test_process import DAEMONTOOLS, Supervised, svscan_running

ADAPTER = "hci0"
# docs/dbus-api.md "The service process": no process of the project outlives its
# bus by more than this.
BUS_LOST_BUDGET = 2.0
# Polling step while timing an exit: fine enough to measure in milliseconds.
EXIT_POLL = 0.005
# Long enough that a held call or wait is certainly still pending when the bus dies.
HELD = 60.0
LOST_LINE = "lost the system bus"


@pytest.fixture
def own_bus() -> Iterator[TestBus]:
    """A bus for this test alone: it gets killed."""
    bus = start_test_bus(quiet=True)
    try:
        yield bus
    finally:
        bus.stop()


async def _connect(bus: TestBus) -> MessageBus:
    return await asyncio.wait_for(
        MessageBus(bus_address=bus.address, bus_type=BusType.SYSTEM).connect(), 5
    )


async def start_simulator(bus: TestBus) -> BluezSimulator:
    sim = BluezSimulator(bus_address=bus.address, mgmt_socket=ingest.sim_mgmt_socket(bus.address))
    await sim.start()
    await sim.add_adapter(ADAPTER, address="00:1A:7D:DA:71:10")
    return sim


@pytest_asyncio.fixture
async def sim(own_bus: TestBus) -> AsyncIterator[BluezSimulator]:
    """The BlueZ simulator on the test's own bus; its connection dies with the bus."""
    simulator = await start_simulator(own_bus)
    try:
        yield simulator
    finally:
        await simulator.stop()


@pytest_asyncio.fixture
async def watcher(own_bus: TestBus) -> AsyncIterator[MessageBus]:
    """The test's own eyes on its bus."""
    bus = await _connect(own_bus)
    try:
        yield bus
    finally:
        bus.disconnect()


async def _pids_on(bus: MessageBus) -> set[int]:
    """The process of every connection on the bus."""
    reply = await call(
        bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "ListNames"
    )
    pids = set()
    for name in reply.body[0]:
        if name.startswith(":"):
            answer = await call(
                bus,
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                "GetConnectionUnixProcessID",
                "s",
                [name],
            )
            if answer.error_name is None:
                pids.add(int(answer.body[0]))
    return pids


async def _scanning_service(
    bus: TestBus,
    sim: BluezSimulator,
    watcher: MessageBus,
    processes: list[subprocess.Popen[str]],
) -> subprocess.Popen[str]:
    """The service as a process on ``bus``, once it owns its name and scans."""
    proc = spawn_service(bus)
    processes.append(proc)
    await wait_until(lambda: has_owner(watcher), timeout=PROCESS_START, what="the service")
    await wait_until(lambda: scanning(sim, ADAPTER), timeout=PROCESS_START, what="scanning")
    return proc


async def _kill_bus_and_time_exit(bus: TestBus, proc: subprocess.Popen[str]) -> float:
    """Kill the daemon; the seconds until the service has exited."""
    bus.kill()
    killed = time.monotonic()
    await wait_until(
        lambda: proc.poll() is not None,
        timeout=10 * BUS_LOST_BUDGET,
        interval=EXIT_POLL,
        what="the service to exit after its bus died",
    )
    return time.monotonic() - killed


def _assert_one_clear_line(proc: subprocess.Popen[str], elapsed: float) -> None:
    out = output_of(proc)
    assert proc.returncode == EXIT_BUS_LOST, out
    assert out.count(LOST_LINE) == 1, out
    # The one line a person acts on: nothing else at warning level or above.
    loud = [line for line in out.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert len(loud) == 1, out
    assert "Traceback" not in out, out
    assert elapsed < BUS_LOST_BUDGET, f"exited {elapsed:.2f} s after the bus died\n{out}"
    print(f"service exited {elapsed * 1000:.0f} ms after its bus died")


async def test_service_exits_3_within_2_s_when_its_bus_dies(
    own_bus: TestBus,
    sim: BluezSimulator,
    watcher: MessageBus,
    service_processes: list[subprocess.Popen[str]],
) -> None:
    proc = await _scanning_service(own_bus, sim, watcher, service_processes)
    _assert_one_clear_line(proc, await _kill_bus_and_time_exit(own_bus, proc))


async def test_service_exits_3_when_its_bus_dies_during_start_up(
    own_bus: TestBus, watcher: MessageBus, service_processes: list[subprocess.Popen[str]]
) -> None:
    # With settings and no localsettings, start-up waits for it (--settings-wait).
    proc = spawn_service(own_bus, "--settings-wait", str(HELD), settings=True)
    service_processes.append(proc)

    async def connected() -> bool:
        return proc.pid in await _pids_on(watcher)

    await wait_until(connected, timeout=PROCESS_START, what="the service on the bus")
    assert not await has_owner(watcher), "the service was meant to be still starting"
    _assert_one_clear_line(proc, await _kill_bus_and_time_exit(own_bus, proc))


async def test_service_exits_3_when_its_bus_dies_mid_call_to_bluez(
    own_bus: TestBus,
    sim: BluezSimulator,
    watcher: MessageBus,
    service_processes: list[subprocess.Popen[str]],
) -> None:
    sim.set_reply_delay("StartDiscovery", HELD)
    proc = spawn_service(own_bus)
    service_processes.append(proc)
    await wait_until(
        lambda: sim.call_count("StartDiscovery") > 0,
        timeout=PROCESS_START,
        what="the service's StartDiscovery, held",
    )
    _assert_one_clear_line(proc, await _kill_bus_and_time_exit(own_bus, proc))


async def test_service_exits_3_when_its_bus_dies_during_a_burst(
    own_bus: TestBus,
    sim: BluezSimulator,
    watcher: MessageBus,
    service_processes: list[subprocess.Popen[str]],
) -> None:
    proc = await _scanning_service(own_bus, sim, watcher, service_processes)
    # A subscriber to everything, so that the service is sending as well as reading.
    client = ScannerClient(bus_address=own_bus.address, service_timeout=PROCESS_START)
    await client.connect()
    stream = await client.subscribe().start()
    reports = [
        Report.build(f"C0:11:22:33:{i // 256:02X}:{i % 256:02X}", rssi=-60 - i % 30)
        for i in range(500)
    ]
    sent = 0

    async def burst() -> None:
        nonlocal sent
        while sim.bus.connected:
            for report in reports:
                sim.advertise_report(ADAPTER, report)
                sent += 1
            await asyncio.sleep(0)  # the simulator's writer runs between rounds

    task = asyncio.get_running_loop().create_task(burst())
    try:
        # 5 000 reports are a few seconds of work for the simulator on a busy machine.
        await wait_until(
            lambda: stream.dropped > 0 or sent > 5000, timeout=30, what="a burst under way"
        )
        _assert_one_clear_line(proc, await _kill_bus_and_time_exit(own_bus, proc))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.close()


async def test_stop_with_the_bus_gone_asks_nothing_of_it(
    own_bus: TestBus, sim: BluezSimulator
) -> None:
    """The SIGTERM path stops our discovery sessions over the bus: gone, it skips that."""
    app = ScannerApp(
        ingest.config(own_bus.address), bus_address=own_bus.address, use_settings=False
    )
    assert await app.start() == 0
    await wait_until(lambda: scanning(sim, ADAPTER), what="scanning")
    own_bus.kill()
    await wait_until(app.lost_the_bus, what="the service to see the bus gone")
    started = time.monotonic()
    await app.stop()
    assert time.monotonic() - started < SHUTDOWN_STEP_TIMEOUT
    assert app.bus_lost.is_set() and app.bus_lost_reason


# --- under daemontools --------------------------------------------------------------


@pytest.fixture
def supervised_on_own_bus(tmp_path: Path, own_bus: TestBus) -> Iterator[Supervised]:
    """The service under svscan/supervise on the test's own bus."""
    with svscan_running(tmp_path, own_bus.address) as supervised:
        yield supervised


def _alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


@pytest.mark.skipif(not DAEMONTOOLS, reason="daemontools not installed")
@pytest.mark.slow
async def test_supervised_service_exits_with_its_bus_and_is_back_when_the_bus_is(
    own_bus: TestBus, tmp_path: Path, supervised_on_own_bus: Supervised
) -> None:
    sim = await start_simulator(own_bus)
    watcher = await _connect(own_bus)
    try:
        await wait_until(lambda: has_owner(watcher), timeout=PROCESS_START, what="the service")
        pid = supervised_on_own_bus.pid()
        assert pid is not None
        own_bus.kill()
        killed = time.monotonic()
        await wait_until(lambda: not _alive(pid), timeout=10 * BUS_LOST_BUDGET, interval=EXIT_POLL)
        elapsed = time.monotonic() - killed
        await sim.stop()
        watcher.disconnect()

        own_bus.restart()
        sim = await start_simulator(own_bus)
        watcher = await _connect(own_bus)
        await wait_until(
            lambda: has_owner(watcher), timeout=PROCESS_START, what="the service back on the bus"
        )
        await wait_until(
            lambda: scanning(sim, ADAPTER), timeout=PROCESS_START, what="scanning again"
        )
        new_pid = supervised_on_own_bus.pid()
        assert new_pid is not None and new_pid != pid
        log = (tmp_path / "log" / "current").read_text()
        assert LOST_LINE in log, log
        assert elapsed < BUS_LOST_BUDGET, f"the service outlived its bus by {elapsed:.2f} s"
        print(f"supervised service exited {elapsed * 1000:.0f} ms after its bus died")
    finally:
        await sim.stop()
        watcher.disconnect()
