"""The service itself against the real bluetoothd (and, unchanged, the simulator).

Each test starts the service, in-process or as its own process, on the
backend's bus and checks what a user of ``com.victronenergy.ble.scanner``
would notice: the advertiser's exact bytes served, our discovery session
held by BlueZ and left alone by other clients, re-arming after a crash, a
power cycle and our own InProgress, SIGTERM ending the session, passive
scanning through the AdvertisementMonitor, and every client (proxy, CLI,
bleak) seeing the device. The service scans hci0 only, so that hci1 stays a
pure advertiser.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from dbus_fast import Variant
from dbus_fast.aio import MessageBus

from ble_scanner.bluez.discovery import SessionLost
from ble_scanner.bus.calls import name_owner_rule, signal_rule
from ble_scanner.client import ScannerClient
from ble_scanner.client.bleak import ScannerServiceBackend
from ble_scanner.config import ScannerConfig
from ble_scanner.const import REARM_BACKOFF_MAX, SCANNER_INTERFACE, SCANNER_SERVICE
from ble_scanner.main import ScannerApp
from ble_scanner.testing.simulator.const import KERNEL_LE_DISCOVERY_TIMEOUT
from tests.conftest import connect, disconnect
from tests.helpers import SignalRecorder, add_match, assert_error, assert_ok, call, wait_until
from tests.realbluez.backends import Advert, Backend
from tests.realbluez.bluez import (
    ADAPTER,
    DEVICE_TIMEOUT,
    READVERTISE_EVERY,
    adapter_call,
    discovering,
    remove_all_devices,
    set_property,
    start_scan,
)

VICTRON = 0x02E1
BTHOME_UUID16 = 0xFCD2
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCAN_ONLY_HCI0 = ScannerConfig(adapters=frozenset({"hci0"}))
# The service's first session: one SetDiscoveryFilter and one StartDiscovery,
# each answered in well under a second by bluetoothd in TCG; the margin is for
# a loaded 2-core machine.
ARM_TIMEOUT = 20.0
# After a crash the kernel refuses starts until the dead daemon's scan times
# out (10.24 s); the service's backoff may then wait up to REARM_BACKOFF_MAX
# more before it asks again; plus the ARM_TIMEOUT margin.
REARM_AFTER_CRASH_TIMEOUT = KERNEL_LE_DISCOVERY_TIMEOUT + REARM_BACKOFF_MAX + ARM_TIMEOUT
# Starting a Python process that imports dbus-fast takes seconds on a loaded
# 2-core machine (as in tests/service/test_process.py).
PROCESS_START = 30.0
# SHUTDOWN_TIMEOUT bounds the service's own stop; the rest is interpreter exit.
PROCESS_STOP = 15.0

Record = dict[str, Variant]


def payload() -> bytes:
    return os.urandom(6)


# --- helpers -------------------------------------------------------------------------


async def discovered(bus: MessageBus) -> dict[str, Record]:
    reply = await call(bus, SCANNER_SERVICE, "/", SCANNER_INTERFACE, "GetDiscoveredDevices",
                       "a{sv}", [{}])  # fmt: skip
    devices: dict[str, Record] = assert_ok(reply)[0]
    return devices


def carries(company: int, data: bytes) -> Callable[[Record], bool]:
    def match(record: Record) -> bool:
        value = record.get("ManufacturerData")
        return value is not None and value.value.get(company) == data

    return match


async def wait_served(
    backend: Backend,
    bus: MessageBus,
    advert: Advert,
    predicate: Callable[[Record], bool],
    *,
    timeout: float = DEVICE_TIMEOUT,
) -> Record:
    """Advertise ``advert`` until the service serves a record satisfying ``predicate``."""
    deadline = time.monotonic() + timeout
    last: dict[str, Record] = {}
    while True:
        await backend.advertise(advert)
        until = min(deadline, time.monotonic() + READVERTISE_EVERY)
        while True:
            last = await discovered(bus)
            for record in last.values():
                if predicate(record):
                    return record
            if time.monotonic() >= until:
                break
            await asyncio.sleep(0.1)
        if time.monotonic() >= deadline:
            shown = {a: {k: v.value for k, v in r.items()} for a, r in last.items()}
            raise AssertionError(f"the service served no matching record in {timeout} s: {shown}")


async def serves_a_new_payload(backend: Backend, bus: MessageBus, timeout: float) -> None:
    data = payload()
    await wait_served(
        backend, bus, Advert(manufacturer_data={VICTRON: data}), carries(VICTRON, data),
        timeout=timeout,
    )  # fmt: skip


class BluezDeaths:
    """Counts org.bluez losing its owner on ``bus``, to fail at once when bluetoothd dies."""

    def __init__(self, bus: MessageBus) -> None:
        self.recorder = SignalRecorder(bus, member="NameOwnerChanged")

    @classmethod
    async def watch(cls, bus: MessageBus) -> BluezDeaths:
        await add_match(bus, name_owner_rule("org.bluez"))
        return cls(bus)

    @property
    def count(self) -> int:
        return sum(1 for m in self.recorder.messages if m.body[0] == "org.bluez" and not m.body[2])

    def unless_died(self, predicate: Callable[[], bool], after: int = 0) -> Callable[[], bool]:
        """``predicate``, but an AssertionError as soon as bluetoothd has died ``after`` times."""

        def check() -> bool:
            if self.count > after:
                raise AssertionError(f"bluetoothd died ({self.count} times so far)")
            return predicate()

        return check

    def close(self) -> None:
        self.recorder.close()


def hci0(app: ScannerApp) -> Any:
    """The service's own view of hci0 (its AdapterDiscovery)."""
    assert app.bluez is not None
    return app.bluez.adapters.get("/org/bluez/hci0")


