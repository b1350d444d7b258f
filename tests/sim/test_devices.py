"""Device1 objects and the advertising model of btd_adapter_device_found / src/device.c."""

from __future__ import annotations

from dbus_fast import Variant
from dbus_fast.aio import MessageBus

from ble_scanner.const import BLUEZ_DEVICE, BLUEZ_SERVICE, OBJECT_MANAGER
from ble_scanner.testing.simulator import BluezSimulator
from ble_scanner.testing.testbus import TestBus
from tests.helpers import SignalRecorder, add_match, assert_error, assert_ok, call, wait_until
from tests.sim.conftest import (
    ADAPTER,
    ADAPTER_PATH,
    OM_RULE,
    PC_RULE,
    adapter_call,
    added,
    device_changes,
    get_property,
    removed,
    set_filter,
)

ADDR = "C0:11:22:33:44:55"
PATH = ADAPTER_PATH + "/dev_C0_11_22_33_44_55"
LE_DUP = {"Transport": Variant("s", "le"), "DuplicateData": Variant("b", True)}
LE_NODUP = {"Transport": Variant("s", "le"), "DuplicateData": Variant("b", False)}


async def _scan(bus: MessageBus, sim: BluezSimulator, **entries: Variant) -> SignalRecorder:
    """Listen like bleak does, then start discovery with ``entries`` as the filter."""
    await add_match(bus, PC_RULE)
    await add_match(bus, OM_RULE)
    recorder = SignalRecorder(bus)
    if entries:
        assert_ok(await set_filter(bus, **entries))
    assert_ok(await adapter_call(bus, "StartDiscovery"))
    await wait_until(lambda: sim.is_discovering(ADAPTER), what="discovering")
    return recorder


async def _settle(bus: MessageBus, sim: BluezSimulator) -> None:
    """Everything the simulator sent so far has reached ``bus``: a round trip orders it."""
    await sim.drain()
    assert_ok(await call(bus, BLUEZ_SERVICE, "/", "org.freedesktop.DBus.Peer", "Ping"))


async def test_first_sighting_is_one_interfaces_added_from_root(sim, bus):
    rec = await _scan(bus, sim, **LE_NODUP)
    await sim.advertise(ADAPTER, ADDR, rssi=-55, name="Tank", manufacturer_data={0x02E1: b"\x10"})
    msgs = await rec.wait_for(lambda m: bool(added(m, PATH)))
    await _settle(bus, sim)
    signal = added(msgs, PATH)[0]
    assert signal.path == "/" and len(added(rec.messages, PATH)) == 1
    assert not device_changes(rec.messages, PATH)
    assert list(signal.body[1]) == [
        "org.freedesktop.DBus.Introspectable",
        BLUEZ_DEVICE,
        "org.freedesktop.DBus.Properties",
    ]
    props = signal.body[1][BLUEZ_DEVICE]
    assert props["Name"].value == "Tank" and props["Alias"].value == "Tank"
    assert props["RSSI"] == Variant("n", -55)
    assert props["ManufacturerData"] == Variant("a{qv}", {0x02E1: Variant("ay", b"\x10")})
    assert props["Adapter"] == Variant("o", ADAPTER_PATH)
    assert props["AdvertisingFlags"] == Variant("ay", b"\x06")
    assert "TxPower" not in props and "ServiceData" not in props


async def test_device_properties_have_bluez_types(sim, bus):
    await _scan(bus, sim, **LE_NODUP)
    await sim.advertise(
        ADAPTER,
        ADDR,
        address_type="random",
        tx_power=4,
        manufacturer_data={1: b"\x01"},
        service_data={"181a": b"\x02"},
        service_uuids=["180f"],
    )
    reply = await call(bus, BLUEZ_SERVICE, "/", OBJECT_MANAGER, "GetManagedObjects")
    props = assert_ok(reply)[0][PATH][BLUEZ_DEVICE]
    signatures = {k: v.signature for k, v in props.items()}
    assert signatures == {
        "Address": "s",
        "AddressType": "s",
        "Alias": "s",
        "Paired": "b",
        "Bonded": "b",
        "Trusted": "b",
        "Blocked": "b",
        "LegacyPairing": "b",
        "RSSI": "n",
        "Connected": "b",
        "UUIDs": "as",
        "Adapter": "o",
        "ManufacturerData": "a{qv}",
        "ServiceData": "a{sv}",
        "TxPower": "n",
        "ServicesResolved": "b",
        "AdvertisingFlags": "ay",
    }
    assert props["ServiceData"].value["0000181a-0000-1000-8000-00805f9b34fb"] == Variant(
        "ay", b"\x02"
    )
    assert props["Alias"].value == "C0-11-22-33-44-55"
    assert props["AddressType"].value == "random"
    # Service-data UUIDs join the advertised ones.
    assert props["UUIDs"].value == [
        "0000180f-0000-1000-8000-00805f9b34fb",
        "0000181a-0000-1000-8000-00805f9b34fb",
    ]


