"""ScannerClient against the real service on the test bus: snapshot, stream, callbacks, errors."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from ble_scanner.client import (
    BusUnreachableError,
    InvalidFilterError,
    ScannerClient,
    ServiceNotRunningError,
)
from ble_scanner.client.records import Advertisement, DeviceLost, Event
from ble_scanner.config import ScannerConfig
from ble_scanner.main import ScannerApp
from ble_scanner.testing.simulator import BluezSimulator
from ble_scanner.testing.testbus import TestBus
from tests.client.conftest import (
    BTHOME,
    BTHOME_UUID,
    ROOT,
    RUUVI,
    VICTRON,
    Collector,
    advertise_scene,
    start_service,
)
from tests.helpers import wait_until

NEW = "C0:11:22:33:44:0A"
# A bare interpreter importing a few modules; 30 s covers a loaded CI machine.
IMPORT_TIMEOUT = 30


async def scene_present(client: ScannerClient) -> dict[str, Advertisement]:
    async def three() -> bool:
        return len(await client.devices()) == 3

    await wait_until(three, what="the three scene devices in the snapshot")
    return await client.devices()


async def test_snapshot_returns_typed_records_with_raw_bytes(
    client: ScannerClient, bluez: BluezSimulator
) -> None:
    await advertise_scene(bluez)
    devices = await scene_present(client)
    victron = devices[VICTRON]
    assert isinstance(victron, Advertisement)
    assert victron.manufacturer_data == {0x02E1: b"\x10\x02\xa3"}
    assert type(victron.manufacturer_data[0x02E1]) is bytes
    assert (victron.name, victron.rssi, victron.adapter) == ("SmartShunt", -60, "hci0")
    assert victron.path == bluez.device_path("hci0", VICTRON)
    assert victron.first_seen <= victron.last_seen
    assert devices[RUUVI].address_type == "random"
    assert devices[BTHOME].service_data == {BTHOME_UUID: b"\x40\x02\xc4"}
    assert devices[BTHOME].rssi == -82


async def test_snapshot_filters_in_home_assistant_vocabulary(
    client: ScannerClient, bluez: BluezSimulator
) -> None:
    await advertise_scene(bluez)
    await scene_present(client)
    assert set(await client.devices(manufacturer_id=0x02E1)) == {VICTRON}
    assert set(await client.devices(manufacturer_ids=[0x02E1, 0x0499])) == {VICTRON, RUUVI}
    assert set(await client.devices(local_name="Ruuvi*")) == {RUUVI}
    assert set(await client.devices(service_data_uuid="fcd2")) == {BTHOME}
    assert set(await client.devices(address=VICTRON.lower())) == {VICTRON}
    assert set(await client.devices(min_rssi=-70)) == {VICTRON}
    assert await client.devices(manufacturer_id=0x02E1, local_name="Ruuvi*") == {}


async def test_stream_replays_present_devices_then_follows_changes(
    client: ScannerClient, bluez: BluezSimulator
) -> None:
    await advertise_scene(bluez)
    await scene_present(client)
    async with client.subscribe(manufacturer_id=0x02E1) as stream:
        first = await asyncio.wait_for(anext(stream), 5)
        assert isinstance(first, Advertisement)
        assert first.address == VICTRON
        await bluez.advertise(
            "hci0",
            VICTRON,
            rssi=-60,
            manufacturer_data={0x02E1: b"\x10\x02\xa4"},
            name="SmartShunt",
        )
        second = await asyncio.wait_for(anext(stream), 5)
        assert isinstance(second, Advertisement)
        assert second.manufacturer_data[0x02E1] == b"\x10\x02\xa4"


async def test_stream_reports_lost_devices(test_bus: TestBus, bluez: BluezSimulator) -> None:
    app = await start_service(test_bus, ScannerConfig(lost_timeout=1.0))
    try:
        async with ScannerClient(bus_address=test_bus.address) as client:
            stream = client.subscribe(address=NEW)
            await stream.start()
            await bluez.advertise("hci0", NEW, rssi=-50, manufacturer_data={0x0059: b"\x01"})
            events = [await asyncio.wait_for(anext(stream), 5) for _ in range(2)]
            assert isinstance(events[0], Advertisement)
            assert events[1] == DeviceLost(NEW)
            await stream.aclose()
    finally:
        await app.stop()


async def test_callback_gets_the_replay_before_on_advertisement_returns(
    client: ScannerClient, bluez: BluezSimulator
) -> None:
    await advertise_scene(bluez)
    await scene_present(client)
    seen = Collector()
    subscription = await client.on_advertisement(seen, local_name="Ruuvi*")
    assert [a.address for a in seen.adverts()] == [RUUVI]
    await subscription.remove()
    await bluez.advertise("hci0", RUUVI, rssi=-40, manufacturer_data={0x0499: b"\x05\x99"})
    # A later subscription sees the new report, the removed one does not.
    later = Collector()
    await client.on_advertisement(later, local_name="Ruuvi*")
    await later.wait_for(lambda: later.adverts() and later.adverts()[-1].rssi == -40)
    assert len(seen.adverts()) == 1


async def test_async_callbacks_are_awaited(client: ScannerClient, bluez: BluezSimulator) -> None:
    got: list[Event] = []

    async def callback(event: Event) -> None:
        await asyncio.sleep(0)
        got.append(event)

    await client.on_advertisement(callback, address=NEW)
    await bluez.advertise("hci0", NEW, rssi=-55, name="async")
    await wait_until(lambda: len(got) == 1, what="the async callback")
    assert isinstance(got[0], Advertisement) and got[0].name == "async"


async def test_filters_are_checked_before_anything_is_sent(client: ScannerClient) -> None:
    with pytest.raises(ValueError, match="not a Bluetooth address"):
        await client.devices(address="nonsense")
    with pytest.raises(ValueError, match="manufacturer_id"):
        client.subscribe(manufacturer_id=0x10000)
    with pytest.raises(TypeError):
        await client.devices(colour="blue")


async def test_a_filter_the_service_refuses_raises_invalid_filter(client: ScannerClient) -> None:
    with pytest.raises(InvalidFilterError, match="Names") as info:
        await client.devices(local_name="*?*?*?*?*?")
    assert info.value.name == "org.freedesktop.DBus.Error.InvalidArgs"


async def test_status_is_typed(client: ScannerClient) -> None:
    status = await client.status()
    assert status.scanning
    assert status.adapters["hci0"].session
    assert status.adapters["hci0"].address == "00:1A:7D:DA:71:10"
    assert status.version


async def test_closing_the_client_ends_its_subscriptions_on_the_service(
    test_bus: TestBus, scanner: ScannerApp
) -> None:
    assert scanner.hub is not None
    async with ScannerClient(bus_address=test_bus.address) as client:
        await client.on_advertisement(lambda e: None)
        stream = await client.subscribe().start()
        assert len(scanner.hub.subscriptions) == 2
        await stream.aclose()
        assert len(scanner.hub.subscriptions) == 1
    await wait_until(lambda: len(scanner.hub.subscriptions) == 0, what="subscriptions freed")


async def test_service_not_running_fails_fast_when_asked(test_bus: TestBus) -> None:
    client = ScannerClient(bus_address=test_bus.address, service_timeout=0)
    with pytest.raises(ServiceNotRunningError, match=r"com\.victronenergy\.ble\.scanner"):
        await client.connect()


async def test_client_waits_for_a_service_that_starts_late(
    test_bus: TestBus, bluez: BluezSimulator
) -> None:
    client = ScannerClient(bus_address=test_bus.address, service_timeout=10)
    connecting = asyncio.create_task(client.connect())
    await wait_until(lambda: client._bus is not None and client.mode == "waiting")
    assert not connecting.done()
    app = await start_service(test_bus)
    try:
        await asyncio.wait_for(connecting, 10)
        assert client.mode == "service"
        assert client.service_owner == app.bus.unique_name  # type: ignore[union-attr]
    finally:
        await client.close()
        await app.stop()


async def test_unreachable_bus_is_reported_as_such(tmp_path: Path) -> None:
    path = tmp_path / "no-such-bus"  # a directory the test makes; nothing listens there
    with pytest.raises(BusUnreachableError, match="cannot connect"):
        await ScannerClient(bus_address=f"unix:path={path}", timeout=2).connect()


def test_records_and_filters_work_with_the_standard_library_alone() -> None:
    """``-S``: no site-packages, so neither dbus-fast nor any other library can be imported."""
    import subprocess

    code = (
        "import sys\n"
        f"sys.path.insert(0, {ROOT!r})\n"
        "from ble_scanner.client.records import Advertisement, make_filter\n"
        "adv = Advertisement.from_record({'Address': 'C0:11:22:33:44:55', 'Rssi': -60,"
        " 'ManufacturerData': {0x02E1: b'\\x10'}})\n"
        "assert make_filter(manufacturer_id=0x02E1, min_rssi=-70).matches(adv)\n"
        "assert not make_filter(manufacturer_id=0x0499).matches(adv)\n"
        "print('ok')"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=IMPORT_TIMEOUT
    )
    assert out.returncode == 0 and out.stdout == "ok\n", out.stderr


def test_the_client_imports_of_the_service_only_its_pure_core() -> None:
    """The client shares the core's records and filters (pure), and nothing with I/O or state."""
    import subprocess

    service_side = [
        "bluez",
        "cache",
        "emission",
        "hub",
        "leases",
        "main",
        "service",
        "state",
        "subscriptions",
        "testing",
        "venus",
        "watchdog",
    ]
    code = (
        "import sys, ble_scanner.client, ble_scanner.client.bleak\n"
        "print(sorted(m for m in sys.modules if m.startswith('ble_scanner.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=IMPORT_TIMEOUT
    )
    assert out.returncode == 0, out.stderr
    loaded = {m.split(".")[1] for m in eval(out.stdout)}
    assert loaded, out.stdout
    assert not loaded & set(service_side), loaded
