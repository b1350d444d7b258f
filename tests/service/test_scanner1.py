"""Scanner1 over the real bus: every member, filter key, emission rule, error and limit."""

from __future__ import annotations

import asyncio

import pytest
from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from ble_scanner.bus.calls import signal_rule
from ble_scanner.config import ScannerConfig
from ble_scanner.const import (
    ERROR_INVALID_ARGS,
    ERROR_LIMITS_EXCEEDED,
    SCANNER_ERROR_NOT_OWNER,
    SCANNER_ERROR_UNKNOWN_SUBSCRIPTION,
    SCANNER_INTERFACE,
)
from ble_scanner.main import ScannerApp
from ble_scanner.testing.simulator import BluezSimulator
from ble_scanner.testing.testbus import TestBus
from tests.conftest import connect, disconnect, start_scanner
from tests.helpers import (
    SignalRecorder,
    add_match,
    assert_error,
    assert_ok,
    call,
    scanner_call,
    wait_until,
)
from tests.service.conftest import body_of, get_devices, watch_broadcast

VICTRON = "C0:11:22:33:44:01"
RUUVI = "C0:11:22:33:44:02"
BTHOME = "C0:11:22:33:44:03"
BTHOME_UUID = "0000fcd2-0000-1000-8000-00805f9b34fb"
BATTERY_SERVICE = "0000180f-0000-1000-8000-00805f9b34fb"


async def advertise_scene(bluez: BluezSimulator) -> None:
    await bluez.advertise(
        "hci0",
        VICTRON,
        rssi=-60,
        manufacturer_data={0x02E1: b"\x10\x02\xa3"},
        name="SmartShunt HQ2",
    )
    await bluez.advertise(
        "hci0",
        RUUVI,
        address_type="random",
        rssi=-75,
        manufacturer_data={0x0499: b"\x05\x12\xfc"},
        name="Ruuvi 44CC",
    )
    await bluez.advertise(
        "hci0",
        BTHOME,
        rssi=-82,
        service_data={BTHOME_UUID: b"\x40\x02\xc4"},
        service_uuids=[BATTERY_SERVICE],
        tx_power=4,
    )


async def wait_present(bus: MessageBus, *addresses: str) -> dict[str, dict[str, Variant]]:
    found: dict[str, dict[str, Variant]] = {}

    async def present() -> bool:
        found.update(await get_devices(bus))
        return all(a in found for a in addresses)

    await wait_until(present, what=f"{addresses} in GetDiscoveredDevices")
    return found


# --- GetDiscoveredDevices ------------------------------------------------------


async def test_snapshot_is_empty_before_anything_advertises(
    scanner: ScannerApp, bus: MessageBus
) -> None:
    assert await get_devices(bus) == {}


async def test_snapshot_record_has_every_key_with_its_type(
    scanner: ScannerApp, bluez: BluezSimulator, bus: MessageBus
) -> None:
    await advertise_scene(bluez)
    devices = await wait_present(bus, VICTRON, RUUVI, BTHOME)
    victron = devices[VICTRON]
    types = {key: variant.signature for key, variant in victron.items()}
    assert types == {
        "Address": "s",
        "AddressType": "s",
        "Adapter": "s",
        "Path": "o",
        "Rssi": "n",
        "Name": "s",
        "ManufacturerData": "a{qay}",
        "ServiceData": "a{say}",
        "ServiceUuids": "as",
        "FirstSeen": "d",
        "LastSeen": "d",
    }
    assert victron["Address"].value == VICTRON
    assert victron["AddressType"].value == "public"
    assert victron["Adapter"].value == "hci0"
    assert victron["Path"].value == bluez.device_path("hci0", VICTRON)
    assert victron["Rssi"].value == -60
    assert victron["ManufacturerData"].value == {0x02E1: b"\x10\x02\xa3"}
    assert devices[RUUVI]["AddressType"].value == "random"
    bthome = devices[BTHOME]
    assert bthome["ServiceData"].value == {BTHOME_UUID: b"\x40\x02\xc4"}
    assert BATTERY_SERVICE in bthome["ServiceUuids"].value
    assert bthome["TxPower"].value == 4
    assert "Name" not in bthome
    assert victron["FirstSeen"].value <= victron["LastSeen"].value


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({"Addresses": Variant("as", [RUUVI.lower()])}, {RUUVI}),
        ({"ManufacturerIds": Variant("aq", [0x02E1, 0x0499])}, {VICTRON, RUUVI}),
        ({"ServiceUuids": Variant("as", ["180f"])}, {BTHOME}),
        ({"ServiceDataUuids": Variant("as", ["fcd2"])}, {BTHOME}),
        ({"Names": Variant("as", ["Smart*"])}, {VICTRON}),
        ({"MinRssi": Variant("n", -76)}, {VICTRON, RUUVI}),
        ({"MinRssi": Variant("n", -76), "ManufacturerIds": Variant("aq", [0x0499])}, {RUUVI}),
        ({"MaxAge": Variant("d", 60.0)}, {VICTRON, RUUVI, BTHOME}),
    ],
)
async def test_snapshot_filter_keys(
    scanner: ScannerApp,
    bluez: BluezSimulator,
    bus: MessageBus,
    flt: dict[str, Variant],
    expected: set[str],
) -> None:
    await advertise_scene(bluez)
    await wait_present(bus, VICTRON, RUUVI, BTHOME)
    assert set(await get_devices(bus, **flt)) == expected


