"""Discovery sessions, filters and their errors, as BlueZ 5.72's src/adapter.c has them."""

from __future__ import annotations

import pytest
from dbus_fast import Message, MessageType, Variant

from ble_scanner.const import BLUEZ_ADAPTER, BLUEZ_SERVICE, PROPERTIES
from ble_scanner.testing.simulator import BluezSimulator
from ble_scanner.testing.testbus import TestBus
from tests.helpers import SignalRecorder, add_match, assert_error, assert_ok, call, wait_until
from tests.sim.conftest import (
    ADAPTER,
    ADAPTER_PATH,
    PC_RULE,
    adapter_call,
    discovering_values,
    get_property,
    set_filter,
)

IN_PROGRESS = "org.bluez.Error.InProgress"
INVALID = "org.bluez.Error.InvalidArguments"


async def test_start_discovery_replies_before_discovering_turns_true(sim, bus):
    await add_match(bus, PC_RULE)
    order: list[str] = []

    def log(msg: Message) -> bool:
        if msg.message_type is MessageType.METHOD_RETURN and msg.reply_serial == serial:
            order.append("reply")
        elif discovering_values([msg]):
            order.append("discovering")
        return False

    bus.add_message_handler(log)
    start = Message(
        destination=BLUEZ_SERVICE,
        path=ADAPTER_PATH,
        interface=BLUEZ_ADAPTER,
        member="StartDiscovery",
    )
    serial = bus.next_serial()
    start.serial = serial
    await bus.send(start)
    await wait_until(lambda: len(order) == 2, what="reply and Discovering signal")
    assert order == ["reply", "discovering"]
    assert sim.is_discovering(ADAPTER)


async def test_second_start_by_same_sender_is_in_progress(sim, bus):
    assert_ok(await adapter_call(bus, "StartDiscovery"))
    reply = await adapter_call(bus, "StartDiscovery")
    assert_error(reply, IN_PROGRESS)
    assert reply.body == ["Operation already in progress"]


async def test_start_on_unpowered_adapter_is_not_ready(sim, bus):
    await sim.set_powered(ADAPTER, False)
    reply = await adapter_call(bus, "StartDiscovery")
    assert_error(reply, "org.bluez.Error.NotReady")
    assert reply.body == ["Resource Not Ready"]


async def test_stop_without_own_session_fails_even_while_another_client_scans(sim, bus, new_client):
    other = await new_client()
    assert_ok(await adapter_call(other, "StartDiscovery"))
    reply = await adapter_call(bus, "StopDiscovery")
    assert_error(reply, "org.bluez.Error.Failed")
    assert reply.body == ["No discovery started"]
    assert sim.is_discovering(ADAPTER)


async def test_stop_on_unpowered_adapter_is_not_ready(sim, bus):
    await sim.set_powered(ADAPTER, False)
    assert_error(await adapter_call(bus, "StopDiscovery"), "org.bluez.Error.NotReady")


async def test_stop_of_last_session_turns_discovering_false(sim, bus):
    await add_match(bus, PC_RULE)
    recorder = SignalRecorder(bus, member="PropertiesChanged")
    assert_ok(await adapter_call(bus, "StartDiscovery"))
    assert_ok(await adapter_call(bus, "StopDiscovery"))
    await recorder.wait_for(lambda m: discovering_values(m) == [True, False])
    assert sim.sessions(ADAPTER) == {}


async def test_session_ends_when_its_client_leaves_the_bus(sim, new_client):
    client = await new_client()
    assert_ok(await adapter_call(client, "StartDiscovery"))
    assert client.unique_name in sim.sessions(ADAPTER)
    client.disconnect()
    await wait_until(lambda: not sim.is_discovering(ADAPTER), what="Discovering false")
    assert sim.sessions(ADAPTER) == {}


async def test_discovering_stays_true_while_another_session_remains(sim, bus, new_client):
    other = await new_client()
    assert_ok(await adapter_call(other, "StartDiscovery"))
    assert_ok(await adapter_call(bus, "StartDiscovery"))
    assert_ok(await adapter_call(bus, "StopDiscovery"))
    assert sim.is_discovering(ADAPTER)
    assert list(sim.sessions(ADAPTER)) == [other.unique_name]


