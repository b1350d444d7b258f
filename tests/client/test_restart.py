"""The client outlives the service: restart, crash, late start, and the BlueZ fallback."""

from __future__ import annotations

import asyncio
import signal
import subprocess

from dbus_fast.aio import MessageBus

from ble_scanner.client import ScannerClient
from ble_scanner.client.records import Advertisement
from ble_scanner.testing.simulator import BluezSimulator
from ble_scanner.testing.testbus import TestBus
from tests.client.conftest import RUUVI, VICTRON, Collector, spawn_service, start_service
from tests.helpers import call, wait_until

GONE = "C0:11:22:33:44:0B"
NEW = "C0:11:22:33:44:0C"
VICTRON_DATA = {0x02E1: b"\x10\x02\xa3"}


async def test_subscription_survives_a_service_restart_without_duplicates(
    test_bus: TestBus, bluez: BluezSimulator
) -> None:
    app = await start_service(test_bus)
    async with ScannerClient(bus_address=test_bus.address, lost_timeout=1.0) as client:
        seen = Collector()
        await client.on_advertisement(seen)
        await bluez.advertise("hci0", VICTRON, rssi=-60, manufacturer_data=VICTRON_DATA)
        await bluez.advertise("hci0", GONE, rssi=-70, name="goes away")
        await seen.wait_for(lambda: len(seen.adverts()) == 2)
        first_owner = client.service_owner

        await app.stop()
        await wait_until(lambda: client.mode == "waiting", what="the client to notice")
        app = await start_service(test_bus)
        await wait_until(lambda: client.mode == "service", what="the client to re-subscribe")
        assert client.service_owner != first_owner

        # The new service hears VICTRON again, unchanged, and a new device; GONE stays silent.
        await wait_until(lambda: bluez.is_discovering("hci0"), what="discovery re-armed")
        await bluez.advertise("hci0", VICTRON, rssi=-60, manufacturer_data=VICTRON_DATA)
        await bluez.advertise("hci0", NEW, rssi=-65, name="new")
        await seen.wait_for(lambda: seen.adverts(NEW) and seen.lost() == [GONE], what="NEW, lost")
        assert len(seen.adverts(VICTRON)) == 1, "an unchanged device was delivered twice"
        assert len(seen.adverts(GONE)) == 1
    await app.stop()