async def test_snapshot_max_age_leaves_out_devices_heard_earlier(
    scanner: ScannerApp, bluez: BluezSimulator, bus: MessageBus
) -> None:
    await bluez.advertise("hci0", VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x10"})
    await wait_present(bus, VICTRON)
    assert scanner.hub is not None
    scanner.hub.cache.get(VICTRON).heard -= 30  # type: ignore[union-attr]
    await bluez.advertise("hci0", RUUVI, rssi=-60, manufacturer_data={0x0499: b"\x05"})
    await wait_present(bus, RUUVI)
    assert set(await get_devices(bus, MaxAge=Variant("d", 10.0))) == {RUUVI}


# --- errors and limits ----------------------------------------------------------


@pytest.mark.parametrize(
    ("member", "flt", "key"),
    [
        ("GetDiscoveredDevices", {"Colour": Variant("s", "red")}, "Colour"),
        ("GetDiscoveredDevices", {"MinRssi": Variant("i", -60)}, "MinRssi"),
        ("GetDiscoveredDevices", {"MinRssi": Variant("n", 100)}, "MinRssi"),
        ("GetDiscoveredDevices", {"Addresses": Variant("as", ["AA:BB"])}, "Addresses"),
        ("GetDiscoveredDevices", {"AllReports": Variant("b", True)}, "AllReports"),
        ("Subscribe", {"MaxAge": Variant("d", 1.0)}, "MaxAge"),
        ("Subscribe", {"KeepAlive": Variant("d", -5.0)}, "KeepAlive"),
        ("Subscribe", {"RssiDelta": Variant("n", -1)}, "RssiDelta"),
        ("Subscribe", {"Names": Variant("as", ["*?*?*?*?*?*"])}, "Names"),
        ("Subscribe", {"ServiceUuids": Variant("as", ["not-a-uuid"])}, "ServiceUuids"),
    ],
)
async def test_bad_filter_is_invalid_args_naming_the_key(
    scanner: ScannerApp, bus: MessageBus, member: str, flt: dict[str, Variant], key: str
) -> None:
    reply = await scanner_call(bus, member, "a{sv}", [flt])
    assert_error(reply, ERROR_INVALID_ARGS)
    assert key in reply.body[0]


@pytest.mark.parametrize(
    ("member", "signature", "body"),
    [
        ("GetDiscoveredDevices", "s", ["everything"]),
        ("Subscribe", "", []),
        ("Unsubscribe", "s", ["/Subscription/1"]),
    ],
)
async def test_wrong_signature_is_invalid_args(
    scanner: ScannerApp, bus: MessageBus, member: str, signature: str, body: list[object]
) -> None:
    reply = await scanner_call(bus, member, signature, body)
    assert_error(reply, ERROR_INVALID_ARGS)


async def test_more_than_64_list_entries_is_limits_exceeded(
    scanner: ScannerApp, bus: MessageBus
) -> None:
    reply = await scanner_call(
        bus, "Subscribe", "a{sv}", [{"ManufacturerIds": Variant("aq", list(range(65)))}]
    )
    assert_error(reply, ERROR_LIMITS_EXCEEDED)
    reply = await scanner_call(
        bus, "GetDiscoveredDevices", "a{sv}", [{"ManufacturerIds": Variant("aq", list(range(64)))}]
    )
    assert_ok(reply)


async def test_more_than_16_subscriptions_per_connection_is_limits_exceeded(
    scanner: ScannerApp, bus: MessageBus
) -> None:
    for _ in range(16):
        assert_ok(await scanner_call(bus, "Subscribe", "a{sv}", [{}]))
    assert_error(await scanner_call(bus, "Subscribe", "a{sv}", [{}]), ERROR_LIMITS_EXCEEDED)


async def test_more_than_256_subscriptions_in_total_is_limits_exceeded(
    scanner: ScannerApp, test_bus: TestBus
) -> None:
    clients = [await connect(test_bus) for _ in range(17)]
    try:
        for client in clients[:16]:
            for _ in range(16):
                assert_ok(
                    await scanner_call(
                        client, "Subscribe", "a{sv}", [{"Replay": Variant("b", False)}]
                    )
                )
        assert_error(
            await scanner_call(clients[16], "Subscribe", "a{sv}", [{}]), ERROR_LIMITS_EXCEEDED
        )
    finally:
        for client in clients:
            await disconnect(client)


async def test_unknown_method_is_unknown_method(scanner: ScannerApp, bus: MessageBus) -> None:
    assert_error(await scanner_call(bus, "Explode"), "org.freedesktop.DBus.Error.UnknownMethod")


async def test_bad_input_leaves_other_clients_served(
    scanner: ScannerApp, bluez: BluezSimulator, bus: MessageBus, test_bus: TestBus
) -> None:
    other = await connect(test_bus)
    try:
        recorder = SignalRecorder(other, member="DeviceDiscovered")
        (path,) = assert_ok(await scanner_call(other, "Subscribe", "a{sv}", [{}]))
        for bad in ({"Bogus": Variant("b", True)}, {"Names": Variant("as", ["x" * 1_000_000])}):
            assert_error(await scanner_call(bus, "Subscribe", "a{sv}", [bad]), ERROR_INVALID_ARGS)
        await bluez.advertise("hci0", VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x10"})
        await recorder.wait_for(lambda ms: body_of(ms, "DeviceDiscovered", path), what="delivery")
    finally:
        await disconnect(other)


# --- Subscribe / Unsubscribe ------------------------------------------------------


async def test_subscribe_returns_a_path_and_replays_present_devices(
    scanner: ScannerApp, bluez: BluezSimulator, bus: MessageBus
) -> None:
    await advertise_scene(bluez)
    await wait_present(bus, VICTRON, RUUVI, BTHOME)
    recorder = SignalRecorder(bus, member="DeviceDiscovered")
    (path,) = assert_ok(
        await scanner_call(
            bus, "Subscribe", "a{sv}", [{"ManufacturerIds": Variant("aq", [0x02E1])}]
        )
    )
    assert path.startswith("/Subscription/")
    await recorder.wait_for(lambda ms: body_of(ms, "DeviceDiscovered", path), what="replay")
    replayed = body_of(recorder.messages, "DeviceDiscovered", path)
    assert [b[0] for b in replayed] == [VICTRON]
    assert replayed[0][1]["ManufacturerData"].value == {0x02E1: b"\x10\x02\xa3"}
    assert all(m.destination == bus.unique_name for m in recorder.messages if m.path == path)


async def test_replay_false_sends_only_news(
    scanner: ScannerApp, bluez: BluezSimulator, bus: MessageBus
) -> None:
    await bluez.advertise("hci0", VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x10"})
    await wait_present(bus, VICTRON)
    recorder = SignalRecorder(bus, member="DeviceDiscovered")
    (path,) = assert_ok(
        await scanner_call(bus, "Subscribe", "a{sv}", [{"Replay": Variant("b", False)}])
    )
    await bluez.advertise("hci0", RUUVI, rssi=-60, manufacturer_data={0x0499: b"\x05"})
    await recorder.wait_for(lambda ms: body_of(ms, "DeviceDiscovered", path), what="news")
    assert [b[0] for b in body_of(recorder.messages, "DeviceDiscovered", path)] == [RUUVI]


async def test_subscription_signals_are_unicast_to_the_owner_only(
    scanner: ScannerApp, bluez: BluezSimulator, bus: MessageBus, test_bus: TestBus
) -> None:
    other = await connect(test_bus)
    try:
        await watch_broadcast(other)
        await add_match(other, signal_rule(interface=SCANNER_INTERFACE))
        snoop = SignalRecorder(other, member="DeviceDiscovered")
        mine = SignalRecorder(bus, member="DeviceDiscovered")
        (path,) = assert_ok(await scanner_call(bus, "Subscribe", "a{sv}", [{}]))
        await bluez.advertise("hci0", VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x10"})
        await mine.wait_for(lambda ms: body_of(ms, "DeviceDiscovered", path), what="unicast")
        await snoop.wait_for(lambda ms: body_of(ms, "DeviceDiscovered", "/"), what="broadcast")
        assert body_of(snoop.messages, "DeviceDiscovered", path) == []
    finally:
        await disconnect(other)


async def test_unsubscribe_stops_delivery(
    scanner: ScannerApp, bluez: BluezSimulator, bus: MessageBus
) -> None:
    await watch_broadcast(bus)
    recorder = SignalRecorder(bus, member="DeviceDiscovered")
    (path,) = assert_ok(await scanner_call(bus, "Subscribe", "a{sv}", [{}]))
    assert_ok(await scanner_call(bus, "Unsubscribe", "o", [path]))
    await bluez.advertise("hci0", VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x10"})
    # The broadcast of the same report arrives after any unicast would have.
    await recorder.wait_for(lambda ms: body_of(ms, "DeviceDiscovered", "/"), what="broadcast")
    assert body_of(recorder.messages, "DeviceDiscovered", path) == []
    assert len(scanner.hub.subscriptions) == 0  # type: ignore[union-attr]


async def test_unsubscribe_of_another_clients_subscription_is_refused(
    scanner: ScannerApp, bus: MessageBus, test_bus: TestBus
) -> None:
    other = await connect(test_bus)
    try:
        (path,) = assert_ok(await scanner_call(other, "Subscribe", "a{sv}", [{}]))
        assert_error(await scanner_call(bus, "Unsubscribe", "o", [path]), SCANNER_ERROR_NOT_OWNER)
        assert len(scanner.hub.subscriptions) == 1  # type: ignore[union-attr]
    finally:
        await disconnect(other)


async def test_unsubscribe_of_unknown_path_is_an_error(
    scanner: ScannerApp, bus: MessageBus
) -> None:
    assert_error(
        await scanner_call(bus, "Unsubscribe", "o", ["/Subscription/999"]),
        SCANNER_ERROR_UNKNOWN_SUBSCRIPTION,
    )


async def test_subscription_ends_when_its_owner_leaves_the_bus(
    scanner: ScannerApp, test_bus: TestBus
) -> None:
    client = await connect(test_bus)
    assert_ok(await scanner_call(client, "Subscribe", "a{sv}", [{}]))
    assert_ok(await scanner_call(client, "Subscribe", "a{sv}", [{}]))
    assert len(scanner.hub.subscriptions) == 2  # type: ignore[union-attr]
    await disconnect(client)
    took = await wait_until(lambda: len(scanner.hub.subscriptions) == 0, what="cleanup")  # type: ignore[union-attr]
    assert took < 1.0


# --- emission rules ---------------------------------------------------------------


async def subscribe_and_record(bus: MessageBus, **options: Variant) -> tuple[str, SignalRecorder]:
    recorder = SignalRecorder(bus, member="DeviceDiscovered")
    (path,) = assert_ok(await scanner_call(bus, "Subscribe", "a{sv}", [options]))
    return path, recorder


async def deliveries(recorder: SignalRecorder, path: str, count: int) -> list[list[object]]:
    await recorder.wait_for(
        lambda ms: len(body_of(ms, "DeviceDiscovered", path)) >= count, what=f"{count} deliveries"
    )
    return body_of(recorder.messages, "DeviceDiscovered", path)


_markers = iter(range(1, 1_000_000))


async def settle(bluez: BluezSimulator, recorder: SignalRecorder, path: str) -> None:
    """Send a marker device with new content and wait for it: what came before has arrived."""
    marker = "C0:FF:FF:FF:FF:FF"
    payload = next(_markers).to_bytes(4, "big")
    await bluez.advertise("hci0", marker, rssi=-50, manufacturer_data={0xFFFF: payload})
    await recorder.wait_for(
        lambda ms: any(
            b[0] == marker and b[1]["ManufacturerData"].value == {0xFFFF: payload}
            for b in body_of(ms, "DeviceDiscovered", path)
        ),
        what="marker",
    )


async def test_unchanged_reports_are_not_resent(
    scanner: ScannerApp, bluez: BluezSimulator, bus: MessageBus
) -> None:
    path, recorder = await subscribe_and_record(bus, KeepAlive=Variant("d", 0.0))
    for _ in range(5):
        await bluez.advertise("hci0", VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x10"})
    await settle(bluez, recorder, path)
    assert [b[0] for b in body_of(recorder.messages, "DeviceDiscovered", path)].count(VICTRON) == 1


async def test_content_change_is_sent(
    scanner: ScannerApp, bluez: BluezSimulator, bus: MessageBus
) -> None:
    path, recorder = await subscribe_and_record(bus)
    await bluez.advertise("hci0", VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x10"})
    await bluez.advertise("hci0", VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x11"})
    got = await deliveries(recorder, path, 2)
    assert [b[1]["ManufacturerData"].value for b in got] == [{0x02E1: b"\x10"}, {0x02E1: b"\x11"}]


async def test_name_change_is_sent(
    scanner: ScannerApp, bluez: BluezSimulator, bus: MessageBus
) -> None:
    path, recorder = await subscribe_and_record(bus)
    await bluez.advertise("hci0", VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x10"}, name="A")
    await bluez.advertise("hci0", VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x10"}, name="B")
    got = await deliveries(recorder, path, 2)
    assert [b[1]["Name"].value for b in got] == ["A", "B"]


async def test_rssi_delta_decides_whether_rssi_alone_is_news(
    scanner: ScannerApp, bluez: BluezSimulator, bus: MessageBus
) -> None:
    # BlueZ itself reports RSSI only on a change of 8 dBm or more.
    path, recorder = await subscribe_and_record(
        bus, RssiDelta=Variant("n", 10), KeepAlive=Variant("d", 0.0)
    )
    await bluez.advertise("hci0", VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x10"})
    await bluez.advertise("hci0", VICTRON, rssi=-69, manufacturer_data={0x02E1: b"\x10"})  # 9: no
    await bluez.advertise("hci0", VICTRON, rssi=-80, manufacturer_data={0x02E1: b"\x10"})  # 20: yes
    await settle(bluez, recorder, path)
    rssis = [
        b[1]["Rssi"].value
        for b in body_of(recorder.messages, "DeviceDiscovered", path)
        if b[0] == VICTRON
    ]
    assert rssis == [-60, -80]


async def test_keep_alive_resends_an_unchanged_advertiser(
    scanner: ScannerApp, bluez: BluezSimulator, bus: MessageBus
) -> None:
    path, recorder = await subscribe_and_record(bus, KeepAlive=Variant("d", 0.3))
    await bluez.advertise("hci0", VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x10"})
    await deliveries(recorder, path, 1)
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def resent() -> bool:
        await bluez.advertise("hci0", VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x10"})
        return len(body_of(recorder.messages, "DeviceDiscovered", path)) >= 2

    await wait_until(resent, interval=0.05, what="keep-alive")
    assert loop.time() - start >= 0.3


async def test_all_reports_gives_every_report(
    scanner: ScannerApp, bluez: BluezSimulator, bus: MessageBus
) -> None:
    path, recorder = await subscribe_and_record(bus, AllReports=Variant("b", True))
    for _ in range(4):
        await bluez.advertise("hci0", VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x10"})
    got = await deliveries(recorder, path, 4)
    assert [b[0] for b in got] == [VICTRON] * 4


async def test_subscription_filter_selects_its_slice(
    scanner: ScannerApp, bluez: BluezSimulator, bus: MessageBus
) -> None:
    path, recorder = await subscribe_and_record(bus, ServiceDataUuids=Variant("as", ["fcd2"]))
    await advertise_scene(bluez)
    await wait_present(bus, VICTRON, RUUVI, BTHOME)
    await deliveries(recorder, path, 1)
    assert [b[0] for b in body_of(recorder.messages, "DeviceDiscovered", path)] == [BTHOME]


# --- broadcast and DeviceLost -------------------------------------------------------


async def test_broadcast_device_discovered_and_lost(
    test_bus: TestBus, bluez: BluezSimulator, bus: MessageBus
) -> None:
    app = await start_scanner(test_bus, ScannerConfig(lost_timeout=1.0))
    try:
        await watch_broadcast(bus)
        recorder = SignalRecorder(bus, path="/")
        (path,) = assert_ok(await scanner_call(bus, "Subscribe", "a{sv}", [{}]))
        sub_recorder = SignalRecorder(bus, path=path)
        await wait_until(
            lambda: (
                app.bus.unique_name in bluez.sessions("hci0")  # type: ignore[union-attr]
                and bluez.is_discovering("hci0")
            )
        )
        loop = asyncio.get_running_loop()
        # The service hears it after this and before the test sees DeviceDiscovered
        # (how much after depends on the machine's load): bound the loss from both.
        sent = loop.time()
        await bluez.advertise("hci0", VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x10"})
        await recorder.wait_for(lambda ms: body_of(ms, "DeviceDiscovered"), what="discovered")
        heard = loop.time()
        await recorder.wait_for(lambda ms: body_of(ms, "DeviceLost"), timeout=5, what="lost")
        assert body_of(recorder.messages, "DeviceLost") == [[VICTRON]]
        assert loop.time() - sent >= 1.0
        assert loop.time() - heard <= 2.5
        await sub_recorder.wait_for(
            lambda ms: body_of(ms, "DeviceLost"), what="lost on subscription"
        )
        assert await get_devices(bus) == {}
    finally:
        await app.stop()


async def test_device_silent_in_bluez_stays_present_until_our_lost_timeout(
    scanner: ScannerApp, bluez: BluezSimulator, bus: MessageBus
) -> None:
    """BlueZ drops a silent device's object after 30 s; presence is ours to decide."""
    await bluez.advertise("hci0", VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x10"})
    await wait_present(bus, VICTRON)
    path = bluez.device_path("hci0", VICTRON)
    assert path is not None
    reply = await bluez_remove_device(bus, path)
    assert reply.message_type == MessageType.METHOD_RETURN, reply.body
    await wait_until(lambda: bluez.device_path("hci0", VICTRON) is None)
    assert VICTRON in await get_devices(bus)


async def bluez_remove_device(bus: MessageBus, path: str) -> Message:
    return await call(
        bus, "org.bluez", "/org/bluez/hci0", "org.bluez.Adapter1", "RemoveDevice", "o", [path]
    )


async def test_get_status(scanner: ScannerApp, bluez: BluezSimulator, bus: MessageBus) -> None:
    await bluez.advertise("hci0", VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x10"})
    await wait_present(bus, VICTRON)
    (status,) = assert_ok(await scanner_call(bus, "GetStatus"))
    assert status["Scanning"].value is True
    assert status["Devices"].value == 1
    assert status["Shed"].value == 0
    assert status["LostTimeout"].value == 180.0
    hci0 = status["Adapters"].value["hci0"]
    assert hci0["State"].value == "scanning"
    assert hci0["Session"].value is True
    assert hci0["Address"].value == "00:1A:7D:DA:71:10"