async def test_joining_with_unchanged_filter_sends_no_discovering_signal(sim, bus, new_client):
    await add_match(bus, PC_RULE)
    recorder = SignalRecorder(bus, member="PropertiesChanged")
    assert_ok(await adapter_call(bus, "StartDiscovery"))
    await recorder.wait_for(lambda m: discovering_values(m) == [True])
    other = await new_client()
    assert_ok(await adapter_call(other, "StartDiscovery"))
    # A Ping round trip through the simulator orders everything it sent before.
    assert_ok(await call(bus, BLUEZ_SERVICE, "/", "org.freedesktop.DBus.Peer", "Ping"))
    await sim.drain()
    assert discovering_values(recorder.messages) == [True]
    assert len(sim.sessions(ADAPTER)) == 2


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("Unknown", Variant("b", True)),
        ("RSSI", Variant("i", -60)),
        ("RSSI", Variant("n", -128)),
        ("RSSI", Variant("n", 21)),
        ("Pathloss", Variant("q", 138)),
        ("Transport", Variant("s", "usb")),
        ("UUIDs", Variant("as", ["not-a-uuid"])),
        ("DuplicateData", Variant("s", "yes")),
        ("AutoConnect", Variant("b", True)),
    ],
    ids=lambda v: v if isinstance(v, str) else v.signature,
)
async def test_invalid_filter_is_rejected_with_invalid_arguments(sim, bus, key, value):
    reply = await set_filter(bus, **{key: value})
    assert_error(reply, INVALID)
    assert reply.body == ["Invalid arguments in method call"]


async def test_rssi_and_pathloss_together_are_rejected(sim, bus):
    reply = await set_filter(bus, RSSI=Variant("n", -70), Pathloss=Variant("q", 40))
    assert_error(reply, INVALID)


async def test_autoconnect_is_a_valid_key_after_572(test_bus: TestBus, bus):
    async with BluezSimulator(test_bus.address, version="head") as sim:
        await sim.add_adapter(ADAPTER)
        assert_ok(await set_filter(bus, AutoConnect=Variant("b", False)))
        keys = assert_ok(await adapter_call(bus, "GetDiscoveryFilters"))[0]
        assert "AutoConnect" in keys and len(keys) == 8


async def test_get_discovery_filters_lists_the_seven_572_keys(sim, bus):
    keys = assert_ok(await adapter_call(bus, "GetDiscoveryFilters"))[0]
    assert keys == [
        "UUIDs",
        "RSSI",
        "Pathloss",
        "Transport",
        "DuplicateData",
        "Discoverable",
        "Pattern",
    ]


async def test_set_filter_on_unpowered_adapter_is_not_ready(sim, bus):
    await sim.set_powered(ADAPTER, False)
    assert_error(await set_filter(bus, Transport=Variant("s", "le")), "org.bluez.Error.NotReady")


async def test_filter_set_before_start_applies_to_the_session(sim, bus):
    assert_ok(await set_filter(bus, Transport=Variant("s", "le"), DuplicateData=Variant("b", True)))
    assert sim.preset_filters(ADAPTER) == {
        bus.unique_name: {"Transport": "le", "DuplicateData": True}
    }
    assert_ok(await adapter_call(bus, "StartDiscovery"))
    assert sim.sessions(ADAPTER) == {bus.unique_name: {"Transport": "le", "DuplicateData": True}}


async def test_filter_survives_stop_discovery_until_cleared(sim, bus):
    assert_ok(await set_filter(bus, RSSI=Variant("n", -80)))
    assert_ok(await adapter_call(bus, "StartDiscovery"))
    assert_ok(await adapter_call(bus, "StopDiscovery"))
    assert sim.preset_filters(ADAPTER) == {bus.unique_name: {"RSSI": -80}}
    assert_ok(await adapter_call(bus, "StartDiscovery"))
    assert sim.sessions(ADAPTER) == {bus.unique_name: {"RSSI": -80}}
    assert_ok(await adapter_call(bus, "StopDiscovery"))
    assert_ok(await set_filter(bus))
    assert sim.preset_filters(ADAPTER) == {}