async def test_absent_property_get_is_invalid_args(sim, bus):
    await _scan(bus, sim, **LE_NODUP)
    await sim.advertise(ADAPTER, ADDR)
    reply = await get_property(bus, PATH, BLUEZ_DEVICE, "TxPower")
    assert_error(reply, "org.freedesktop.DBus.Error.InvalidArgs")
    assert reply.body == ["No such property 'TxPower'"]


async def test_reports_are_dropped_while_nobody_discovers(sim, bus):
    assert not await sim.advertise(ADAPTER, ADDR)
    assert sim.device_path(ADAPTER, ADDR) is None


async def test_unfiltered_discovery_hides_non_discoverable_advertisers(sim, bus):
    await _scan(bus, sim)
    assert not await sim.advertise(ADAPTER, ADDR, flags=0x04)
    assert not await sim.advertise(ADAPTER, "C0:00:00:00:00:02", flags=None)
    assert await sim.advertise(ADAPTER, "C0:00:00:00:00:03", flags=0x02)
    assert sim.devices(ADAPTER) == ["C0:00:00:00:00:03"]


async def test_any_real_filter_shows_non_discoverable_advertisers(sim, bus):
    await _scan(bus, sim, DuplicateData=Variant("b", True))
    assert await sim.advertise(ADAPTER, ADDR, flags=0x04)


async def test_rssi_moves_under_8_dbm_are_not_emitted_in_unfiltered_discovery(sim, bus):
    # test_rssi.py has every rule of filtered vs unfiltered discovery.
    rec = await _scan(bus, sim)
    for rssi in (-70, -75, -77, -62):
        await sim.advertise(ADAPTER, ADDR, rssi=rssi)
    await _settle(bus, sim)
    rssis = [m.body[1]["RSSI"].value for m in device_changes(rec.messages, PATH)]
    assert rssis == [-62]
    assert assert_ok(await get_property(bus, PATH, BLUEZ_DEVICE, "RSSI"))[0] == Variant("n", -62)


async def test_every_rssi_is_emitted_when_a_session_filters_on_rssi(sim, bus):
    rec = await _scan(bus, sim, RSSI=Variant("n", -100))
    for rssi in (-70, -71, -72):
        await sim.advertise(ADAPTER, ADDR, rssi=rssi)
    await _settle(bus, sim)
    assert [m.body[1]["RSSI"].value for m in device_changes(rec.messages, PATH)] == [-71, -72]


async def test_manufacturer_data_accumulates_per_company_and_unchanged_is_silent(sim, bus):
    # Unfiltered: under a filter the unchanged report would still bring its RSSI.
    rec = await _scan(bus, sim)
    await sim.advertise(ADAPTER, ADDR, manufacturer_data={0x004C: b"\x02\x15"})
    await sim.advertise(ADAPTER, ADDR, manufacturer_data={0x02E1: b"\x10"})
    await sim.advertise(ADAPTER, ADDR, manufacturer_data={0x02E1: b"\x10"})
    await sim.advertise(ADAPTER, ADDR, manufacturer_data={0x02E1: b"\x11"})
    await _settle(bus, sim)
    values = [m.body[1]["ManufacturerData"].value for m in device_changes(rec.messages, PATH)]
    assert [sorted(v) for v in values] == [[0x004C, 0x02E1], [0x004C, 0x02E1]]
    assert values[-1][0x02E1] == Variant("ay", b"\x11")