async def test_a_changed_device_is_delivered_after_the_restart(
    test_bus: TestBus, bluez: BluezSimulator
) -> None:
    app = await start_service(test_bus)
    async with ScannerClient(bus_address=test_bus.address) as client:
        stream = await client.subscribe(address=VICTRON).start()
        await bluez.advertise("hci0", VICTRON, rssi=-60, manufacturer_data=VICTRON_DATA)
        assert isinstance(await asyncio.wait_for(anext(stream), 5), Advertisement)
        await app.stop()
        app = await start_service(test_bus)
        await wait_until(lambda: bluez.is_discovering("hci0"), what="discovery re-armed")
        await bluez.advertise("hci0", VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x10\x02"})
        event = await asyncio.wait_for(anext(stream), 5)
        assert isinstance(event, Advertisement)
        assert event.manufacturer_data[0x02E1] == b"\x10\x02"
    await app.stop()


async def test_stream_survives_a_service_crash_and_supervisor_restart(
    test_bus: TestBus, bluez: BluezSimulator, service_processes: list[subprocess.Popen[str]]
) -> None:
    service_processes.append(spawn_service(test_bus))
    async with ScannerClient(bus_address=test_bus.address, service_timeout=15) as client:
        stream = await client.subscribe(manufacturer_id=0x0499).start()
        await wait_until(lambda: bluez.is_discovering("hci0"), what="the service scanning")
        await bluez.advertise("hci0", RUUVI, rssi=-75, manufacturer_data={0x0499: b"\x05\x01"})
        assert isinstance(await asyncio.wait_for(anext(stream), 5), Advertisement)

        service_processes[0].send_signal(signal.SIGKILL)
        await wait_until(lambda: client.mode == "waiting", what="the crash noticed")
        service_processes.append(spawn_service(test_bus))
        await wait_until(lambda: client.mode == "service", timeout=15, what="the new service")
        await wait_until(lambda: bluez.is_discovering("hci0"), what="the new service scanning")
        await bluez.advertise("hci0", RUUVI, rssi=-75, manufacturer_data={0x0499: b"\x05\x02"})
        event = await asyncio.wait_for(anext(stream), 5)
        assert isinstance(event, Advertisement)
        assert event.manufacturer_data[0x0499] == b"\x05\x02"


async def another_program_scans(bus: MessageBus) -> None:
    """Someone else scans (another program): a client on the fallback must only listen."""
    await call(bus, "org.bluez", "/org/bluez/hci0", "org.bluez.Adapter1", "StartDiscovery")


async def test_fallback_listens_to_bluez_without_scanning_then_switches_back(
    test_bus: TestBus, bluez: BluezSimulator, bus: MessageBus
) -> None:
    await another_program_scans(bus)
    async with ScannerClient(bus_address=test_bus.address, fallback="bluez") as client:
        assert client.mode == "bluez"
        seen = Collector()
        await client.on_advertisement(seen, manufacturer_id=0x02E1)
        await bluez.advertise("hci0", VICTRON, rssi=-60, manufacturer_data=VICTRON_DATA)
        await bluez.advertise("hci0", RUUVI, rssi=-60, manufacturer_data={0x0499: b"\x05"})
        await seen.wait_for(lambda: seen.adverts(VICTRON), what="VICTRON via BlueZ")
        snapshot = await client.devices()
        assert set(snapshot) == {VICTRON, RUUVI}
        assert snapshot[VICTRON].manufacturer_data == VICTRON_DATA
        assert snapshot[VICTRON].path == bluez.device_path("hci0", VICTRON)

        app = await start_service(test_bus)
        try:
            await wait_until(lambda: client.mode == "service", what="the switch to the service")
            await bluez.advertise("hci0", VICTRON, rssi=-60, manufacturer_data=VICTRON_DATA)
            await bluez.advertise("hci0", VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x01"})
            await seen.wait_for(lambda: len(seen.adverts(VICTRON)) == 2, what="the change")
            assert seen.adverts(VICTRON)[-1].manufacturer_data == {0x02E1: b"\x01"}
            assert not seen.adverts(RUUVI)
            me = client._bus.unique_name  # type: ignore[union-attr]
            for member in ("StartDiscovery", "SetDiscoveryFilter", "StopDiscovery"):
                assert bluez.call_count(member, sender=me) == 0, member
        finally:
            await app.stop()


async def test_fallback_follows_bluetoothd_through_a_restart(
    test_bus: TestBus, bluez: BluezSimulator, bus: MessageBus
) -> None:
    """A new bluetoothd is a new owner of org.bluez: the fallback hears it, not the old one."""
    await another_program_scans(bus)
    async with ScannerClient(bus_address=test_bus.address, fallback="bluez") as client:
        seen = Collector()
        await client.on_advertisement(seen)
        await bluez.advertise("hci0", VICTRON, rssi=-60, manufacturer_data=VICTRON_DATA)
        await seen.wait_for(lambda: seen.adverts(VICTRON), what="VICTRON before the restart")

        await bluez.restart_bluetoothd()
        await another_program_scans(bus)  # again, on the new bluetoothd
        await bluez.advertise("hci0", RUUVI, rssi=-60, manufacturer_data={0x0499: b"\x05"})
        await seen.wait_for(lambda: seen.adverts(RUUVI), what="RUUVI from the new bluetoothd")
        assert RUUVI in await client.devices()
        me = client._bus.unique_name  # type: ignore[union-attr]
        assert bluez.call_count("StartDiscovery", sender=me) == 0
