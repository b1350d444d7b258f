"""The settings client against the localsettings stand-in: create, read, follow, validate, persist."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from dbus_fast import Variant
from dbus_fast.aio import MessageBus

from ble_scanner.config import SETTINGS, ScannerConfig, add_settings_definitions
from ble_scanner.testing.localsettings import LocalSettingsStandIn, Setting
from ble_scanner.testing.testbus import TestBus
from ble_scanner.venus.const import BUSITEM_INTERFACE, SETTINGS_SERVICE
from ble_scanner.venus.settings import SettingsClient
from tests.conftest import connect, disconnect
from tests.helpers import assert_ok, call, wait_until

PREFIX = "/Settings/BleScanner"


class Recorder:
    def __init__(self) -> None:
        self.changes: list[tuple[ScannerConfig, frozenset[str]]] = []

    def __call__(self, values: ScannerConfig, fields: frozenset[str]) -> None:
        self.changes.append((values, fields))


@pytest_asyncio.fixture
async def client_bus(test_bus: TestBus) -> AsyncIterator[MessageBus]:
    connection = await connect(test_bus)
    try:
        yield connection
    finally:
        await disconnect(connection)


async def set_remote(bus: MessageBus, name: str, value: Variant) -> int:
    """What the GUI does: SetValue on the setting in localsettings."""
    reply = await call(
        bus, SETTINGS_SERVICE, f"{PREFIX}/{name}", BUSITEM_INTERFACE, "SetValue", "v", [value]
    )
    (code,) = assert_ok(reply)
    return int(code)


async def test_start_creates_every_setting_with_its_default(
    client_bus: MessageBus, standin: LocalSettingsStandIn
) -> None:
    client = SettingsClient(client_bus)
    assert await client.start()
    assert client.present
    assert client.values == ScannerConfig()
    for entry in add_settings_definitions():
        stored = standin.settings[str(entry["path"])]
        assert (stored.default, stored.min, stored.max) == (
            entry["default"],
            entry.get("min"),
            entry.get("max"),
        )
    assert {path for path in standin.settings if path.startswith(PREFIX)} == {
        setting.path for setting in SETTINGS if setting.path is not None
    }
    assert standin.settings[f"{PREFIX}/LostTimeout"].type == "f"
    assert standin.settings[f"{PREFIX}/CacheSize"].type == "i"
    assert standin.settings[f"{PREFIX}/PublishDevices"].type == "i"  # 0/1, never a boolean
    await client.close()


async def test_stored_values_win_over_defaults(test_bus: TestBus, client_bus: MessageBus) -> None:
    stored = {
        f"{PREFIX}/LostTimeout": Setting("f", 300.0, 180.0, 10.0, 86400.0),
        f"{PREFIX}/Adapters": Setting("s", "hci1, hci0", ""),
        f"{PREFIX}/IgnoreCompanyIds": Setting("s", "0x004C,89", ""),
    }
    standin = await LocalSettingsStandIn.start(test_bus.address, settings=stored)
    try:
        client = SettingsClient(client_bus)
        assert await client.start()
        assert client.values.lost_timeout == 300.0
        assert client.values.adapters == frozenset({"hci1", "hci0"})
        assert client.values.ignore_company_ids == frozenset({0x004C, 89})
        await client.close()
    finally:
        await standin.stop()


async def test_a_change_in_localsettings_applies_live(
    bus: MessageBus, client_bus: MessageBus, standin: LocalSettingsStandIn
) -> None:
    changes = Recorder()
    client = SettingsClient(client_bus, on_change=changes)
    await client.start()
    assert await set_remote(bus, "Adapters", Variant("s", "hci1")) == 0
    await wait_until(lambda: client.values.adapters == {"hci1"}, what="Adapters to apply")
    assert changes.changes[-1][1] == frozenset({"adapters"})
    assert await set_remote(bus, "BroadcastKeepAlive", Variant("d", 0.0)) == 0
    await wait_until(lambda: client.values.broadcast_keep_alive == 0.0, what="keep-alive off")
    await client.close()


async def test_a_bad_value_is_logged_and_the_previous_value_kept(
    bus: MessageBus,
    client_bus: MessageBus,
    standin: LocalSettingsStandIn,
    caplog: pytest.LogCaptureFixture,
) -> None:
    changes = Recorder()
    client = SettingsClient(client_bus, on_change=changes)
    await client.start()
    assert await set_remote(bus, "ScanMode", Variant("s", "passive")) == 0
    await wait_until(lambda: client.values.scan_mode == "passive", what="passive")
    with caplog.at_level(logging.WARNING, logger="ble_scanner.venus.settings"):
        assert await set_remote(bus, "ScanMode", Variant("s", "turbo")) == 0
        assert await set_remote(bus, "IgnoreCompanyIds", Variant("s", "0x4C, apple")) == 0
        await wait_until(lambda: len(caplog.records) >= 2, what="two warnings")
    assert client.values.scan_mode == "passive"
    assert client.values.ignore_company_ids == frozenset()
    messages = [r.getMessage() for r in caplog.records]
    assert any("ScanMode" in m and "'turbo'" in m and "keeping 'passive'" in m for m in messages), (
        messages
    )
    assert any("IgnoreCompanyIds" in m and "'apple' is not a company id" in m for m in messages), (
        messages
    )
    assert [fields for _, fields in changes.changes] == [frozenset({"scan_mode"})]
    await client.close()


async def test_a_stored_value_outside_our_range_falls_back_to_the_default(
    test_bus: TestBus, client_bus: MessageBus, caplog: pytest.LogCaptureFixture
) -> None:
    # An older release (or a hand edit) stored a cache size we no longer accept.
    stored = {f"{PREFIX}/CacheSize": Setting("i", 5, 10000)}
    standin = await LocalSettingsStandIn.start(test_bus.address, settings=stored)
    try:
        client = SettingsClient(client_bus)
        with caplog.at_level(logging.WARNING, logger="ble_scanner.venus.settings"):
            assert await client.start()
        assert client.values.cache_size == ScannerConfig().cache_size
        assert any(
            "CacheSize" in r.getMessage() and "outside 100..50000" in r.getMessage()
            for r in caplog.records
        )
        await client.close()
    finally:
        await standin.stop()


async def test_a_range_stored_by_an_older_release_is_widened_to_the_tables(
    test_bus: TestBus, bus: MessageBus, client_bus: MessageBus
) -> None:
    # Before the settings table, BroadcastKeepAlive was created with 0..3600.
    stored = {f"{PREFIX}/BroadcastKeepAlive": Setting("f", 60.0, 60.0, 0.0, 3600.0)}
    standin = await LocalSettingsStandIn.start(test_bus.address, settings=stored)
    try:
        client = SettingsClient(client_bus)
        assert await client.start()
        assert standin.settings[f"{PREFIX}/BroadcastKeepAlive"].max == 86400.0
        assert await set_remote(bus, "BroadcastKeepAlive", Variant("d", 7200.0)) == 0
        await wait_until(
            lambda: client.values.broadcast_keep_alive == 7200.0, what="two hours to apply"
        )
        await client.close()
    finally:
        await standin.stop()


async def test_a_value_localsettings_accepts_but_the_table_refuses_is_ignored(
    bus: MessageBus,
    client_bus: MessageBus,
    standin: LocalSettingsStandIn,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """localsettings reads a minimum of 0 as "no minimum": the table is what holds the line."""
    client = SettingsClient(client_bus)
    await client.start()
    with caplog.at_level(logging.WARNING, logger="ble_scanner.venus.settings"):
        assert await set_remote(bus, "BroadcastKeepAlive", Variant("d", -5.0)) == 0
        await wait_until(lambda: len(caplog.records) >= 1, what="a warning")
    assert client.values.broadcast_keep_alive == ScannerConfig().broadcast_keep_alive
    (message,) = [r.getMessage() for r in caplog.records]
    assert "BroadcastKeepAlive" in message and "-5 is outside 0..86400 s" in message, message
    await client.close()


async def test_set_value_refuses_what_the_table_refuses_and_sends_nothing(
    client_bus: MessageBus, standin: LocalSettingsStandIn
) -> None:
    client = SettingsClient(client_bus)
    await client.start()
    with pytest.raises(ValueError, match=r"outside 10\.\.86400"):
        await client.set_value("lost_timeout", 5.0)
    with pytest.raises(ValueError, match="not kept in localsettings"):
        await client.set_value("min_rssi", -80)
    assert standin.value(f"{PREFIX}/LostTimeout") == 180.0
    assert await client.set_value("lost_timeout", 300.0)
    await wait_until(lambda: client.values.lost_timeout == 300.0, what="300 s to come back")
    await client.close()


async def test_a_setting_stored_with_another_type_keeps_the_default(
    test_bus: TestBus, client_bus: MessageBus, caplog: pytest.LogCaptureFixture
) -> None:
    stored = {f"{PREFIX}/LostTimeout": Setting("s", "soon", "soon")}
    standin = await LocalSettingsStandIn.start(test_bus.address, settings=stored)
    try:
        client = SettingsClient(client_bus)
        with caplog.at_level(logging.ERROR, logger="ble_scanner.venus.settings"):
            assert await client.start()
        assert client.values.lost_timeout == ScannerConfig().lost_timeout
        assert any(
            "LostTimeout" in r.getMessage() and "error -5" in r.getMessage() for r in caplog.records
        )
        await client.close()
    finally:
        await standin.stop()


async def test_without_localsettings_defaults_apply_and_the_log_says_so_once(
    client_bus: MessageBus, caplog: pytest.LogCaptureFixture
) -> None:
    defaults = ScannerConfig(lost_timeout=60.0)  # e.g. from the command line
    client = SettingsClient(client_bus, defaults=defaults)
    with caplog.at_level(logging.WARNING, logger="ble_scanner.venus.settings"):
        assert not await client.start(wait=0.2)
        assert await client.allocate_device_instance() == 20
        assert not await client.set_custom_name("Galley")
    assert client.values == ScannerConfig(lost_timeout=60.0, custom_name="Galley")
    absent = [r for r in caplog.records if "not on the bus" in r.getMessage()]
    assert len(absent) == 1
    await client.close()


async def test_localsettings_that_appears_later_is_read_then(
    test_bus: TestBus, client_bus: MessageBus
) -> None:
    client = SettingsClient(client_bus)
    assert not await client.start(wait=0.1)
    stored = {f"{PREFIX}/CacheSize": Setting("i", 2000, 10000, 100, 50000)}
    standin = await LocalSettingsStandIn.start(test_bus.address, settings=stored)
    try:
        await wait_until(lambda: client.values.cache_size == 2000, what="settings read on arrival")
        assert client.present
        assert f"{PREFIX}/LostTimeout" in standin.settings
    finally:
        await client.close()
        await standin.stop()


async def test_custom_name_is_persisted_in_localsettings(
    test_bus: TestBus, client_bus: MessageBus, standin: LocalSettingsStandIn
) -> None:
    client = SettingsClient(client_bus)
    await client.start()
    assert await client.set_custom_name("Engine room")
    await wait_until(
        lambda: client.values.custom_name == "Engine room", what="the name to come back"
    )
    assert standin.value(f"{PREFIX}/CustomName") == "Engine room"
    await client.close()
    # A restarted scanner reads it back.
    again = SettingsClient(await connect(test_bus))
    assert await again.start()
    assert again.values.custom_name == "Engine room"
    await again.close()
    await disconnect(again._bus)


async def test_device_instance_is_allocated_past_taken_ones(
    test_bus: TestBus, client_bus: MessageBus
) -> None:
    stored = {
        "/Settings/Devices/someone/ClassAndVrmInstance": Setting("s", "ble:20", "ble:20"),
    }
    standin = await LocalSettingsStandIn.start(test_bus.address, settings=stored)
    try:
        client = SettingsClient(client_bus)
        await client.start()
        assert await client.allocate_device_instance() == 21
        assert standin.value("/Settings/Devices/ble_scanner/ClassAndVrmInstance") == "ble:21"
        await client.close()
    finally:
        await standin.stop()


async def test_a_stored_device_instance_of_0_is_moved_off_0(
    test_bus: TestBus, client_bus: MessageBus
) -> None:
    stored = {"/Settings/Devices/ble_scanner/ClassAndVrmInstance": Setting("s", "ble:0", "ble:20")}
    standin = await LocalSettingsStandIn.start(test_bus.address, settings=stored)
    try:
        seen: list[int] = []
        client = SettingsClient(client_bus, on_device_instance=seen.append)
        await client.start()
        await client.allocate_device_instance()
        await wait_until(lambda: client.device_instance == 20, what="instance moved to 20")
        assert standin.value("/Settings/Devices/ble_scanner/ClassAndVrmInstance") == "ble:20"
        assert 0 not in seen
        await client.close()
    finally:
        await standin.stop()
