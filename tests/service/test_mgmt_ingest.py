"""Management ingest against the simulator's seam: content, sameness, failure and return.

Each test starts its own simulator serving the seam (at a path in the test's
tmp_path) and its own service with the ingest the test is about, whatever
``BLE_SCANNER_TEST_INGEST`` says: these are the tests of the switch itself.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from dbus_fast import Variant
from dbus_fast.aio import MessageBus

from ble_scanner.bluez import ingest as bluez_ingest
from ble_scanner.config import ScannerConfig
from ble_scanner.const import OBJECT_MANAGER, SCANNER_SERVICE
from ble_scanner.main import EXIT_NO_MGMT, ScannerApp
from ble_scanner.testing.simulator import BluezSimulator
from ble_scanner.testing.testbus import TestBus
from ble_scanner.venus.const import BUSITEM_INTERFACE
from tests.helpers import assert_ok, call, scanner_call, wait_until
from tests.service.conftest import get_devices

VICTRON = "C0:11:22:33:44:01"
RUUVI = "F4:11:22:33:44:02"
BTHOME = "C0:11:22:33:44:03"
BTHOME_UUID = "0000fcd2-0000-1000-8000-00805f9b34fb"
BATTERY = "0000180f-0000-1000-8000-00805f9b34fb"
ESS = "0000181a-0000-1000-8000-00805f9b34fb"
# Record keys that are the service's own clock, not the advertisement.
TIMES = ("FirstSeen", "LastSeen", "Interval")
# A retry interval for tests: the service comes back to the channel at once.
QUICK_RETRY = 0.2


def mgmt_config(seam: str, ingest: str = "mgmt") -> ScannerConfig:
    return ScannerConfig(ingest=ingest, mgmt_socket=seam)


async def start(test_bus: TestBus, config: ScannerConfig) -> ScannerApp:
    app = ScannerApp(config, bus_address=test_bus.address, use_settings=False)
    assert await asyncio.wait_for(app.start(), 10) == 0
    return app


def scanning(app: ScannerApp, sim: BluezSimulator) -> bool:
    return sim.is_discovering("hci0") and any(
        a.name == "hci0" and a.session for a in app.status().adapters
    )


def ingest_of(app: ScannerApp) -> str:
    return next(a.ingest for a in app.status().adapters if a.name == "hci0")


@pytest_asyncio.fixture
async def seam(tmp_path: Path) -> str:
    return str(tmp_path / "mgmt")


@pytest_asyncio.fixture
async def sim(test_bus: TestBus, seam: str) -> AsyncIterator[BluezSimulator]:
    simulator = BluezSimulator(bus_address=test_bus.address, mgmt_socket=seam)
    await simulator.start()
    await simulator.add_adapter("hci0", address="00:1A:7D:DA:71:10")
    try:
        yield simulator
    finally:
        await simulator.stop()


@pytest_asyncio.fixture
async def app(test_bus: TestBus, sim: BluezSimulator, seam: str) -> AsyncIterator[ScannerApp]:
    service = await start(test_bus, mgmt_config(seam))
    try:
        await wait_until(lambda: scanning(service, sim), what="scanning")
        yield service
    finally:
        await service.stop()


async def scene(sim: BluezSimulator) -> None:
    """Reports whose merge rules matter: scan responses, short and complete names,
    per-key data, UUID lists, service-data UUIDs, TX power, no RSSI reading."""
    await sim.advertise(
        "hci0", VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x10\x02\xa3"}, flags=0x06
    )
    await sim.advertise("hci0", VICTRON, rssi=-61, name="SmartShunt HQ2", scan_response=True)
    await sim.advertise("hci0", VICTRON, rssi=-80, manufacturer_data={0x02E1: b"\x10\x02\xa4"})
    await sim.advertise(
        "hci0", RUUVI, address_type="random", rssi=-75, name="Ruu",
        manufacturer_data={0x0499: b"\x05\x12"}, service_uuids=[BATTERY],
    )  # fmt: skip
    await sim.advertise(
        "hci0", RUUVI, address_type="random", rssi=-90, name="Ruuvi 44CC",
        manufacturer_data={0x004C: b"\x02\x15"}, service_uuids=[ESS], tx_power=-4,
    )  # fmt: skip
    await sim.advertise(
        "hci0", BTHOME, rssi=127, service_data={BTHOME_UUID: b"\x40\x02\xc4"}, tx_power=4
    )


def without_times(devices: dict[str, dict[str, Variant]]) -> dict[str, dict[str, Any]]:
    return {
        address: {k: v.value for k, v in record.items() if k not in TIMES}
        for address, record in devices.items()
    }


async def test_reports_carry_exactly_what_was_advertised(
    app: ScannerApp, sim: BluezSimulator, bus: MessageBus
) -> None:
    assert app.bluez is not None and app.bluez.ingest.mgmt_active
    await scene(sim)
    await wait_until(lambda: app.hub is not None and len(app.hub.cache) == 3, what="3 devices")
    devices = without_times(await get_devices(bus))
    assert devices[VICTRON] == {
        "Address": VICTRON, "AddressType": "public", "Adapter": "hci0",
        "Path": "/org/bluez/hci0/dev_C0_11_22_33_44_01", "Rssi": -80,
        "Name": "SmartShunt HQ2",
        "ManufacturerData": {0x02E1: b"\x10\x02\xa4"}, "ServiceData": {}, "ServiceUuids": [],
    }  # fmt: skip
    assert devices[RUUVI]["Name"] == "Ruuvi 44CC"
    assert devices[RUUVI]["AddressType"] == "random"
    assert devices[RUUVI]["ServiceUuids"] == [BATTERY, ESS]
    assert devices[RUUVI]["TxPower"] == -4
    assert devices[BTHOME]["ServiceData"] == {BTHOME_UUID: b"\x40\x02\xc4"}
    assert devices[BTHOME]["ServiceUuids"] == [BTHOME_UUID]
    assert "Rssi" not in devices[BTHOME]  # 127: no reading


async def test_every_report_is_one_report_and_device1_signals_are_not_followed(
    app: ScannerApp, sim: BluezSimulator
) -> None:
    """The Device1 match is gone; InterfacesAdded of a device the channel reported
    adds no second report."""
    assert app.bluez is not None and app.hub is not None
    assert not app.bluez.ingest.device_match
    before = app.hub.stats.reports
    await sim.advertise("hci0", VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x01"})
    await wait_until(lambda: VICTRON in app.hub.cache if app.hub else False, what="reported")
    for _ in range(5):
        await sim.advertise("hci0", VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x01"})
    await wait_until(lambda: app.hub is not None and app.hub.stats.reports >= before + 6)
    # bluetoothd's signals before this reply (InterfacesAdded among them) reached the
    # service before it: one sender, one connection, in order.
    await app.bluez.call("/", OBJECT_MANAGER, "GetManagedObjects")
    assert app.hub.stats.reports == before + 6


async def test_a_repeated_advertisement_changes_rssi_and_an_older_one_comes_back(
    app: ScannerApp, sim: BluezSimulator, bus: MessageBus
) -> None:
    """A report repeating the last advertisement skips the parse (objects.py): its RSSI
    still lands, and an advertisement heard before, then another, then it again, is
    applied in full each time."""
    first, second = {0x02E1: b"\x10\x01"}, {0x02E1: b"\x10\x02"}
    steps = [(-60, first), (-70, first), (-71, first), (-72, second), (-73, first)]
    for rssi, data in steps:
        await sim.advertise("hci0", VICTRON, rssi=rssi, manufacturer_data=data)

        async def landed(rssi: int = rssi, data: dict[int, bytes] = data) -> bool:
            record = (await get_devices(bus)).get(VICTRON)
            return (
                record is not None
                and record["Rssi"].value == rssi
                and record["ManufacturerData"].value == data
            )

        await wait_until(landed, what=f"RSSI {rssi} with {data}")


async def scene_records(
    test_bus: TestBus, tmp_path: Path, bus: MessageBus, ingest: str
) -> dict[str, dict[str, Any]]:
    seam = str(tmp_path / f"mgmt-{ingest}")
    simulator = BluezSimulator(bus_address=test_bus.address, mgmt_socket=seam)
    await simulator.start()
    try:
        await simulator.add_adapter("hci0", address="00:1A:7D:DA:71:10")
        service = await start(test_bus, mgmt_config(seam, ingest))
        try:
            await wait_until(lambda: scanning(service, simulator), what="scanning")
            assert ingest_of(service) == ingest
            await scene(simulator)
            await wait_until(
                lambda: service.hub is not None and len(service.hub.cache) == 3,
                what=f"3 devices with {ingest} ingest",
            )
            # What bluetoothd emits for the last report may still be on its way.
            await simulator.drain()
            expected = 3
            records: dict[str, dict[str, Any]] = {}

            async def settled() -> bool:
                nonlocal records
                records = without_times(await get_devices(bus))
                return len(records) == expected and records[VICTRON].get("Rssi") == -80

            await wait_until(settled, what="the last reports")
            return records
        finally:
            await service.stop()
    finally:
        await simulator.stop()


async def test_both_ingests_make_the_same_records_of_the_same_scene(
    test_bus: TestBus, tmp_path: Path, bus: MessageBus
) -> None:
    over_dbus = await scene_records(test_bus, tmp_path, bus, "dbus")
    from_channel = await scene_records(test_bus, tmp_path, bus, "mgmt")
    assert from_channel == over_dbus


async def test_malformed_frames_are_counted_and_the_channel_survives_them(
    app: ScannerApp, sim: BluezSimulator, bus: MessageBus
) -> None:
    assert app.bluez is not None
    (status,) = assert_ok(await scanner_call(bus, "GetStatus"))
    before = status["Malformed"].value
    address = bytes.fromhex("01 44 33 22 11 C0")
    sim.mgmt_send_raw(b"\x12\x00\x00")  # shorter than a header
    sim.mgmt_send_raw(struct.pack("<HHH", 0x0012, 0, 40) + b"\x00" * 10)  # bad length
    eir = b"\x05\x09ab"  # an AD structure running past the end
    params = address + struct.pack("<BbIH", 1, -50, 0, len(eir)) + eir
    sim.mgmt_send_raw(struct.pack("<HHH", 0x0012, 0, len(params)) + params)
    await wait_until(lambda: sum(app.bluez.malformed.counts.values()) >= 3 if app.bluez else False)
    (status,) = assert_ok(await scanner_call(bus, "GetStatus"))
    assert status["Malformed"].value == before + 3
    assert app.bluez.ingest.mgmt_active
    await sim.advertise("hci0", VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x01"})
    await wait_until(lambda: app.hub is not None and VICTRON in app.hub.cache, what="reported")
    assert ingest_of(app) == "mgmt"


async def test_status_and_tree_say_which_ingest(app: ScannerApp, bus: MessageBus) -> None:
    (status,) = assert_ok(await scanner_call(bus, "GetStatus"))
    assert status["Adapters"].value["hci0"]["Ingest"].value == "mgmt"
    path = "/Adapters/hci0/Ingest"
    await wait_until(lambda: app.tree is not None and path in app.tree.tree, what=path)
    reply = await call(bus, SCANNER_SERVICE, path, BUSITEM_INTERFACE, "GetValue")
    assert assert_ok(reply) == [Variant("s", "mgmt")]


async def test_falls_back_when_the_channel_fails_and_returns_when_it_can(
    app: ScannerApp, sim: BluezSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bluez_ingest, "MGMT_RETRY_INTERVAL", QUICK_RETRY)
    assert app.bluez is not None and app.hub is not None
    sim.mgmt_stop_listening()  # it cannot be opened again for now
    sim.mgmt_disconnect_clients()
    await wait_until(lambda: ingest_of(app) == "dbus", what="D-Bus ingest")
    await wait_until(
        lambda: app.bluez is not None and app.bluez.ingest.device_match, what="the match"
    )
    # The radio is never deaf: reports come over D-Bus meanwhile.
    await sim.advertise("hci0", VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x01"})
    await wait_until(lambda: app.hub is not None and VICTRON in app.hub.cache, what="over D-Bus")
    sim.mgmt_start_listening()
    await wait_until(lambda: ingest_of(app) == "mgmt", what="management ingest again")
    await wait_until(lambda: app.bluez is not None and not app.bluez.ingest.device_match)
    await sim.advertise("hci0", RUUVI, rssi=-70, manufacturer_data={0x0499: b"\x05"})
    await wait_until(
        lambda: app.hub is not None and RUUVI in app.hub.cache, what="from the channel"
    )


async def test_links_come_from_the_channel(app: ScannerApp, sim: BluezSimulator) -> None:
    """With the Device1 match gone, Device Connected / Disconnected keep the link
    rule (no power cycle under a link) informed."""
    assert app.bluez is not None and not app.bluez.ingest.device_match
    await sim.advertise("hci0", VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x01"})
    await wait_until(lambda: app.hub is not None and VICTRON in app.hub.cache, what="heard")
    sim.set_connected("hci0", VICTRON, True)
    adapter = "/org/bluez/hci0"
    await wait_until(
        lambda: app.bluez is not None and app.bluez.connected_device(adapter) == VICTRON,
        what="the link",
    )
    sim.set_connected("hci0", VICTRON, False)
    await wait_until(
        lambda: app.bluez is not None and app.bluez.connected_device(adapter) is None,
        what="the link gone",
    )


async def test_ingest_mgmt_without_a_channel_exits_with_a_clear_message(
    test_bus: TestBus, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = ScannerApp(
        mgmt_config(str(tmp_path / "nothing-here")), bus_address=test_bus.address,
        use_settings=False,
    )  # fmt: skip
    try:
        assert await asyncio.wait_for(app.start(), 10) == EXIT_NO_MGMT
    finally:
        await app.stop()
    assert "--ingest mgmt: cannot open" in caplog.text


async def test_ingest_auto_without_a_channel_runs_on_dbus(
    test_bus: TestBus, bluez: BluezSimulator, tmp_path: Path, bus: MessageBus
) -> None:
    app = await start(test_bus, mgmt_config(str(tmp_path / "nothing-here"), "auto"))
    try:
        await wait_until(lambda: scanning(app, bluez), what="scanning")
        assert ingest_of(app) == "dbus"
        await bluez.advertise("hci0", VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x01"})
        await wait_until(lambda: app.hub is not None and VICTRON in app.hub.cache)
    finally:
        await app.stop()
