"""The BusItem tree over a real bus: the velib protocol as dbus-spy, flashmq and DbusMonitor see it."""

from __future__ import annotations

import asyncio
import itertools
import time

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from ble_scanner.bus.calls import signal_rule
from ble_scanner.venus.const import BUSITEM_INTERFACE
from tests.helpers import SignalRecorder, add_match, assert_error, assert_ok, call
from tests.venus.conftest import SERVICE, TreeService

ITEMS_CHANGED_RULE = signal_rule(interface=BUSITEM_INTERFACE, member="ItemsChanged", path="/")


async def busitem(
    bus: MessageBus, path: str, member: str, sig: str = "", body: list[object] | None = None
) -> Message:
    return await call(bus, SERVICE, path, BUSITEM_INTERFACE, member, sig, body)


async def value(bus: MessageBus, path: str) -> Variant:
    (v,) = assert_ok(await busitem(bus, path, "GetValue"))
    assert isinstance(v, Variant)
    return v


async def items_changed(bus: MessageBus) -> SignalRecorder:
    await add_match(bus, ITEMS_CHANGED_RULE)
    return SignalRecorder(bus, member="ItemsChanged", path="/")


def merged(recorder: SignalRecorder) -> dict[str, dict[str, Variant]]:
    out: dict[str, dict[str, Variant]] = {}
    for message in recorder.of("ItemsChanged"):
        out.update(message.body[0])
    return out


async def test_getitems_on_root_lists_every_item_with_value_and_text(
    bus: MessageBus, tree_service: TreeService
) -> None:
    reply = await busitem(bus, "/", "GetItems")
    assert reply.signature == "a{sa{sv}}"
    (items,) = assert_ok(reply)
    assert set(items) == set(tree_service.tree)
    assert items["/DeviceInstance"]["Value"] == Variant("i", 20)
    assert items["/DeviceInstance"]["Text"] == Variant("s", "20")
    assert items["/ProductId"]["Text"] == Variant("s", "0xA1FF")
    assert items["/Stats/ReportsPerSecond"]["Value"] == Variant("d", 0.0)
    assert items["/Stats/ReportsPerSecond"]["Text"] == Variant("s", "0.0/s")


async def test_each_item_answers_getvalue_and_gettext(
    bus: MessageBus, tree_service: TreeService
) -> None:
    assert await value(bus, "/Mgmt/ProcessName") == Variant("s", "dbus_ble_scanner.py")
    assert await value(bus, "/Adapters/hci0/State") == Variant("s", "scanning")
    assert assert_ok(await busitem(bus, "/ProductId", "GetText")) == ["0xA1FF"]
    assert assert_ok(await busitem(bus, "/Connected", "GetText")) == ["1"]


async def test_invalid_value_is_an_empty_int_array_with_dashes_as_text(
    bus: MessageBus, tree_service: TreeService
) -> None:
    assert await value(bus, "/Adapters/hci0/Powered") == Variant("ai", [])
    assert assert_ok(await busitem(bus, "/Adapters/hci0/Powered", "GetText")) == ["---"]
    (items,) = assert_ok(await busitem(bus, "/", "GetItems"))
    assert items["/Adapters/hci0/Powered"]["Value"] == Variant("ai", [])


async def test_root_getvalue_is_the_dict_of_all_values_without_leading_slash(
    bus: MessageBus, tree_service: TreeService
) -> None:
    root = await value(bus, "/")
    assert root.signature == "a{sv}"
    assert set(root.value) == {p[1:] for p in tree_service.tree}
    assert root.value["Mgmt/ProcessVersion"] == Variant("s", "0.1.0")
    (text,) = assert_ok(await busitem(bus, "/", "GetText"))
    assert text.value["ProductId"] == "0xA1FF"