async def test_duplicate_data_emits_every_report_with_only_its_data(sim, bus):
    rec = await _scan(bus, sim, **LE_DUP)
    await sim.advertise(ADAPTER, ADDR, manufacturer_data={0x004C: b"\x02\x15"})
    await sim.advertise(ADAPTER, ADDR, manufacturer_data={0x02E1: b"\x10"})
    await sim.advertise(ADAPTER, ADDR, manufacturer_data={0x02E1: b"\x10"})
    await _settle(bus, sim)
    values = [m.body[1]["ManufacturerData"].value for m in device_changes(rec.messages, PATH)]
    assert values == [{0x02E1: Variant("ay", b"\x10")}] * 2


async def test_one_report_is_one_properties_changed(sim, bus):
    rec = await _scan(bus, sim, **LE_NODUP)
    await sim.advertise(ADAPTER, ADDR, rssi=-90)
    await sim.advertise(
        ADAPTER, ADDR, rssi=-50, name="X", tx_power=0, service_data={"fcd2": b"\x40"}
    )
    await _settle(bus, sim)
    changes = device_changes(rec.messages, PATH)
    assert len(changes) == 1
    assert set(changes[0].body[1]) == {"RSSI", "Name", "Alias", "TxPower", "ServiceData", "UUIDs"}
    assert changes[0].body[2] == []


async def test_end_of_discovery_invalidates_rssi_and_tx_power(sim, bus):
    rec = await _scan(bus, sim, **LE_NODUP)
    await sim.advertise(ADAPTER, ADDR, rssi=-60, tx_power=4)
    assert_ok(await adapter_call(bus, "StopDiscovery"))
    msgs = await rec.wait_for(lambda m: any(c.body[2] for c in device_changes(m, PATH)))
    change = next(c for c in device_changes(msgs, PATH) if c.body[2])
    assert change.body[1] == {} and sorted(change.body[2]) == ["RSSI", "TxPower"]
    assert_error(
        await get_property(bus, PATH, BLUEZ_DEVICE, "RSSI"),
        "org.freedesktop.DBus.Error.InvalidArgs",
    )


async def test_temporary_non_connectable_device_goes_when_last_session_ends(sim, bus):
    rec = await _scan(bus, sim, **LE_NODUP)
    await sim.advertise(ADAPTER, ADDR, connectable=False)
    await sim.advertise(ADAPTER, "C0:00:00:00:00:02", connectable=True)
    assert_ok(await adapter_call(bus, "StopDiscovery"))
    msgs = await rec.wait_for(lambda m: bool(removed(m, PATH)))
    assert removed(msgs, PATH)[0].path == "/"
    assert sim.devices(ADAPTER) == ["C0:00:00:00:00:02"]


async def test_temporary_device_is_removed_after_the_temporary_timeout(test_bus: TestBus, bus):
    async with BluezSimulator(test_bus.address, temporary_timeout=0.2) as sim:
        await sim.add_adapter(ADAPTER)
        rec = await _scan(bus, sim, **LE_NODUP)
        await sim.advertise(ADAPTER, ADDR)
        took = await wait_until(lambda: sim.device_path(ADAPTER, ADDR) is None, what="expiry")
        assert 0.1 < took < 2
        await rec.wait_for(lambda m: bool(removed(m, PATH)))
        # A later advert makes it a new object, announced in full again.
        await sim.advertise(ADAPTER, ADDR)
        await rec.wait_for(lambda m: len(added(m, PATH)) == 2)


async def test_reports_restart_the_temporary_timer(test_bus: TestBus, bus):
    async with BluezSimulator(test_bus.address, temporary_timeout=0.3) as sim:
        await sim.add_adapter(ADAPTER)
        rec = await _scan(bus, sim, **LE_DUP)
        sim.add_advertiser(ADAPTER, ADDR, period=0.05, manufacturer_data={1: b"\x01"})
        # 20 reports 50 ms apart span more than three timeouts.
        await rec.wait_for(lambda m: len(device_changes(m, PATH)) >= 20, what="20 reports")
        assert not removed(rec.messages, PATH)
        sim.remove_advertiser(ADAPTER, ADDR)
        await rec.wait_for(lambda m: bool(removed(m, PATH)), what="expiry once silent")