def armed(app: ScannerApp) -> bool:
    adapter = hci0(app)
    return adapter is not None and adapter.session and adapter.state == "scanning"


async def start_service(backend: Backend, config: ScannerConfig = SCAN_ONLY_HCI0) -> ScannerApp:
    app = ScannerApp(
        backend.service_config(config), bus_address=backend.bus.address, use_settings=False
    )
    assert await asyncio.wait_for(app.start(), 10) == 0
    return app


async def bluez_holds_a_session_for(bus: MessageBus) -> bool:
    """BlueZ's own word: a second StartDiscovery from ``bus`` is refused as busy."""
    reply = await adapter_call(bus, "StartDiscovery")
    if reply.error_name == "org.bluez.Error.InProgress":
        assert reply.body == ["Operation already in progress"], reply.body
        return True
    assert_ok(reply)  # it had none: this call made one; a test asking expects one
    return False


@pytest.fixture
async def clean(bluez: Backend, bus: MessageBus) -> Backend:
    await remove_all_devices(bus)
    return bluez


@pytest.fixture
async def service(clean: Backend) -> AsyncIterator[ScannerApp]:
    """The service in-process, active mode, scanning hci0, its session armed."""
    app = await start_service(clean)
    try:
        await wait_until(lambda: armed(app), timeout=ARM_TIMEOUT, what="the service armed on hci0")
        yield app
    finally:
        await app.stop()


def spawn_service(backend: Backend, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=backend.bus.address, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "dbus_ble_scanner.py", "--no-settings", "--adapter", "hci0",
         "--state-file", "", *args],
        env=env, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)


# --- serving the advertiser ---------------------------------------------------------


async def serves_exact_bytes(backend: Backend, bus: MessageBus, name: str) -> None:
    """The advertiser served with the bytes, name, address and path BlueZ gives it."""
    data = payload()
    advert = Advert(
        manufacturer_data={VICTRON: data},
        service_data16={BTHOME_UUID16: b"\x40\x02\xc4"},
        name=name,
    )
    record = await wait_served(backend, bus, advert, carries(VICTRON, data))
    address = backend.advertiser_address
    assert record["Address"] == Variant("s", address)
    assert record["AddressType"] == Variant("s", "public")
    assert record["Adapter"] == Variant("s", "hci0")
    assert record["Path"] == Variant("o", f"/org/bluez/hci0/dev_{address.replace(':', '_')}")
    assert record["Name"] == Variant("s", name)
    assert record["ManufacturerData"] == Variant("a{qay}", {VICTRON: data})
    assert record["ServiceData"] == Variant("a{say}", advert.service_data)
    assert (await discovered(bus)).keys() == {address}


