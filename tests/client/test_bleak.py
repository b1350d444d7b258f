"""bleak's own BleakScanner code paths, served by the service through ScannerServiceBackend."""

from __future__ import annotations

import asyncio

from bleak import BleakClient, BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from ble_scanner.client import ScannerClient
from ble_scanner.client.bleak import ScannerServiceBackend, to_advertisement_data, to_ble_device
from ble_scanner.main import ScannerApp
from ble_scanner.testing.simulator import BluezSimulator
from tests.client.conftest import BTHOME, BTHOME_UUID, RUUVI, VICTRON, advertise_scene
from tests.helpers import wait_until

BACKEND = {"backend": ScannerServiceBackend}


async def present(client: ScannerClient) -> None:
    async def three() -> bool:
        return len(await client.devices()) == 3

    await wait_until(three, what="the scene in the service")


def no_discovery_calls_but_the_services(bluez: BluezSimulator, scanner: ScannerApp) -> None:
    assert scanner.bus is not None
    for member in ("StartDiscovery", "SetDiscoveryFilter"):
        callers = {c.sender for c in bluez.calls(member)}
        assert callers <= {scanner.bus.unique_name}, (member, callers)


async def test_records_convert_to_bleak_objects(
    client: ScannerClient, bluez: BluezSimulator
) -> None:
    await advertise_scene(bluez)
    await present(client)
    adv = (await client.devices())[VICTRON]
    device = to_ble_device(adv)
    assert isinstance(device, BLEDevice)
    assert (device.address, device.name) == (VICTRON, "SmartShunt")
    assert device.details["path"] == bluez.device_path("hci0", VICTRON)
    assert device.details["props"]["ManufacturerData"] == {0x02E1: b"\x10\x02\xa3"}
    data = to_advertisement_data(adv)
    assert isinstance(data, AdvertisementData)
    assert data.manufacturer_data == {0x02E1: b"\x10\x02\xa3"}
    assert (data.local_name, data.rssi, data.tx_power) == ("SmartShunt", -60, None)
    # BleakClient(device) takes the path from details: no scan to find it.
    ble_client = BleakClient(device)
    assert ble_client.address == VICTRON
    assert ble_client._backend._device_path == device.details["path"]  # type: ignore[attr-defined]


async def test_detection_callback_and_start_stop(
    client: ScannerClient, bluez: BluezSimulator, scanner: ScannerApp
) -> None:
    await advertise_scene(bluez)
    await present(client)
    got: list[tuple[BLEDevice, AdvertisementData]] = []
    scanner_ = BleakScanner(lambda d, a: got.append((d, a)), **BACKEND)  # type: ignore[arg-type]
    await scanner_.start()
    await wait_until(lambda: len(got) == 3, what="the present devices")
    await bluez.advertise("hci0", RUUVI, rssi=-40, manufacturer_data={0x0499: b"\x05\xff"})
    await wait_until(lambda: got[-1][1].rssi == -40, what="the new report")
    assert got[-1][0].address == RUUVI
    await scanner_.stop()
    count = len(got)
    await bluez.advertise("hci0", RUUVI, rssi=-20, manufacturer_data={0x0499: b"\x05\x00"})
    await present(client)  # a round trip through the service after the report
    assert len(got) == count
    no_discovery_calls_but_the_services(bluez, scanner)


async def test_discover_returns_devices_and_advertisement_data(
    client: ScannerClient, bluez: BluezSimulator, scanner: ScannerApp
) -> None:
    await advertise_scene(bluez)
    await present(client)
    devices = await BleakScanner.discover(timeout=0.2, return_adv=True, **BACKEND)  # type: ignore[call-overload]
    assert set(devices) == {VICTRON, RUUVI, BTHOME}
    device, adv = devices[BTHOME]
    assert adv.service_data == {BTHOME_UUID: b"\x40\x02\xc4"}
    assert device.details["path"] == bluez.device_path("hci0", BTHOME)
    plain = await BleakScanner.discover(timeout=0.2, **BACKEND)  # type: ignore[call-overload]
    assert {d.address for d in plain} == {VICTRON, RUUVI, BTHOME}
    no_discovery_calls_but_the_services(bluez, scanner)


