"""Other processes' links and claims: real bt-claims files, real holder processes, the simulator.

The watchdog runs on its settings' minimum (5 s per step), so a silence
reaches the power cycle in about ten seconds; every claim is a file in a
temporary directory, held by a process that heartbeats it as convention 0.4
asks (tests/service/claim_holder.py). A connected device with no claims at
all is tests/realbluez/test_links.py, which runs on the simulator in the
default suite and on the real bluetoothd in the real-BlueZ tier.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest
import pytest_asyncio

from ble_scanner.bluez.claims import LIVE_FOR
from ble_scanner.bluez.watchdog import MIN_SILENCE
from ble_scanner.config import ScannerConfig
from ble_scanner.main import ScannerApp
from ble_scanner.testing.simulator import BluezSimulator
from ble_scanner.testing.testbus import TestBus
from tests import ingest
from tests.helpers import adapter_state, wait_until

# Most scenes wait out a drain or a claim of 10-16 s: run first (conftest.py).
pytestmark = pytest.mark.slow

ADDR = "C0:11:22:33:44:01"
HCI0_KEY = "001A7DDA7110"  # the simulator's hci0 is 00:1A:7D:DA:71:10
HOLDER = Path(__file__).with_name("claim_holder.py")
# Both watchdog steps at the settings' minimum: restart after 5 s, power cycle 5 s later.
QUICK = ScannerConfig(silence_restart=MIN_SILENCE, silence_power_cycle=MIN_SILENCE)
# From the adapter going silent to the power cycle being due: two steps, a
# watchdog look late each, and room for a loaded machine.
TO_POWER_CYCLE = 2 * MIN_SILENCE + 10.0
# How long "nothing happens" is watched for: longer than both watchdog steps.
OBSERVATION = 2 * MIN_SILENCE + 3.0

Start = Callable[..., Awaitable["Holder"]]


class Holder:
    """A claim file held by another process."""

    def __init__(self, proc: asyncio.subprocess.Process, path: Path) -> None:
        self.proc, self.path = proc, path

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def release(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()


@pytest_asyncio.fixture
async def hold(tmp_path: Path) -> AsyncIterator[Start]:
    """Start a process holding ``tmp_path/NAME``; every one is ended after the test."""
    holders: list[Holder] = []

    async def start(name: str, service: str = "battery-manager") -> Holder:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(HOLDER), str(tmp_path), name, service,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 10)
        assert line == b"ready\n"
        holder = Holder(proc, tmp_path / name)
        holders.append(holder)
        return holder

    yield start
    for holder in holders:
        await holder.release()


async def start_app(
    test_bus: TestBus, claims_dir: Path | str, config: ScannerConfig = QUICK
) -> ScannerApp:
    app = ScannerApp(
        ingest.config(test_bus.address, config),
        bus_address=test_bus.address,
        use_settings=False,
        claims_dir=str(claims_dir),
    )
    assert await asyncio.wait_for(app.start(), 10) == 0
    return app


async def silent_after_heard(app: ScannerApp, bluez: BluezSimulator) -> None:
    """Scanning, heard once (the watchdog arms), then nothing reaches bluetoothd."""
    assert app.bluez is not None and app.bus is not None
    await wait_until(lambda: bluez.is_discovering("hci0"), what="scanning")
    await bluez.advertise("hci0", ADDR, rssi=-60, manufacturer_data={0x02E1: b"\x01"})
    adapter = app.bluez.adapters["/org/bluez/hci0"]
    await wait_until(lambda: adapter.watchdog_armed, what="watchdog armed")
    bluez.set_silent("hci0", True)


def power_sets(bluez: BluezSimulator) -> int:
    return bluez.call_count("Set", adapter="hci0")


def our_drain(tmp_path: Path) -> bool:
    path = tmp_path / f"{HCI0_KEY}.drain"
    try:
        return path.read_text().split()[:2] == [str(os.getpid()), "dbus-ble-scanner"]
    except FileNotFoundError:
        return False


async def silent_until_draining(app: ScannerApp, bluez: BluezSimulator, tmp_path: Path) -> int:
    """Silent until the power cycle is due and we wait in our drain; the Set count then."""
    await silent_after_heard(app, bluez)
    sets = power_sets(bluez)
    await wait_until(lambda: our_drain(tmp_path), TO_POWER_CYCLE, what="our drain claim")
    assert adapter_state(app) == "waiting for other links to close before a power cycle"
    assert power_sets(bluez) == sets, "powered off while another process holds a link"
    return sets


async def test_drain_is_taken_the_link_holds_the_cycle_and_it_goes_once_the_link_goes(
    test_bus: TestBus, bluez: BluezSimulator, tmp_path: Path, hold: Start
) -> None:
    link = await hold(f"{HCI0_KEY}.link.0", "dbus-serialbattery")
    app = await start_app(test_bus, tmp_path)
    try:
        sets = await silent_until_draining(app, bluez, tmp_path)
        await link.release()
        await wait_until(lambda: power_sets(bluez) >= sets + 2, 10, what="the power cycle")
        await wait_until(lambda: not our_drain(tmp_path), what="the drain released")
        assert not (tmp_path / f"{HCI0_KEY}.drain").exists()
    finally:
        await app.stop()


async def test_a_use_claim_that_stays_holds_the_power_cycle_off(
    test_bus: TestBus, bluez: BluezSimulator, tmp_path: Path, hold: Start
) -> None:
    use = await hold(f"{HCI0_KEY}.use.other", "other-service")
    app = await start_app(test_bus, tmp_path, replace(QUICK, drain_timeout=1.0))
    try:
        await silent_after_heard(app, bluez)
        sets = power_sets(bluez)
        held = f"reset held off by other-service pid {use.pid}"
        await wait_until(lambda: adapter_state(app) == held, TO_POWER_CYCLE, what=held)
        assert power_sets(bluez) == sets
        assert not our_drain(tmp_path), "the drain is released when the attempt is given up"
        assert use.path.exists(), "another owner's claim is never touched"
        # Heard again: the silence is over and so is the held-off reset.
        bluez.set_silent("hci0", False)
        await bluez.advertise("hci0", ADDR, rssi=-60, manufacturer_data={0x02E1: b"\x02"})
        await wait_until(lambda: adapter_state(app) == "scanning", 10, what="scanning again")
    finally:
        await app.stop()


def dead_pid() -> int:
    """The pid of a process that has ended."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, check=True, text=True)  # fmt: skip
    return int(proc.stdout)