async def test_a_pattern_of_one_client_hides_other_devices_from_everyone(sim, bus, new_client):
    other = await new_client()
    assert_ok(await set_filter(other, Pattern=Variant("s", "C0:11")))
    assert_ok(await adapter_call(other, "StartDiscovery"))
    await _scan(bus, sim, **LE_DUP)
    assert await sim.advertise(ADAPTER, ADDR)
    assert not await sim.advertise(ADAPTER, "D0:00:00:00:00:01")
    assert await sim.advertise(ADAPTER, "D0:00:00:00:00:02", name="C0:11 named")


async def test_uuid_filter_reports_only_matching_devices(sim, bus):
    await _scan(bus, sim, UUIDs=Variant("as", ["fcd2"]))
    assert await sim.advertise(ADAPTER, ADDR, service_data={"fcd2": b"\x40"})
    assert not await sim.advertise(ADAPTER, "D0:00:00:00:00:01", service_uuids=["180f"])


async def test_rssi_filter_drops_weaker_reports(sim, bus):
    await _scan(bus, sim, RSSI=Variant("n", -70))
    assert await sim.advertise(ADAPTER, ADDR, rssi=-70)
    assert not await sim.advertise(ADAPTER, "D0:00:00:00:00:01", rssi=-71)


async def test_pathloss_filter_needs_tx_power(sim, bus):
    await _scan(bus, sim, Pathloss=Variant("q", 60))
    assert await sim.advertise(ADAPTER, ADDR, rssi=-50, tx_power=4)
    assert not await sim.advertise(ADAPTER, "D0:00:00:00:00:01", rssi=-50)
    assert not await sim.advertise(ADAPTER, "D0:00:00:00:00:02", rssi=-70, tx_power=4)


async def test_a_regular_session_lifts_other_sessions_filters(sim, bus, new_client):
    other = await new_client()
    assert_ok(await adapter_call(other, "StartDiscovery"))
    await _scan(bus, sim, UUIDs=Variant("as", ["fcd2"]))
    assert await sim.advertise(ADAPTER, ADDR, service_uuids=["180f"])


async def test_scan_response_alone_does_not_create_a_device(sim, bus):
    await _scan(bus, sim, **LE_NODUP)
    assert not await sim.advertise(ADAPTER, ADDR, scan_response=True, name="Only SR")
    assert await sim.advertise(ADAPTER, ADDR)
    assert await sim.advertise(ADAPTER, ADDR, scan_response=True, name="Later SR")


async def test_remove_device_removes_the_object_from_root(sim, bus):
    rec = await _scan(bus, sim, **LE_NODUP)
    await sim.advertise(ADAPTER, ADDR)
    assert_ok(await adapter_call(bus, "RemoveDevice", "o", [PATH]))
    msgs = await rec.wait_for(lambda m: bool(removed(m, PATH)))
    assert removed(msgs, PATH)[0].body[1] == [
        "org.freedesktop.DBus.Introspectable",
        BLUEZ_DEVICE,
        "org.freedesktop.DBus.Properties",
    ]


async def test_remove_device_on_unpowered_adapter_is_not_ready(sim, bus):
    await _scan(bus, sim, **LE_NODUP)
    await sim.advertise(ADAPTER, ADDR)
    sim.adapter(ADAPTER).powered = False  # powered off without the power-off cleanup
    assert_error(await adapter_call(bus, "RemoveDevice", "o", [PATH]), "org.bluez.Error.NotReady")


async def test_power_off_removes_temporary_devices(sim, bus):
    await _scan(bus, sim, **LE_NODUP)
    await sim.advertise(ADAPTER, ADDR)
    await sim.set_powered(ADAPTER, False)
    assert sim.devices(ADAPTER) == []


async def test_trusted_device_is_permanent_and_survives_discovery_end(sim, bus):
    await _scan(bus, sim, **LE_NODUP)
    await sim.advertise(ADAPTER, ADDR, connectable=False)
    reply = await call(
        bus,
        BLUEZ_SERVICE,
        PATH,
        "org.freedesktop.DBus.Properties",
        "Set",
        "ssv",
        [BLUEZ_DEVICE, "Trusted", Variant("b", True)],
    )
    assert_ok(reply)
    assert_ok(await adapter_call(bus, "StopDiscovery"))
    await wait_until(lambda: not sim.is_discovering(ADAPTER))
    assert sim.device_path(ADAPTER, ADDR) == PATH
