"""Batched delivery changes nothing a user sees: the same records as one signal per report.

Each test runs a client batched (the default: ``Batch`` + ``ChangedKeysOnly``)
next to one opted out (``batch=False``) on the same service and compares what
their callbacks got: new devices, every kind of change, a device lost and heard
again, and the replay to a subscription made later.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from dbus_fast import Message

from ble_scanner.client import ScannerClient
from ble_scanner.client.bleak import ScannerServiceBackend, bluez_props
from ble_scanner.client.records import Advertisement, Event
from ble_scanner.config import ScannerConfig
from ble_scanner.main import ScannerApp
from ble_scanner.testing.simulator import BluezSimulator
from ble_scanner.testing.testbus import TestBus
from tests.client.conftest import BTHOME, BTHOME_UUID, RUUVI, VICTRON, Collector, start_service
from tests.helpers import wait_until

LOST_TIMEOUT = 1.0
BATCH_KEYS = ("Batch", "BatchWindow", "ChangedKeysOnly")


@pytest_asyncio.fixture
async def service(test_bus: TestBus, bluez: BluezSimulator) -> AsyncIterator[ScannerApp]:
    app = await start_service(test_bus, ScannerConfig(lost_timeout=LOST_TIMEOUT))
    try:
        # Until the service scans, the simulated radio reports nothing.
        await wait_until(lambda: bluez.is_discovering("hci0"), what="discovery armed")
        yield app
    finally:
        await app.stop()


def count_members(client: ScannerClient) -> Counter[str]:
    """The Scanner1 signals reaching ``client``'s connection, by member."""
    members: Counter[str] = Counter()

    def seen(msg: Message) -> None:
        if msg.interface == "com.victronenergy.ble.Scanner1":
            members[msg.member or ""] += 1

    assert client._bus is not None
    client._bus.add_message_handler(seen)
    return members


async def play(bluez: BluezSimulator) -> None:
    """Every kind of change a record can have, on three devices."""
    await bluez.advertise(
        "hci0", VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x10\x01"}, name="SmartShunt"
    )
    await bluez.advertise("hci0", RUUVI, address_type="random", rssi=-75,
                          manufacturer_data={0x0499: b"\x05\x01"})  # fmt: skip
    await bluez.advertise("hci0", BTHOME, rssi=-82, service_data={BTHOME_UUID: b"\x40\x01"})
    await bluez.advertise("hci0", VICTRON, rssi=-71, manufacturer_data={0x02E1: b"\x10\x01"})
    await bluez.advertise("hci0", VICTRON, rssi=-71, manufacturer_data={0x02E1: b"\x10\x02"})
    await bluez.advertise("hci0", RUUVI, address_type="random", rssi=-70, tx_power=4,
                          manufacturer_data={0x0499: b"\x05\x02"}, name="Ruuvi 44CC")  # fmt: skip
    await bluez.advertise(
        "hci0", BTHOME, rssi=-80, service_data={BTHOME_UUID: b"\x40\x02"},
        service_uuids=["0000181a-0000-1000-8000-00805f9b34fb"],
    )  # fmt: skip
    await bluez.advertise("hci0", BTHOME, rssi=-80, manufacturer_data={0x0059: b"\x01"})