def stale_claim(path: Path) -> None:
    """A claim whose holder died long ago: dead pid, file older than LIVE_FOR."""
    path.write_text(f"{dead_pid()} crashed-service {int(time.time()) - 600}\n")
    old = time.time() - LIVE_FOR - 60
    os.utime(path, (old, old))


async def test_stale_claims_are_ignored_and_a_stale_drain_is_taken_over(
    test_bus: TestBus, bluez: BluezSimulator, tmp_path: Path
) -> None:
    for name in (f"{HCI0_KEY}.link.0", "hci0.use.crashed", f"{HCI0_KEY}.drain"):
        stale_claim(tmp_path / name)
    app = await start_app(test_bus, tmp_path)
    try:
        await silent_after_heard(app, bluez)
        sets = power_sets(bluez)
        await wait_until(lambda: power_sets(bluez) >= sets + 2, TO_POWER_CYCLE, what="power cycle")
        await wait_until(lambda: not (tmp_path / f"{HCI0_KEY}.drain").exists(), what="released")
        assert (tmp_path / f"{HCI0_KEY}.link.0").exists(), "only a drain in our way is unlinked"
    finally:
        await app.stop()


async def test_another_process_s_drain_keeps_us_off_the_adapter_until_it_goes(
    test_bus: TestBus, bluez: BluezSimulator, tmp_path: Path, hold: Start
) -> None:
    """Its drain under the adapter's 0.3 name (hci0) counts as much as under its address."""
    app = await start_app(test_bus, tmp_path)
    try:
        await silent_after_heard(app, bluez)
        bluez.set_silent("hci0", False)
        drain = await hold("hci0.drain", "battery-manager")
        await wait_until(
            lambda: adapter_state(app) == "being reset by battery-manager", 10, what="drained"
        )
        # Its reset: the adapter goes off and on; we neither start again nor reset it.
        starts, sets = bluez.call_count("StartDiscovery", adapter="hci0"), power_sets(bluez)
        await bluez.set_powered("hci0", False)
        await bluez.set_powered("hci0", True)
        await asyncio.sleep(OBSERVATION)  # nothing is to happen: a window, not a sync
        assert bluez.call_count("StartDiscovery", adapter="hci0") == starts
        assert power_sets(bluez) == sets
        assert adapter_state(app) == "being reset by battery-manager"
        await drain.release()
        await wait_until(lambda: bluez.is_discovering("hci0"), 10, what="re-armed")
        await wait_until(lambda: adapter_state(app) == "scanning", what="scanning")
    finally:
        await app.stop()


