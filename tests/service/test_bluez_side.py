"""The service against BlueZ: our filter, our session, and re-arming through what BlueZ does."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from dbus_fast.aio import MessageBus

from ble_scanner.config import ScannerConfig
from ble_scanner.main import ScannerApp
from ble_scanner.testing.simulator import BluezSimulator
from ble_scanner.testing.testbus import TestBus
from tests import ingest
from tests.conftest import start_scanner
from tests.helpers import adapter_state, state_becomes, wait_until
from tests.service.conftest import get_devices

ADDR = "C0:11:22:33:44:01"
OBSERVATION_WINDOW = 2.0
SILENCE = 0.8
HCI0 = "/org/bluez/hci0"
BLOCKED_PASSIVE = "scanning (passive: another scanner holds the controller)"
# RegisterMonitor answers once bluetoothd has read our application: a window in
# which the state must already name the other scanner.
MONITOR_COMES_UP = 0.3
ADAPTER_LOGGER = "ble_scanner.bluez.adapter"


def our_session(app: ScannerApp, bluez: BluezSimulator, adapter: str = "hci0") -> bool:
    return app.bus is not None and app.bus.unique_name in bluez.sessions(adapter)


def scanning(app: ScannerApp, bluez: BluezSimulator, adapter: str = "hci0") -> bool:
    """Our session, and the "kernel" scanning: from here an advertisement is reported."""
    return our_session(app, bluez, adapter) and bluez.is_discovering(adapter)


async def test_sets_a_real_filter_and_starts_discovery(
    scanner: ScannerApp, bluez: BluezSimulator
) -> None:
    assert scanner.bus is not None
    flt = bluez.sessions("hci0")[scanner.bus.unique_name]
    assert flt.get("Transport") == "le"
    assert flt.get("DuplicateData") is True
    assert not flt.get("Pattern")
    assert bluez.is_discovering("hci0")
    assert adapter_state(scanner) == "scanning"


async def test_every_powered_adapter_is_scanned(test_bus: TestBus, bluez: BluezSimulator) -> None:
    await bluez.add_adapter("hci1", address="00:1A:7D:DA:71:11")
    app = await start_scanner(test_bus)
    try:
        await wait_until(
            lambda: our_session(app, bluez, "hci0") and our_session(app, bluez, "hci1")
        )
    finally:
        await app.stop()


async def test_only_the_configured_adapters_are_scanned(
    test_bus: TestBus, bluez: BluezSimulator
) -> None:
    await bluez.add_adapter("hci1", address="00:1A:7D:DA:71:11")
    app = await start_scanner(test_bus, ScannerConfig(adapters=frozenset({"hci1"})))
    try:
        await wait_until(lambda: our_session(app, bluez, "hci1"))
        assert not our_session(app, bluez, "hci0")
        await state_becomes(app, "not used (settings)", "hci0")
        app.configure(ScannerConfig(adapters=frozenset({"hci0"})))
        await wait_until(
            lambda: our_session(app, bluez, "hci0") and not our_session(app, bluez, "hci1")
        )
    finally:
        await app.stop()


async def test_rearms_within_a_second_of_bluetoothd_returning(
    scanner: ScannerApp, bluez: BluezSimulator, bus: MessageBus
) -> None:
    await bluez.advertise("hci0", ADDR, rssi=-60, manufacturer_data={0x02E1: b"\x10"})
    await wait_until(lambda: ADDR in scanner.hub.cache)  # type: ignore[union-attr]
    await bluez.restart_bluetoothd()
    took = await wait_until(lambda: our_session(scanner, bluez), what="re-armed session")
    assert took < 1.0
    await wait_until(lambda: scanning(scanner, bluez))
    # The cache outlives bluetoothd: no device was lost.
    assert ADDR in await get_devices(bus)
    await bluez.advertise("hci0", ADDR, rssi=-60, manufacturer_data={0x02E1: b"\x11"})
    await wait_until(
        lambda: scanner.hub.cache.get(ADDR).content.manufacturer_data == {0x02E1: b"\x11"}  # type: ignore[union-attr]
    )


async def test_waits_for_bluetoothd_when_it_is_absent_at_start(test_bus: TestBus) -> None:
    sim = BluezSimulator(
        bus_address=test_bus.address, mgmt_socket=ingest.sim_mgmt_socket(test_bus.address)
    )
    if sim.mgmt is not None:
        sim.mgmt.start_listening()  # the kernel's channel is there before bluetoothd
    app = await start_scanner(test_bus)
    try:
        assert app.status().bluez_present is False
        await sim.start()
        await sim.add_adapter("hci0")
        took = await wait_until(
            lambda: our_session(app, sim), what="session once bluetoothd appears"
        )
        assert took < 1.0
    finally:
        await app.stop()
        await sim.stop()


async def test_adapter_plugged_in_later_is_armed(
    scanner: ScannerApp, bluez: BluezSimulator
) -> None:
    await bluez.add_adapter("hci1", address="00:1A:7D:DA:71:11")
    took = await wait_until(lambda: our_session(scanner, bluez, "hci1"))
    assert took < 1.0


async def test_adapter_unplugged_and_replugged(scanner: ScannerApp, bluez: BluezSimulator) -> None:
    await bluez.remove_adapter("hci0")
    await state_becomes(scanner, "absent")
    await bluez.add_adapter("hci0", address="00:1A:7D:DA:71:10")
    took = await wait_until(lambda: our_session(scanner, bluez))
    assert took < 1.0


async def test_power_cycle_rearms(scanner: ScannerApp, bluez: BluezSimulator) -> None:
    await bluez.set_powered("hci0", False)
    await state_becomes(scanner, "powered off")
    assert not our_session(scanner, bluez)
    await bluez.set_powered("hci0", True)
    took = await wait_until(lambda: our_session(scanner, bluez))
    assert took < 1.0
    await state_becomes(scanner, "scanning")


async def test_discovering_dropped_under_us_is_rearmed(
    scanner: ScannerApp, bluez: BluezSimulator
) -> None:
    starts = bluez.call_count("StartDiscovery", adapter="hci0")
    bluez.drop_discovering("hci0")
    await wait_until(
        lambda: (
            bluez.call_count("StartDiscovery", adapter="hci0") > starts
            and bluez.is_discovering("hci0")
        ),
        what="discovery restarted",
    )
    assert our_session(scanner, bluez)


async def test_external_scanner_is_reported_and_backed_off_from(
    test_bus: TestBus, bluez: BluezSimulator
) -> None:
    """InProgress with Discovering false: a raw-HCI scanner holds the controller (venus#1597).

    On an adapter without AdvertisementMonitorManager1 (bluetoothd without -E)
    there is nothing to fall back to: the state says so and the retries back off.
    """
    await bluez.add_adapter("hci1", address="00:1A:7D:DA:71:11", monitor_manager=False)
    bluez.set_external_scanner("hci1", True)
    app = await start_scanner(test_bus, ScannerConfig(adapters=frozenset({"hci1"})))
    try:
        await state_becomes(app, "blocked by another scanner", "hci1")
        # Counting calls over a window is the measurement: the backoff allows only
        # a handful of attempts in it, not a spin. The window opens after the first
        # retry (it has no backoff); the bound grows if a busy machine overruns it.
        await wait_until(lambda: bluez.call_count("StartDiscovery", adapter="hci1") >= 2)
        before, started = bluez.call_count("StartDiscovery", adapter="hci1"), time.monotonic()
        await asyncio.sleep(OBSERVATION_WINDOW)
        attempts = bluez.call_count("StartDiscovery", adapter="hci1") - before
        stretch = max(1.0, (time.monotonic() - started) / OBSERVATION_WINDOW)
        assert attempts <= 4 * stretch, (attempts, stretch)
        bluez.set_external_scanner("hci1", False)
        took = await wait_until(
            lambda: our_session(app, bluez, "hci1"), timeout=15, what="recovery"
        )
        assert took <= 11.0  # at most one maximum backoff (10 s)
        # The simulator holds the session before BlueZ's reply reaches the service.
        await state_becomes(app, "scanning", "hci1")
    finally:
        await app.stop()


@pytest.mark.parametrize(
    ("experimental", "waiting"),
    [
        (False, "waiting for the old bluetoothd's scan to end"),
        (True, "scanning (passive until the old bluetoothd's scan ends)"),
    ],
    ids=["no-monitor-manager", "passive-fallback"],
)
async def test_after_a_crash_the_state_names_the_old_daemons_scan(
    scanner: ScannerApp, bluez: BluezSimulator, experimental: bool, waiting: str
) -> None:
    """A killed bluetoothd leaves its kernel scan running (~10 s on real BlueZ).

    The new daemon's InProgress is that scan, not another scanner: the state
    must not send the user looking for one.
    """
    await wait_until(lambda: scanning(scanner, bluez))
    bluez.orphan_scan = 1.5
    seen: set[str] = set()

    def state_is(wanted: str) -> bool:
        seen.add(adapter_state(scanner))
        return adapter_state(scanner) == wanted

    await bluez.stop_bluetoothd(graceful=False)
    await bluez.start_bluetoothd(experimental=experimental)
    await wait_until(lambda: state_is(waiting), interval=0.01, what="the orphan scan in the state")
    await wait_until(lambda: scanning(scanner, bluez), timeout=10, what="scanning after it")
    await wait_until(lambda: state_is("scanning"), what="state scanning")
    assert not any("another scanner" in state for state in seen), seen


async def test_external_scanner_falls_back_to_passive_and_returns_to_active(
    scanner: ScannerApp, bluez: BluezSimulator, bus: MessageBus
) -> None:
    bluez.set_external_scanner("hci0", True)
    await bluez.set_powered("hci0", False)
    await bluez.set_powered("hci0", True)
    await wait_until(
        lambda: (
            adapter_state(scanner) == "scanning (passive: another scanner holds the controller)"
        ),
        what="passive fallback",
    )
    assert bluez.monitors("hci0"), "our monitor is registered"
    # Reports still arrive, through the monitor.
    await bluez.advertise("hci0", ADDR, rssi=-60, manufacturer_data={0x02E1: b"\x10"})
    await wait_until(lambda: ADDR in scanner.hub.cache)  # type: ignore[union-attr]
    bluez.set_external_scanner("hci0", False)
    await wait_until(lambda: our_session(scanner, bluez), timeout=15, what="back to active")
    await wait_until(lambda: not bluez.monitors("hci0"), what="monitor unregistered")
    await state_becomes(scanner, "scanning")


class StateRecorder:
    """Every State hci0 shows, in order, as its adapter logs its first and each change (adapter.py)."""

    def __init__(self, app: ScannerApp, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.INFO, logger=ADAPTER_LOGGER)
        self.app = app
        self.caplog = caplog
        self._first = len(caplog.records)
        self._now: list[str] = []

    def record(self) -> None:
        """The state hci0 shows now, after those logged so far."""
        self._now.append(adapter_state(self.app))

    @property
    def shown(self) -> list[str]:
        logged = [
            str(r.args[1])
            for r in self.caplog.records[self._first :]
            if r.name == ADAPTER_LOGGER
            and r.levelno == logging.INFO
            and r.msg == "%s: %s"
            and isinstance(r.args, tuple)
            and r.args[0] == "hci0"
        ]
        shown: list[str] = []
        for state in logged + self._now:
            if not shown or shown[-1] != state:
                shown.append(state)
        return shown

    def since(self, state: str) -> list[str]:
        shown = self.shown
        return shown[shown.index(state) :] if state in shown else []


def monitor_active(app: ScannerApp) -> bool:
    adapter = app.bluez.adapters.get(HCI0) if app.bluez is not None else None
    return adapter is not None and adapter.monitor_active


@pytest.mark.parametrize("cause", ["scan-stopped", "bluetoothd-restart", "replug"])
async def test_passive_fallback_names_the_other_scanner_in_every_state_it_shows(
    scanner: ScannerApp, bluez: BluezSimulator, cause: str, caplog: pytest.LogCaptureFixture
) -> None:
    """While another scanner holds the controller, each State the adapter shows names
    it: never "starting" nor the old bluetoothd, also while our monitor comes up
    again after bluetoothd restarted or the adapter came back."""
    bluez.set_reply_delay("RegisterMonitor", MONITOR_COMES_UP)
    states = StateRecorder(scanner, caplog)
    bluez.set_external_scanner("hci0", True)
    bluez.drop_discovering("hci0")  # the kernel stops our scan; the re-arm is refused
    await wait_until(
        lambda: adapter_state(scanner) == BLOCKED_PASSIVE and monitor_active(scanner),
        what="the passive fallback with our monitor active",
    )
    if cause == "bluetoothd-restart":
        await bluez.restart_bluetoothd()
    elif cause == "replug":
        await bluez.remove_adapter("hci0")
        await state_becomes(scanner, "absent")
        await bluez.add_adapter("hci0", address="00:1A:7D:DA:71:10")
    if cause != "scan-stopped":
        bluez.set_external_scanner("hci0", True)  # the new adapter object's
        await wait_until(
            lambda: adapter_state(scanner) == BLOCKED_PASSIVE and monitor_active(scanner),
            what="the passive fallback again",
        )
    bluez.set_external_scanner("hci0", False)
    await wait_until(lambda: our_session(scanner, bluez), timeout=15, what="back to active")
    await state_becomes(scanner, "scanning")
    states.record()
    shown = states.since("blocked by another scanner")
    assert shown[-1] == "scanning", states.shown
    during = [state for state in shown[:-1] if state != "absent"]
    assert all("another scanner" in state for state in during), states.shown
    assert BLOCKED_PASSIVE in during, states.shown


async def test_kernel_refusing_start_once_is_retried(
    scanner: ScannerApp, bluez: BluezSimulator
) -> None:
    bluez.refuse_start_discovery("hci0", count=1)
    await bluez.set_powered("hci0", False)
    await bluez.set_powered("hci0", True)
    await wait_until(lambda: our_session(scanner, bluez), what="session after one refusal")


async def test_malformed_device_data_is_counted_not_fatal(
    scanner: ScannerApp, bluez: BluezSimulator, bus: MessageBus
) -> None:
    from dbus_fast import Variant

    bluez.inject_device(
        "hci0",
        "C0:11:22:33:44:99",
        {
            "Address": Variant("s", "C0:11:22:33:44:99"),
            "RSSI": Variant("s", "loud"),
            "ManufacturerData": Variant("a{qv}", {1: Variant("s", "not bytes")}),
        },
    )
    await wait_until(lambda: scanner.status().malformed >= 1)
    await bluez.advertise("hci0", ADDR, rssi=-60, manufacturer_data={0x02E1: b"\x10"})
    await wait_until(lambda: ADDR in scanner.hub.cache)  # type: ignore[union-attr]
    assert "C0:11:22:33:44:99" not in await get_devices(bus)


async def test_watchdog_restarts_a_silent_adapter_then_power_cycles_it(
    test_bus: TestBus, bluez: BluezSimulator
) -> None:
    """Discovering stays true but nothing arrives: stop/start first, then a power cycle."""
    app = ScannerApp(
        ingest.config(test_bus.address),
        bus_address=test_bus.address,
        use_settings=False,
        watchdog_silence=SILENCE,
    )
    assert await app.start() == 0
    try:
        await wait_until(lambda: scanning(app, bluez))
        # The watchdog arms once the adapter has been heard.
        await bluez.advertise("hci0", ADDR, rssi=-60, manufacturer_data={0x02E1: b"\x01"})
        await wait_until(lambda: app.bluez.adapters["/org/bluez/hci0"].watchdog_armed, timeout=5)  # type: ignore[union-attr]
        starts = bluez.call_count("StartDiscovery", adapter="hci0")
        bluez.set_silent("hci0", True)
        took = await wait_until(
            lambda: bluez.call_count("StartDiscovery", adapter="hci0") > starts,
            timeout=10,
            what="discovery restarted by the watchdog",
        )
        assert took < SILENCE * 3
        sets = bluez.call_count("Set", adapter="hci0")
        await wait_until(
            lambda: bluez.call_count("Set", adapter="hci0") >= sets + 2,
            timeout=10,
            what="power cycle",
        )
        await wait_until(lambda: scanning(app, bluez), what="re-armed after the power cycle")
        bluez.set_silent("hci0", False)
        await bluez.advertise("hci0", ADDR, rssi=-60, manufacturer_data={0x02E1: b"\xff"})
        await wait_until(lambda: app.bluez.adapters["/org/bluez/hci0"].watchdog_step == 0)  # type: ignore[union-attr]
    finally:
        await app.stop()