async def test_service_serves_the_advertiser_with_exact_bytes(
    clean: Backend, service: ScannerApp, bus: MessageBus
) -> None:
    await serves_exact_bytes(clean, bus, "rbz-svc")


async def test_bluez_holds_our_session_with_our_filter(
    clean: Backend, service: ScannerApp, bus: MessageBus
) -> None:
    assert service.bus is not None
    # The service's SetDiscoveryFilter and StartDiscovery were accepted (else
    # its state would say "error: ..."), and BlueZ counts the session as ours.
    assert await bluez_holds_a_session_for(service.bus)
    assert await discovering(bus)
    status = {a.name: a for a in service.status().adapters}
    assert (status["hci0"].session, status["hci0"].state) == (True, "scanning")
    assert (status["hci1"].session, status["hci1"].state) == (False, "not used (settings)")


async def test_other_clients_start_and_stop_leave_our_session(
    clean: Backend, service: ScannerApp, bus: MessageBus
) -> None:
    assert service.bus is not None
    await add_match(bus, signal_rule(sender="org.bluez", member="PropertiesChanged"))
    recorder = SignalRecorder(bus, member="PropertiesChanged", path="/org/bluez/hci0")
    other = await connect(clean.bus)
    try:
        await start_scan(other)  # a different filter: BlueZ merges and restarts the scan
        assert_ok(await adapter_call(other, "StopDiscovery"))
        assert_ok(await adapter_call(other, "StartDiscovery"))
    finally:
        await disconnect(other)  # ends its second session the other way
    await serves_a_new_payload(clean, bus, DEVICE_TIMEOUT)
    recorder.close()
    stopped = [
        m for m in recorder.messages
        if m.body[0] == ADAPTER and m.body[1].get("Discovering") == Variant("b", False)
    ]  # fmt: skip
    assert stopped == [], "Discovering went false: our session was dropped"
    assert await bluez_holds_a_session_for(service.bus)
    assert armed(service)


async def test_service_recovers_when_its_own_start_is_in_progress(
    clean: Backend, service: ScannerApp, bus: MessageBus
) -> None:
    """BlueZ still holds our session while the service believes it lost it."""
    adapter = hci0(service)
    starts = adapter.starts
    adapter.feed(SessionLost())  # as after a missed signal: the next start is a second one
    await wait_until(
        lambda: adapter.starts > starts and armed(service),
        timeout=ARM_TIMEOUT, what="the service re-armed after its own InProgress",
    )  # fmt: skip
    assert adapter.starts >= starts + 2, "the first start must have met InProgress"
    assert service.bus is not None
    assert await bluez_holds_a_session_for(service.bus)
    await serves_a_new_payload(clean, bus, DEVICE_TIMEOUT)


# --- re-arming ---------------------------------------------------------------------