async def test_intermediate_node_getvalue_is_the_dict_below_it(
    bus: MessageBus, tree_service: TreeService
) -> None:
    node = await value(bus, "/Adapters/hci0")
    assert node.value == {
        "Address": Variant("s", "00:11:22:33:44:55"),
        "State": Variant("s", "scanning"),
        "Powered": Variant("ai", []),
    }
    assert (await value(bus, "/Adapters")).value.keys() == {
        "hci0/Address",
        "hci0/State",
        "hci0/Powered",
    }


async def test_setvalue_on_a_read_only_item_returns_1(
    bus: MessageBus, tree_service: TreeService
) -> None:
    reply = await busitem(bus, "/ProductName", "SetValue", "v", [Variant("s", "other")])
    assert assert_ok(reply) == [1]
    assert tree_service.tree["/ProductName"] == "BLE scanner"


async def test_setvalue_of_the_wrong_type_returns_1(
    bus: MessageBus, tree_service: TreeService
) -> None:
    assert assert_ok(await busitem(bus, "/CustomName", "SetValue", "v", [Variant("i", 5)])) == [1]
    assert assert_ok(
        await busitem(bus, "/Devices/Count", "SetValue", "v", [Variant("s", "x")])
    ) == [1]
    assert assert_ok(
        await busitem(bus, "/Devices/Count", "SetValue", "v", [Variant("d", 1.5)])
    ) == [1]
    assert assert_ok(
        await busitem(bus, "/Devices/Count", "SetValue", "v", [Variant("b", True)])
    ) == [1]
    assert tree_service.changes_seen_by_onchange == []


async def test_setvalue_rejected_by_onchange_returns_2(
    bus: MessageBus, tree_service: TreeService
) -> None:
    reply = await busitem(bus, "/CustomName", "SetValue", "v", [Variant("s", "reject me")])
    assert assert_ok(reply) == [2]
    assert tree_service.changes_seen_by_onchange == [("/CustomName", "reject me")]
    assert tree_service.tree["/CustomName"] == ""


async def test_accepted_setvalue_changes_the_value_and_is_announced(
    bus: MessageBus, tree_service: TreeService
) -> None:
    recorder = await items_changed(bus)
    reply = await busitem(bus, "/CustomName", "SetValue", "v", [Variant("s", "Boat")])
    assert assert_ok(reply) == [0]
    assert await value(bus, "/CustomName") == Variant("s", "Boat")
    await recorder.wait_for(lambda _: "/CustomName" in merged(recorder), what="ItemsChanged")
    assert merged(recorder)["/CustomName"] == {
        "Value": Variant("s", "Boat"),
        "Text": Variant("s", "Boat"),
    }
    recorder.close()


async def test_integral_double_from_dbus_spy_sets_an_int_item(
    bus: MessageBus, tree_service: TreeService
) -> None:
    # dbus-spy sends what the user typed as a double whenever it parses as one.
    assert assert_ok(
        await busitem(bus, "/Devices/Count", "SetValue", "v", [Variant("d", 3.0)])
    ) == [0]
    assert await value(bus, "/Devices/Count") == Variant("i", 3)


async def test_first_change_after_a_quiet_second_is_sent_at_once(
    bus: MessageBus, tree_service: TreeService
) -> None:
    recorder = await items_changed(bus)  # nothing has changed since the name appeared
    started = time.monotonic()
    tree_service.tree["/Stats/Reports"] = 7
    await recorder.wait_for(lambda _: "/Stats/Reports" in merged(recorder), what="ItemsChanged")
    assert time.monotonic() - started < 0.5
    recorder.close()


