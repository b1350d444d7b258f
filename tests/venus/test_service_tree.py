"""The service's own Venus tree and settings, end to end: what dbus-spy and the GUI see."""

from __future__ import annotations

from dbus_fast import Variant
from dbus_fast.aio import MessageBus

from ble_scanner.bus.calls import signal_rule
from ble_scanner.const import SCANNER_SERVICE
from ble_scanner.main import ScannerApp
from ble_scanner.testing.localsettings import LocalSettingsStandIn
from ble_scanner.testing.simulator import BluezSimulator
from ble_scanner.testing.testbus import TestBus
from tests import ingest
from tests.helpers import SignalRecorder, add_match, assert_ok, call, wait_until

BUSITEM = "com.victronenergy.BusItem"
MANDATORY = (
    "/Mgmt/ProcessName",
    "/Mgmt/ProcessVersion",
    "/Mgmt/Connection",
    "/DeviceInstance",
    "/ProductId",
    "/ProductName",
    "/FirmwareVersion",
    "/HardwareVersion",
    "/Connected",
    "/CustomName",
)


async def items(bus: MessageBus) -> dict[str, dict[str, Variant]]:
    (result,) = assert_ok(await call(bus, SCANNER_SERVICE, "/", BUSITEM, "GetItems"))
    return result  # type: ignore[no-any-return]


async def start(test_bus: TestBus) -> ScannerApp:
    app = ScannerApp(ingest.config(test_bus.address), bus_address=test_bus.address)
    assert await app.start() == 0
    return app


async def test_tree_has_every_item_before_and_after_scanning_starts(
    test_bus: TestBus, bluez: BluezSimulator, localsettings: LocalSettingsStandIn, bus: MessageBus
) -> None:
    app = await start(test_bus)
    try:

        async def scanning() -> bool:
            tree = await items(bus)
            state = tree.get("/Adapters/hci0/State", {}).get("Value")
            return state is not None and state.value == "scanning"

        await wait_until(scanning, what="/Adapters/hci0/State scanning")
        tree = await items(bus)
        for path in MANDATORY:
            assert path in tree, path
        assert tree["/DeviceInstance"]["Value"].value == 20
        assert tree["/Connected"]["Value"].value == 1
        assert tree["/Scanning"]["Value"].value == 1
        assert tree["/Mgmt/ProcessName"]["Value"].value == "dbus_ble_scanner.py"
        assert tree["/Adapters/hci0/Address"]["Value"].value == "00:1A:7D:DA:71:10"
        assert tree["/Adapters/hci0/Powered"]["Value"].value == 1
        assert localsettings.value("/Settings/Devices/ble_scanner/ClassAndVrmInstance") == "ble:20"
    finally:
        await app.stop()


async def test_adapter_state_change_reaches_items_changed(
    test_bus: TestBus, bluez: BluezSimulator, localsettings: LocalSettingsStandIn, bus: MessageBus
) -> None:
    app = await start(test_bus)
    try:
        await add_match(bus, signal_rule(sender=SCANNER_SERVICE, interface=BUSITEM))
        recorder = SignalRecorder(bus, member="ItemsChanged")
        await wait_until(lambda: app.status().scanning and bluez.is_discovering("hci0"))
        await bluez.set_powered("hci0", False)

        def powered_off(messages: list[object]) -> bool:
            for msg in recorder.messages:
                state = msg.body[0].get("/Adapters/hci0/State")
                if state is not None and state["Value"].value == "powered off":
                    return True
            return False

        await recorder.wait_for(powered_off, timeout=5, what="ItemsChanged with powered off")
    finally:
        await app.stop()