async def test_service_rearms_after_bluetoothd_is_killed_and_restarted(
    clean: Backend, service: ScannerApp, bus: MessageBus
) -> None:
    await serves_a_new_payload(clean, bus, DEVICE_TIMEOUT)
    deaths = await BluezDeaths.watch(bus)
    await clean.kill_bluetoothd()
    await wait_until(
        lambda: service.bluez is not None and service.bluez.owner is None,
        timeout=10, what="the service noticing bluetoothd left",
    )  # fmt: skip
    await clean.start_bluetoothd()
    restarted = time.monotonic()
    states: set[str] = set()

    def rearmed() -> bool:
        adapter = hci0(service)
        if adapter is not None:
            states.add(adapter.state)
        return armed(service)

    took = await wait_until(
        deaths.unless_died(rearmed, after=1),
        timeout=REARM_AFTER_CRASH_TIMEOUT, interval=0.05,
        what="the service re-armed on the new bluetoothd",
    )  # fmt: skip
    deaths.close()
    # The dead daemon's kernel scan is named as such, not as another scanner.
    assert not any("another scanner" in state for state in states), states
    assert any("old bluetoothd" in state for state in states), states
    adapter = hci0(service)
    await serves_a_new_payload(clean, bus, DEVICE_TIMEOUT)
    first_report = time.monotonic() - restarted
    print(
        f"\n[realbluez] {clean.name}: re-armed {took:.1f} s after bluetoothd was back "
        f"({adapter.starts} starts), new advertisement served after {first_report:.1f} s"
    )
    assert service.bus is not None
    assert await bluez_holds_a_session_for(service.bus)


async def test_service_rearms_after_a_power_cycle(
    clean: Backend, service: ScannerApp, bus: MessageBus
) -> None:
    adapter = hci0(service)
    await set_property(bus, "/org/bluez/hci0", ADAPTER, "Powered", Variant("b", False))
    await wait_until(
        lambda: not adapter.powered and not adapter.session and adapter.state == "powered off",
        timeout=10, what="the service seeing hci0 powered off",
    )  # fmt: skip
    await set_property(bus, "/org/bluez/hci0", ADAPTER, "Powered", Variant("b", True))
    took = await wait_until(
        lambda: armed(service), timeout=ARM_TIMEOUT, interval=0.05,
        what="the service re-armed after power on",
    )  # fmt: skip
    print(f"\n[realbluez] {clean.name}: re-armed {took:.1f} s after power on")
    assert service.bus is not None
    assert await bluez_holds_a_session_for(service.bus)
    await serves_a_new_payload(clean, bus, DEVICE_TIMEOUT)


async def test_sigterm_ends_our_discovery_session(
    clean: Backend, bus: MessageBus, processes: list[subprocess.Popen[str]]
) -> None:
    assert not await discovering(bus)
    proc = spawn_service(clean)
    processes.append(proc)
    async with ScannerClient(bus_address=clean.bus.address, service_timeout=PROCESS_START) as c:

        async def process_armed() -> bool:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            state = (await c.status()).adapters.get("hci0")
            return state is not None and state.session and state.state == "scanning"

        await wait_until(process_armed, timeout=PROCESS_START + ARM_TIMEOUT, interval=0.2,
                         what="the service process armed on hci0")  # fmt: skip
    assert await discovering(bus)
    proc.send_signal(signal.SIGTERM)
    out, _ = await asyncio.to_thread(proc.communicate, timeout=PROCESS_STOP)
    assert proc.returncode == 0, out
    # Nobody else scans: our StopDiscovery (or our disconnect) ends the scan.
    await wait_until(
        lambda: not_discovering(bus), timeout=10, what="Discovering false after SIGTERM"
    )


async def not_discovering(bus: MessageBus) -> bool:
    return not await discovering(bus)


# --- passive scanning ----------------------------------------------------------------


async def test_passive_mode_serves_the_advertiser_through_the_monitor_alone(
    clean: Backend, bus: MessageBus
) -> None:
    deaths = await BluezDeaths.watch(bus)
    await add_match(bus, signal_rule(sender="org.bluez", member="PropertiesChanged"))
    recorder = SignalRecorder(bus, member="PropertiesChanged", path="/org/bluez/hci0")
    app = await start_service(clean, ScannerConfig(adapters=frozenset({"hci0"}),
                                                   scan_mode="passive"))  # fmt: skip
    try:
        await wait_until(
            deaths.unless_died(lambda: hci0(app) is not None and hci0(app).monitor_active),
            timeout=ARM_TIMEOUT, what="bluetoothd activating the service's monitors",
        )  # fmt: skip
        adapter = hci0(app)
        assert adapter.monitor_registered and adapter.monitor.activated >= 1
        assert adapter.state == "scanning (passive)"
        await serves_a_new_payload(clean, bus, DEVICE_TIMEOUT)
        assert not adapter.session
        assert not await discovering(bus), "passive scanning must not start discovery"
    finally:
        recorder.close()
        deaths.close()
        await app.stop()
    started = [m for m in recorder.messages if m.body[1].get("Discovering") == Variant("b", True)]
    assert started == [], "Discovering went true in passive mode"


