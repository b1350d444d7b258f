"""The localsettings stand-in answers as localsettings.py does, so tests of the client mean something."""

from __future__ import annotations

from typing import Any

import pytest
from dbus_fast import Message, Variant
from dbus_fast.aio import MessageBus

from ble_scanner.bus.calls import signal_rule
from ble_scanner.testing.localsettings import LocalSettingsStandIn, Setting
from ble_scanner.testing.testbus import TestBus
from ble_scanner.venus.const import BUSITEM_INTERFACE, SETTINGS_INTERFACE, SETTINGS_SERVICE
from tests.conftest import connect, disconnect
from tests.helpers import SignalRecorder, add_match, assert_error, assert_ok, call


async def add_settings(
    bus: MessageBus, *entries: dict[str, Variant], path: str = "/"
) -> list[dict[str, Variant]]:
    reply = await call(
        bus, SETTINGS_SERVICE, path, SETTINGS_INTERFACE, "AddSettings", "aa{sv}", [list(entries)]
    )
    assert reply.signature == "aa{sv}"
    (results,) = assert_ok(reply)
    return results  # type: ignore[no-any-return]


def entry(path: str, default: Variant, **extra: Variant) -> dict[str, Variant]:
    return {"path": Variant("s", path), "default": default, **extra}


async def item(
    bus: MessageBus, path: str, member: str, sig: str = "", body: list[Any] | None = None
) -> Message:
    return await call(bus, SETTINGS_SERVICE, path, BUSITEM_INTERFACE, member, sig, body)


async def test_addsettings_replies_path_error_and_value_per_entry(
    bus: MessageBus, standin: LocalSettingsStandIn
) -> None:
    results = await add_settings(
        bus,
        entry("/Settings/Test/Int", Variant("i", 5), min=Variant("i", 0), max=Variant("i", 10)),
        entry("/Settings/Test/Float", Variant("d", 1.5)),
        entry("/Settings/Test/Text", Variant("s", "x")),
    )
    assert results == [
        {
            "path": Variant("s", "/Settings/Test/Int"),
            "error": Variant("i", 0),
            "value": Variant("i", 5),
        },
        {
            "path": Variant("s", "/Settings/Test/Float"),
            "error": Variant("i", 0),
            "value": Variant("d", 1.5),
        },
        {
            "path": Variant("s", "/Settings/Test/Text"),
            "error": Variant("i", 0),
            "value": Variant("s", "x"),
        },
    ]


async def test_adding_an_existing_setting_keeps_the_stored_value(
    bus: MessageBus, standin: LocalSettingsStandIn
) -> None:
    await add_settings(bus, entry("/Settings/Test/Keep", Variant("i", 1)))
    assert assert_ok(
        await item(bus, "/Settings/Test/Keep", "SetValue", "v", [Variant("i", 7)])
    ) == [0]
    (result,) = await add_settings(bus, entry("/Settings/Test/Keep", Variant("i", 1)))
    assert result["value"] == Variant("i", 7)


@pytest.mark.parametrize(
    ("definition", "code"),
    [
        (entry("/Settings/Test/_Hidden", Variant("i", 1)), -2),
        (entry("/Settings/Test/Bool", Variant("b", True)), -3),
        (entry("/Settings/Test/Unsigned", Variant("u", 1)), -3),
        ({"path": Variant("i", 5), "default": Variant("i", 1)}, -4),
        (
            entry(
                "/Settings/Test/Range", Variant("i", 11), min=Variant("i", 0), max=Variant("i", 10)
            ),
            -7,
        ),
        (entry("/Settings/Devices", Variant("i", 1)), -8),
        (entry("/Elsewhere/Thing", Variant("i", 1)), -9),
    ],
    ids=[
        "underscore",
        "bool",
        "uint32",
        "path-not-string",
        "out-of-range",
        "group",
        "not-in-settings",
    ],
)
async def test_addsettings_error_codes_match_localsettings(
    bus: MessageBus, standin: LocalSettingsStandIn, definition: dict[str, Variant], code: int
) -> None:
    (result,) = await add_settings(bus, definition)
    assert result["error"] == Variant("i", code)
    assert "value" not in result


async def test_adding_with_another_type_is_type_differs(
    bus: MessageBus, standin: LocalSettingsStandIn
) -> None:
    await add_settings(bus, entry("/Settings/Test/Typed", Variant("i", 1)))
    (result,) = await add_settings(bus, entry("/Settings/Test/Typed", Variant("s", "1")))
    assert result["error"] == Variant("i", -5)