async def test_preset_filter_is_dropped_when_its_client_leaves(sim, new_client):
    client = await new_client()
    assert_ok(await set_filter(client, Transport=Variant("s", "le")))
    name = client.unique_name
    client.disconnect()
    await wait_until(lambda: name not in sim.preset_filters(ADAPTER), what="filter dropped")


async def test_filter_change_while_discovering_keeps_discovering(sim, bus):
    assert_ok(await adapter_call(bus, "StartDiscovery"))
    await wait_until(lambda: sim.is_discovering(ADAPTER))
    assert_ok(await set_filter(bus, UUIDs=Variant("as", ["180f"])))
    assert sim.sessions(ADAPTER)[bus.unique_name] == {"UUIDs": ["180f"]}
    assert sim.is_discovering(ADAPTER)


async def test_remove_device_of_unknown_path_does_not_exist(sim, bus):
    reply = await adapter_call(bus, "RemoveDevice", "o", [ADAPTER_PATH + "/dev_00_00_00_00_00_01"])
    assert_error(reply, "org.bluez.Error.DoesNotExist")
    assert reply.body == ["Does Not Exist"]


async def test_power_off_drops_sessions_and_power_on_does_not_restore_them(sim, bus, new_client):
    other = await new_client()
    assert_ok(await set_filter(other, RSSI=Variant("n", -90)))
    assert_ok(await adapter_call(bus, "StartDiscovery"))
    await wait_until(lambda: sim.is_discovering(ADAPTER))
    await sim.set_powered(ADAPTER, False)
    assert not sim.is_discovering(ADAPTER)
    assert sim.sessions(ADAPTER) == {} and sim.preset_filters(ADAPTER) == {}
    await sim.set_powered(ADAPTER, True)
    assert sim.sessions(ADAPTER) == {} and not sim.is_discovering(ADAPTER)
    # The client must start again; its old session is gone, so Stop fails.
    assert_error(await adapter_call(bus, "StopDiscovery"), "org.bluez.Error.Failed")


async def test_powered_set_over_dbus_replies_then_signals(sim, bus):
    await add_match(bus, PC_RULE)
    recorder = SignalRecorder(bus, member="PropertiesChanged", path=ADAPTER_PATH)
    reply = await call(
        bus,
        BLUEZ_SERVICE,
        ADAPTER_PATH,
        PROPERTIES,
        "Set",
        "ssv",
        [BLUEZ_ADAPTER, "Powered", Variant("b", False)],
    )
    assert_ok(reply)
    await recorder.wait_for(
        lambda ms: any("Powered" in m.body[1] and not m.body[1]["Powered"].value for m in ms)
    )
    value = assert_ok(await get_property(bus, ADAPTER_PATH, BLUEZ_ADAPTER, "Powered"))[0]
    assert value.value is False


async def test_read_only_adapter_property_cannot_be_set(sim, bus):
    reply = await call(
        bus,
        BLUEZ_SERVICE,
        ADAPTER_PATH,
        PROPERTIES,
        "Set",
        "ssv",
        [BLUEZ_ADAPTER, "Discovering", Variant("b", True)],
    )
    assert_error(reply, "org.freedesktop.DBus.Error.PropertyReadOnly")


async def test_powered_set_with_wrong_type_is_invalid_arguments(sim, bus):
    reply = await call(
        bus,
        BLUEZ_SERVICE,
        ADAPTER_PATH,
        PROPERTIES,
        "Set",
        "ssv",
        [BLUEZ_ADAPTER, "Powered", Variant("s", "on")],
    )
    assert_error(reply, INVALID)


async def test_method_with_wrong_signature_is_unknown_method(sim, bus):
    reply = await adapter_call(bus, "StartDiscovery", "s", ["now"])
    assert_error(reply, "org.freedesktop.DBus.Error.UnknownMethod")


async def test_call_log_counts_calls_per_member_and_sender(sim, bus, new_client):
    other = await new_client()
    assert_ok(await adapter_call(bus, "StartDiscovery"))
    assert_ok(await adapter_call(other, "StartDiscovery"))
    assert_error(await adapter_call(bus, "StartDiscovery"), IN_PROGRESS)
    assert sim.call_count("StartDiscovery", adapter=ADAPTER) == 3
    assert sim.call_count("StartDiscovery", sender=bus.unique_name) == 2
    assert sim.call_count("StopDiscovery") == 0