async def test_service_uuid_filter_is_honoured(
    client: ScannerClient, bluez: BluezSimulator
) -> None:
    battery = "0000180f-0000-1000-8000-00805f9b34fb"
    await bluez.advertise("hci0", VICTRON, rssi=-60, service_uuids=[battery])
    await bluez.advertise("hci0", RUUVI, rssi=-60, manufacturer_data={0x0499: b"\x05"})
    await wait_until(lambda: _count(client, 2), what="both devices")
    found = await BleakScanner.discover(0.2, service_uuids=[battery], **BACKEND)  # type: ignore[call-overload]
    assert [d.address for d in found] == [VICTRON]


async def _count(client: ScannerClient, n: int) -> bool:
    return len(await client.devices()) == n


async def test_find_device_by_address_answers_from_the_service_at_once(
    client: ScannerClient, bluez: BluezSimulator, scanner: ScannerApp
) -> None:
    await advertise_scene(bluez)
    await present(client)
    loop = asyncio.get_running_loop()
    start = loop.time()
    device = await BleakScanner.find_device_by_address(RUUVI.lower(), timeout=5, **BACKEND)  # type: ignore[arg-type]
    assert device is not None
    assert device.details["path"] == bluez.device_path("hci0", RUUVI)
    assert loop.time() - start < 2, "found by replay, not by waiting for a report"
    missing = await BleakScanner.find_device_by_address(
        "C0:11:22:33:44:FF",
        timeout=0.3,
        **BACKEND,  # type: ignore[arg-type]
    )
    assert missing is None
    no_discovery_calls_but_the_services(bluez, scanner)


async def test_find_device_by_filter_waits_for_a_matching_report(
    client: ScannerClient, bluez: BluezSimulator
) -> None:
    wanted = "C0:11:22:33:44:0D"

    def has_victron_data(d: BLEDevice, a: AdvertisementData) -> bool:
        return a.manufacturer_data.get(0x02E1, b"")[:1] == b"\x10"

    finding = asyncio.create_task(
        BleakScanner.find_device_by_filter(has_victron_data, timeout=5, **BACKEND)  # type: ignore[arg-type]
    )
    await wait_until(lambda: _subscriptions(client, 1), what="the scanner subscribed")
    await bluez.advertise("hci0", wanted, rssi=-50, manufacturer_data={0x02E1: b"\x10\x01"})
    device = await asyncio.wait_for(finding, 5)
    assert device is not None and device.address == wanted


async def _subscriptions(client: ScannerClient, n: int) -> bool:
    return (await client.status()).subscriptions == n


async def test_discovered_devices_and_advertisement_data_follow_the_stream(
    client: ScannerClient, bluez: BluezSimulator
) -> None:
    await advertise_scene(bluez)
    await present(client)
    async with BleakScanner(**BACKEND) as bleak_scanner:  # type: ignore[arg-type]
        seen = bleak_scanner.discovered_devices_and_advertisement_data
        assert set(seen) == {VICTRON, RUUVI, BTHOME}
        await bluez.advertise("hci0", VICTRON, rssi=-30, manufacturer_data={0x02E1: b"\x10\x09"})
        await wait_until(
            lambda: bleak_scanner.discovered_devices_and_advertisement_data[VICTRON][1].rssi == -30,
            what="the update",
        )
        device, adv = bleak_scanner.discovered_devices_and_advertisement_data[VICTRON]
        assert adv.manufacturer_data == {0x02E1: b"\x10\x09"}
        assert device is seen[VICTRON][0], "the same BLEDevice object is updated, as bleak does"
        assert len(bleak_scanner.discovered_devices) == 3


async def test_advertisement_data_iterator(client: ScannerClient, bluez: BluezSimulator) -> None:
    async with BleakScanner(**BACKEND) as bleak_scanner:  # type: ignore[arg-type]
        await bluez.advertise("hci0", VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x10"})
        device, adv = await asyncio.wait_for(anext(bleak_scanner.advertisement_data()), 5)
        assert device.address == VICTRON
        assert adv.manufacturer_data == {0x02E1: b"\x10"}