# --- every client sees the device ----------------------------------------------------


async def test_client_proxy_sees_the_device(
    clean: Backend, service: ScannerApp, bus: MessageBus
) -> None:
    data = payload()
    await wait_served(clean, bus, Advert(manufacturer_data={VICTRON: data}, name="rbz-proxy"),
                      carries(VICTRON, data))  # fmt: skip
    async with ScannerClient(bus_address=clean.bus.address, service_timeout=5) as client:
        devices = await client.devices(manufacturer_id=VICTRON)
    adv = devices[clean.advertiser_address]
    assert adv.manufacturer_data == {VICTRON: data}
    assert (adv.adapter, adv.address_type, adv.name) == ("hci0", "public", "rbz-proxy")


async def test_cli_devices_json_lists_the_device(
    clean: Backend, service: ScannerApp, bus: MessageBus
) -> None:
    data = payload()
    await wait_served(clean, bus, Advert(manufacturer_data={VICTRON: data}), carries(VICTRON, data))
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=clean.bus.address, PYTHONPATH=ROOT)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ble_scanner.client.cli", "devices", "--json",
        env=env, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), PROCESS_START)
    assert proc.returncode == 0, err.decode()
    records = {r["address"]: r for r in json.loads(out)}
    record = records[clean.advertiser_address]
    assert record["manufacturer_data"] == {str(VICTRON): data.hex()}
    assert record["adapter"] == "hci0"


async def test_bleak_backend_of_the_service_sees_the_device(
    clean: Backend, service: ScannerApp, bus: MessageBus
) -> None:
    data = payload()
    await wait_served(clean, bus, Advert(manufacturer_data={VICTRON: data}), carries(VICTRON, data))
    found = await BleakScanner.discover(  # type: ignore[call-overload]
        timeout=0.5, return_adv=True, backend=ScannerServiceBackend
    )
    device, adv = found[clean.advertiser_address]
    assert adv.manufacturer_data == {VICTRON: data}
    assert device.details["path"] == "/org/bluez/hci0/dev_" + device.address.replace(":", "_")


async def test_bleaks_own_scanner_alongside_the_service_leaves_our_session(
    clean: Backend, service: ScannerApp, bus: MessageBus
) -> None:
    data = payload()
    seen = asyncio.Event()

    def detected(device: BLEDevice, adv: AdvertisementData) -> None:
        if adv.manufacturer_data.get(VICTRON) == data:
            seen.set()

    async with BleakScanner(detected, bluez={"adapter": "hci0"}):
        deadline = time.monotonic() + DEVICE_TIMEOUT
        while not seen.is_set():
            assert time.monotonic() < deadline, "bleak's BlueZ scanner saw nothing"
            await clean.advertise(Advert(manufacturer_data={VICTRON: data}))
            try:
                await asyncio.wait_for(seen.wait(), READVERTISE_EVERY)
            except TimeoutError:
                pass
    assert service.bus is not None
    assert await bluez_holds_a_session_for(service.bus)
    assert armed(service)
    await serves_a_new_payload(clean, bus, DEVICE_TIMEOUT)


async def test_stop_discovery_from_another_connection_is_refused(
    clean: Backend, service: ScannerApp, bus: MessageBus
) -> None:
    """Nobody but the service's own connection can end the service's session."""
    reply = await adapter_call(bus, "StopDiscovery")
    assert_error(reply, "org.bluez.Error.Failed")
    assert await discovering(bus)
    assert armed(service)