def by_device(events: list[Any], address_of: Callable[[Any], str]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for event in events:
        out.setdefault(address_of(event), []).append(event)
    return out


async def test_scanner_client_batched_delivers_what_one_per_report_does(
    test_bus: TestBus, bluez: BluezSimulator, service: ScannerApp
) -> None:
    async with (
        ScannerClient(bus_address=test_bus.address) as batched,
        ScannerClient(bus_address=test_bus.address, batch=False) as single,
    ):
        batched_signals, single_signals = count_members(batched), count_members(single)
        got, want = Collector(), Collector()
        await batched.on_advertisement(got, all_reports=True)
        await single.on_advertisement(want, all_reports=True)
        await play(bluez)
        await want.wait_for(lambda: len(want.adverts()) == 8, what="every report, one each")
        # Lost (no report for LOST_TIMEOUT), then heard again: a full record again.
        await want.wait_for(lambda: len(want.lost()) == 3, what="the devices lost")
        await bluez.advertise("hci0", RUUVI, address_type="random", rssi=-50,
                              manufacturer_data={0x0499: b"\x05\x03"})  # fmt: skip
        await want.wait_for(lambda: len(want.events) == 12, what="RUUVI back")
        # A subscription made now gets the replay, batched and not.
        later_got, later_want = Collector(), Collector()
        await batched.on_advertisement(later_got)
        await single.on_advertisement(later_want)
        await got.wait_for(lambda: len(got.events) == len(want.events), what="the batched client")

        def address(event: Event) -> str:
            return event.address

        assert by_device(got.events, address) == by_device(want.events, address)
        assert later_got.events == later_want.events
        assert [type(e) for e in later_got.events] == [Advertisement]
        assert batched_signals["DevicesDiscovered"] > 0
        assert batched_signals["DeviceDiscovered"] == 0
        assert single_signals["DevicesDiscovered"] == 0


async def test_bleak_backend_batched_delivers_what_one_per_report_does(
    test_bus: TestBus, bluez: BluezSimulator, service: ScannerApp
) -> None:
    def collect(into: list[tuple[Any, ...]]) -> Callable[[BLEDevice, AdvertisementData], None]:
        def callback(device: BLEDevice, data: AdvertisementData) -> None:
            path, props, record = data.platform_data
            # props is the device's live dict (as bleak's BlueZ backend): copied now.
            into.append(
                (device.address, device.name, data._replace(platform_data=()), path, record,
                 {k: (dict(v) if isinstance(v, dict) else v) for k, v in props.items()})
            )  # fmt: skip
            # Kept up to date in place, it is what a fresh conversion of the record gives.
            # (A failed assert here would only be logged by the client: noted, checked after.)
            if device.details["props"] is not props or props != bluez_props(record):
                stale.append((device.address, props, bluez_props(record)))

        return callback

    got: list[tuple[Any, ...]] = []
    want: list[tuple[Any, ...]] = []
    stale: list[tuple[Any, ...]] = []
    options = {"bus_address": test_bus.address}
    batched = BleakScanner(collect(got), backend=ScannerServiceBackend,  # type: ignore[arg-type]
                           client_options=options)  # fmt: skip
    single = BleakScanner(collect(want), backend=ScannerServiceBackend,  # type: ignore[arg-type]
                          client_options={**options, "batch": False})  # fmt: skip
    await batched.start()
    await single.start()
    try:
        await play(bluez)
        await wait_until(lambda: len(want) == 8, what="every report, one each")
        await wait_until(
            lambda: not batched.discovered_devices and not single.discovered_devices,
            what="the devices lost",
        )
        await bluez.advertise("hci0", RUUVI, address_type="random", rssi=-50,
                              manufacturer_data={0x0499: b"\x05\x03"})  # fmt: skip
        await wait_until(lambda: len(want) == 9 and len(got) == 9, what="RUUVI back")
        assert by_device(got, lambda e: e[0]) == by_device(want, lambda e: e[0])
        assert got[-1][2].manufacturer_data == {0x0499: b"\x05\x03"}
        assert stale == []
    finally:
        await batched.stop()
        await single.stop()


async def test_a_service_that_refuses_batch_gets_one_signal_per_report(
    test_bus: TestBus, bluez: BluezSimulator, service: ScannerApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An older service (InvalidArgs for ``Batch``): the client subscribes without it."""
    # The service as it was before Batch: its option table without the batch keys.
    from ble_scanner.core import filters

    older = {k: v for k, v in filters.SUBSCRIPTION_KEYS.items() if k not in BATCH_KEYS}
    monkeypatch.setattr(filters, "SUBSCRIPTION_KEYS", older)
    async with ScannerClient(bus_address=test_bus.address) as client:
        signals = count_members(client)
        got = Collector()
        await client.on_advertisement(got)
        await bluez.advertise("hci0", VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x01"})
        await got.wait_for(lambda: len(got.adverts()) == 1)
        assert got.adverts()[0].manufacturer_data == {0x02E1: b"\x01"}
        assert signals["DeviceDiscovered"] == 1 and signals["DevicesDiscovered"] == 0
        assert client._unbatched == client.service_owner