@pytest.mark.parametrize("unusable", ["a file", "missing"])
async def test_an_unusable_claims_directory_means_no_coordination_logged_once(
    test_bus: TestBus,
    bluez: BluezSimulator,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    unusable: str,
) -> None:
    claims_dir = tmp_path / "bt-claims"
    if unusable == "a file":
        claims_dir.write_text("not a directory\n")
    caplog.set_level(logging.INFO, logger="ble_scanner.bluez.claimsdir")
    app = await start_app(test_bus, claims_dir)
    try:
        await silent_after_heard(app, bluez)
        sets = power_sets(bluez)
        await wait_until(lambda: power_sets(bluez) >= sets + 2, TO_POWER_CYCLE, what="power cycle")
        lines = [r for r in caplog.records if "is unusable" in r.getMessage()]
        assert len(lines) == 1, [r.getMessage() for r in lines]
        assert str(claims_dir) in lines[0].getMessage()
        # A stock GX has no /run/bt-claims: that is a line, not a warning.
        expected = logging.WARNING if unusable == "a file" else logging.INFO
        assert lines[0].levelno == expected
    finally:
        await app.stop()


async def test_a_connection_made_during_the_drain_wait_holds_the_cycle_off(
    test_bus: TestBus, bluez: BluezSimulator, tmp_path: Path, hold: Start
) -> None:
    link = await hold(f"{HCI0_KEY}.link.0", "dbus-serialbattery")
    app = await start_app(test_bus, tmp_path, replace(QUICK, drain_timeout=4.0))
    try:
        sets = await silent_until_draining(app, bluez, tmp_path)
        bluez.set_connected("hci0", ADDR)
        await link.release()
        held = f"reset held off by a connection to {ADDR}"
        await wait_until(lambda: adapter_state(app) == held, 10, what=held)
        assert power_sets(bluez) == sets
        await wait_until(lambda: not our_drain(tmp_path), what="the drain released")
    finally:
        await app.stop()


# bluetoothd 5.66 was seen setting Device1.Connected with no PropertiesChanged
# for it (tests/realbluez/test_links.py failed so on its first run): only its
# GATT objects, UUIDs and ServicesResolved came. D-Bus ingest: with the
# management channel, the kernel's Device Connected tells of the link.
UNANNOUNCED = replace(QUICK, ingest="dbus")


async def test_a_link_bluetoothd_never_announces_is_seen_and_holds_the_cycle_off(
    test_bus: TestBus, bluez: BluezSimulator, tmp_path: Path
) -> None:
    app = await start_app(test_bus, tmp_path, UNANNOUNCED)
    try:
        assert app.bluez is not None
        await silent_after_heard(app, bluez)
        sets = power_sets(bluez)
        bluez.set_connected("hci0", ADDR, announce=False)
        await wait_until(
            lambda: app.bluez is not None and app.bluez.connected_device("/org/bluez/hci0") == ADDR,
            timeout=10,
            what="the service seeing the unannounced link",
        )
        adapter = app.bluez.adapters["/org/bluez/hci0"]
        step = adapter.watchdog_step
        await asyncio.sleep(OBSERVATION)  # nothing is to happen: a window, not a sync
        assert power_sets(bluez) == sets, "powered off under a link"
        assert adapter.watchdog_step == step, "silence under a link was counted"
    finally:
        await app.stop()


async def test_a_link_no_signal_tells_of_is_read_before_the_power_cycle(
    test_bus: TestBus, bluez: BluezSimulator, tmp_path: Path
) -> None:
    """Neither Connected nor ServicesResolved signalled: the last look asks bluetoothd."""
    app = await start_app(test_bus, tmp_path, UNANNOUNCED)
    try:
        await silent_after_heard(app, bluez)
        sets = power_sets(bluez)
        # The object's state alone, as GetManagedObjects and Get read it.
        bluez.adapter("hci0").devices[ADDR].connected = True
        held = f"reset held off by a connection to {ADDR}"
        await wait_until(lambda: adapter_state(app) == held, TO_POWER_CYCLE, what=held)
        assert power_sets(bluez) == sets, "powered off under a link"
    finally:
        await app.stop()