async def test_items_changed_is_sent_at_most_once_a_second_and_carries_the_latest_values(
    bus: MessageBus, tree_service: TreeService
) -> None:
    recorder = await items_changed(bus)
    arrivals: list[float] = []
    recorder.bus.add_message_handler(
        lambda m: bool(m.member == "ItemsChanged" and arrivals.append(time.monotonic()))
    )
    tree = tree_service.tree
    # Change values every 20 ms for 2.5 s: ~125 changes to each of two paths.
    deadline = time.monotonic() + 2.5
    n = 0
    while time.monotonic() < deadline:
        n += 1
        tree["/Stats/Reports"] = n
        tree["/Stats/ReportsPerSecond"] = n / 10
        await asyncio.sleep(0.02)  # pacing the producer, not waiting for a result
    await recorder.wait_for(
        lambda _: merged(recorder).get("/Stats/Reports", {}).get("Value") == Variant("i", n),
        what="the last value",
    )
    assert 3 <= len(arrivals) <= 4, arrivals
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert min(gaps) >= 0.95, gaps
    for message in recorder.of("ItemsChanged"):
        assert set(message.body[0]) <= {"/Stats/Reports", "/Stats/ReportsPerSecond"}
    recorder.close()


async def test_removed_subtree_is_sent_invalid_then_its_paths_are_gone(
    bus: MessageBus, tree_service: TreeService
) -> None:
    recorder = await items_changed(bus)
    removed = tree_service.tree.remove_subtree("/Adapters/hci0")
    assert sorted(removed) == [
        "/Adapters/hci0/Address",
        "/Adapters/hci0/Powered",
        "/Adapters/hci0/State",
    ]
    await recorder.wait_for(
        lambda _: "/Adapters/hci0/State" in merged(recorder), what="invalidation"
    )
    assert merged(recorder)["/Adapters/hci0/State"] == {
        "Value": Variant("ai", []),
        "Text": Variant("s", "---"),
    }
    (items,) = assert_ok(await busitem(bus, "/", "GetItems"))
    assert not any(p.startswith("/Adapters") for p in items)
    assert_error(
        await busitem(bus, "/Adapters/hci0/State", "GetValue"),
        "org.freedesktop.DBus.Error.UnknownMethod",
    )
    assert_error(
        await busitem(bus, "/Adapters", "GetValue"), "org.freedesktop.DBus.Error.UnknownMethod"
    )
    recorder.close()


async def test_item_added_while_live_is_announced_and_readable(
    bus: MessageBus, tree_service: TreeService
) -> None:
    recorder = await items_changed(bus)
    tree_service.tree.add_item("/Adapters/hci1/State", "powered off")
    await recorder.wait_for(lambda _: "/Adapters/hci1/State" in merged(recorder), what="new item")
    assert await value(bus, "/Adapters/hci1/State") == Variant("s", "powered off")
    recorder.close()


async def test_introspection_lists_the_tree_for_dbus_y(
    bus: MessageBus, tree_service: TreeService
) -> None:
    (xml,) = assert_ok(
        await call(bus, SERVICE, "/", "org.freedesktop.DBus.Introspectable", "Introspect")
    )
    assert f'interface name="{BUSITEM_INTERFACE}"' in xml
    for child in ("Mgmt", "Adapters", "Stats", "DeviceInstance", "CustomName"):
        assert f'node name="{child}"' in xml
    (leaf,) = assert_ok(
        await call(bus, SERVICE, "/CustomName", "org.freedesktop.DBus.Introspectable", "Introspect")
    )
    assert 'method name="SetValue"' in leaf


async def test_tree_coexists_with_a_low_level_handler_for_another_interface_on_root(
    bus: MessageBus, tree_service: TreeService
) -> None:
    # The Scanner1 service answers its own interface on "/" from a message handler.
    def scanner1(msg: Message) -> Message | bool:
        if (
            msg.message_type != MessageType.METHOD_CALL
            or msg.interface != "com.victronenergy.ble.Scanner1"
        ):
            return False
        return Message.new_method_return(msg, "a{sa{sv}}", [{}])

    tree_service.bus.add_message_handler(scanner1)
    try:
        reply = await call(
            bus,
            SERVICE,
            "/",
            "com.victronenergy.ble.Scanner1",
            "GetDiscoveredDevices",
            "a{sv}",
            [{}],
        )
        assert assert_ok(reply) == [{}]
        (items,) = assert_ok(await busitem(bus, "/", "GetItems"))
        assert "/Mgmt/ProcessName" in items
    finally:
        tree_service.bus.remove_message_handler(scanner1)