async def test_addsettings_on_the_settings_group_takes_relative_paths(
    bus: MessageBus, standin: LocalSettingsStandIn
) -> None:
    (result,) = await add_settings(bus, entry("Test/Relative", Variant("i", 3)), path="/Settings")
    assert result["error"] == Variant("i", 0)
    assert standin.value("/Settings/Test/Relative") == 3


async def test_setvalue_converts_to_the_setting_type_and_checks_limits(
    bus: MessageBus, standin: LocalSettingsStandIn
) -> None:
    await add_settings(
        bus,
        entry("/Settings/Test/Limited", Variant("i", 5), min=Variant("i", 1), max=Variant("i", 10)),
    )
    path = "/Settings/Test/Limited"
    assert assert_ok(await item(bus, path, "SetValue", "v", [Variant("i", 11)])) == [-1]
    assert assert_ok(await item(bus, path, "SetValue", "v", [Variant("s", "abc")])) == [-1]
    assert assert_ok(await item(bus, path, "SetValue", "v", [Variant("s", "8")])) == [0]
    assert assert_ok(await item(bus, path, "GetValue")) == [Variant("i", 8)]
    assert assert_ok(await item(bus, path, "GetText")) == ["8"]
    assert assert_ok(await item(bus, path, "GetMin")) == [Variant("i", 1)]
    assert assert_ok(await item(bus, path, "GetMax")) == [Variant("i", 10)]
    assert assert_ok(await item(bus, path, "GetDefault")) == [Variant("i", 5)]


async def test_a_change_is_sent_as_properties_changed_on_the_setting_path(
    bus: MessageBus, standin: LocalSettingsStandIn
) -> None:
    await add_settings(bus, entry("/Settings/Test/Signal", Variant("s", "a")))
    await add_match(bus, signal_rule(interface=BUSITEM_INTERFACE, path="/Settings/Test/Signal"))
    recorder = SignalRecorder(bus, member="PropertiesChanged", path="/Settings/Test/Signal")
    assert assert_ok(
        await item(bus, "/Settings/Test/Signal", "SetValue", "v", [Variant("s", "b")])
    ) == [0]
    await recorder.wait_for(lambda m: bool(m), what="PropertiesChanged")
    assert recorder.messages[0].body[0] == {"Value": Variant("s", "b"), "Text": Variant("s", "b")}
    assert recorder.messages[0].signature == "a{sv}"
    recorder.close()


async def test_getitems_lists_every_setting_with_its_full_path(
    bus: MessageBus, standin: LocalSettingsStandIn
) -> None:
    await add_settings(
        bus,
        entry("/Settings/Test/A", Variant("i", 1)),
        entry("/Settings/Test/B", Variant("s", "b")),
    )
    (items,) = assert_ok(await item(bus, "/", "GetItems"))
    assert items["/Settings/Test/A"]["Value"] == Variant("i", 1)
    assert items["/Settings/Test/B"]["Text"] == Variant("s", "b")
    (below,) = assert_ok(await item(bus, "/Settings/Test", "GetValue"))
    assert below.value == {"A": Variant("i", 1), "B": Variant("s", "b")}


async def test_a_taken_vrm_instance_moves_to_the_next_free_one_of_its_class(
    test_bus: TestBus,
) -> None:
    taken = {
        "/Settings/Devices/other/ClassAndVrmInstance": Setting("s", "ble:20", "ble:20"),
        "/Settings/Devices/third/ClassAndVrmInstance": Setting("s", "ble:21", "ble:21"),
        "/Settings/Devices/tank/ClassAndVrmInstance": Setting("s", "tank:22", "tank:22"),
    }
    standin = await LocalSettingsStandIn.start(test_bus.address, settings=taken)
    try:
        client = await connect(test_bus)
        (result,) = await add_settings(
            client, entry("/Settings/Devices/mine/ClassAndVrmInstance", Variant("s", "ble:20"))
        )
        assert result["value"] == Variant("s", "ble:22")
        (result,) = await add_settings(
            client, entry("/Settings/Devices/bad/ClassAndVrmInstance", Variant("s", "ble"))
        )
        assert result["error"] == Variant("i", -6)
        path = "/Settings/Devices/mine/ClassAndVrmInstance"
        assert assert_ok(await item(client, path, "SetValue", "v", [Variant("s", "ble:25")])) == [0]
        assert standin.value(path) == "ble:25"
        assert assert_ok(await item(client, path, "SetValue", "v", [Variant("s", "ble:20")])) == [0]
        assert standin.value(path) == "ble:22"
        await disconnect(client)
    finally:
        await standin.stop()


async def test_unknown_path_is_unknown_object(
    bus: MessageBus, standin: LocalSettingsStandIn
) -> None:
    assert_error(
        await item(bus, "/Settings/Nope/Nothing", "GetValue"),
        "org.freedesktop.DBus.Error.UnknownObject",
    )