async def test_settings_apply_live(
    test_bus: TestBus, bluez: BluezSimulator, localsettings: LocalSettingsStandIn
) -> None:
    app = await start(test_bus)
    try:
        assert app.config.lost_timeout == 180.0
        assert localsettings.set_value("/Settings/BleScanner/LostTimeout", 42.0) == 0
        await wait_until(lambda: app.config.lost_timeout == 42.0, what="lost timeout applied")
        assert app.hub is not None and app.hub.cache.lost_timeout == 42.0
        assert localsettings.set_value("/Settings/BleScanner/ScanMode", "passive") == 0
        await wait_until(lambda: bool(bluez.monitors("hci0")), what="passive scanning")
        assert localsettings.set_value("/Settings/BleScanner/IgnoreCompanyIds", "0x004C, 76") == 0
        await wait_until(lambda: app.config.ignore_company_ids == frozenset({0x004C}))
    finally:
        await app.stop()


async def test_bad_setting_value_is_refused_and_changes_nothing(
    test_bus: TestBus, bluez: BluezSimulator, localsettings: LocalSettingsStandIn
) -> None:
    app = await start(test_bus)
    try:
        localsettings.set_value("/Settings/BleScanner/ScanMode", "turbo")
        localsettings.set_value("/Settings/BleScanner/LostTimeout", 33.0)
        await wait_until(lambda: app.config.lost_timeout == 33.0)
        assert app.config.scan_mode == "active"
    finally:
        await app.stop()


async def test_custom_name_is_writable_and_persisted(
    test_bus: TestBus, bluez: BluezSimulator, localsettings: LocalSettingsStandIn, bus: MessageBus
) -> None:
    app = await start(test_bus)
    try:
        (code,) = assert_ok(
            await call(
                bus,
                SCANNER_SERVICE,
                "/CustomName",
                BUSITEM,
                "SetValue",
                "v",
                [Variant("s", "Boat scanner")],
            )
        )
        assert code == 0
        await wait_until(
            lambda: localsettings.value("/Settings/BleScanner/CustomName") == "Boat scanner",
            what="persisted",
        )
    finally:
        await app.stop()


async def test_without_localsettings_the_defaults_apply_and_it_says_so_once(
    test_bus: TestBus, bluez: BluezSimulator, bus: MessageBus, caplog: object
) -> None:
    import logging

    assert hasattr(caplog, "records")
    with caplog.at_level(logging.INFO):  # type: ignore[attr-defined]
        app = await start(test_bus)
        try:
            await wait_until(lambda: app.status().scanning and bluez.is_discovering("hci0"))
            tree = await items(bus)
            assert tree["/DeviceInstance"]["Value"].value == 20
        finally:
            await app.stop()
    absent = [r for r in caplog.records if "localsettings" in r.getMessage()]  # type: ignore[attr-defined]
    assert len(absent) == 1, [r.getMessage() for r in absent]


async def test_opt_in_device_list_is_capped_and_withdrawn(
    test_bus: TestBus, bluez: BluezSimulator, localsettings: LocalSettingsStandIn, bus: MessageBus
) -> None:
    app = await start(test_bus)
    try:
        await wait_until(lambda: app.status().scanning and bluez.is_discovering("hci0"))
        for i in range(3):
            await bluez.advertise(
                "hci0", f"C0:11:22:33:44:0{i}", rssi=-60, manufacturer_data={0x02E1: bytes([i])}
            )
        await wait_until(lambda: app.status().devices == 3)
        assert not any(p.startswith("/Devices/0") for p in await items(bus))
        assert localsettings.set_value("/Settings/BleScanner/PublishDevicesMax", 2) == 0
        assert localsettings.set_value("/Settings/BleScanner/PublishDevices", 1) == 0

        async def published() -> set[str]:
            return {
                p for p in await items(bus) if p.startswith("/Devices/") and p.endswith("/Address")
            }

        async def two() -> bool:
            return await published() == {"/Devices/0/Address", "/Devices/1/Address"}

        await wait_until(two, what="two devices published")
        assert localsettings.set_value("/Settings/BleScanner/PublishDevices", 0) == 0

        async def none() -> bool:
            return not await published()

        await wait_until(none, what="the list withdrawn")
    finally:
        await app.stop()
