"""The scripted world: hot-plug, bluetoothd restarts and injected faults."""

from __future__ import annotations

import asyncio
import socket
import time

from dbus_fast import Message, MessageType, Variant

from ble_scanner.bus.calls import name_owner_rule
from ble_scanner.const import BLUEZ_ADAPTER, BLUEZ_DEVICE, BLUEZ_SERVICE, OBJECT_MANAGER
from ble_scanner.testing.simulator import BluezSimulator, SimulatorError, malformed
from ble_scanner.testing.testbus import TestBus
from tests.helpers import SignalRecorder, add_match, assert_error, assert_ok, call, wait_until
from tests.sim.conftest import (
    ADAPTER,
    ADAPTER_PATH,
    OM_RULE,
    PC_RULE,
    adapter_call,
    added,
    discovering_values,
    removed,
    set_filter,
)

ADDR = "C0:11:22:33:44:55"
NOC_RULE = name_owner_rule("org.bluez")


async def _managed(bus) -> dict:
    return assert_ok(await call(bus, BLUEZ_SERVICE, "/", OBJECT_MANAGER, "GetManagedObjects"))[0]


async def test_adapter_hot_plug_adds_and_removes_from_root(sim, bus):
    await add_match(bus, OM_RULE)
    rec = SignalRecorder(bus, path="/")
    await sim.add_adapter("hci1", address="00:1A:7D:DA:71:11")
    msgs = await rec.wait_for(lambda m: bool(added(m, "/org/bluez/hci1")))
    props = added(msgs, "/org/bluez/hci1")[0].body[1][BLUEZ_ADAPTER]
    assert props["Address"].value == "00:1A:7D:DA:71:11" and props["Powered"].value is True
    assert "/org/bluez/hci1" in await _managed(bus)
    await sim.remove_adapter("hci1")
    await rec.wait_for(lambda m: bool(removed(m, "/org/bluez/hci1")))
    assert "/org/bluez/hci1" not in await _managed(bus)


async def test_adapter_unplug_removes_its_devices_first(sim, bus):
    await add_match(bus, OM_RULE)
    rec = SignalRecorder(bus, path="/")
    assert_ok(await set_filter(bus, DuplicateData=Variant("b", True)))
    assert_ok(await adapter_call(bus, "StartDiscovery"))
    await wait_until(lambda: sim.is_discovering(ADAPTER))
    await sim.advertise(ADAPTER, ADDR)
    dev = sim.device_path(ADAPTER, ADDR)
    await sim.remove_adapter(ADAPTER)
    msgs = await rec.wait_for(lambda m: bool(removed(m, ADAPTER_PATH)))
    order = [m.body[0] for m in msgs if m.member == "InterfacesRemoved"]
    assert order == [dev, ADAPTER_PATH]


async def test_restart_changes_the_owner_and_forgets_everything(sim, bus):
    await add_match(bus, NOC_RULE)
    rec = SignalRecorder(bus, member="NameOwnerChanged")
    old_owner = sim.unique_name
    assert_ok(await adapter_call(bus, "StartDiscovery"))
    await wait_until(lambda: sim.is_discovering(ADAPTER))
    await sim.advertise(ADAPTER, ADDR)
    await sim.restart_bluetoothd()
    msgs = await rec.wait_for(lambda m: any(x.body[2] for x in m), what="new owner")
    assert [x.body[1:] for x in msgs] == [[old_owner, ""], ["", sim.unique_name]]
    assert sim.unique_name != old_owner
    objects = await _managed(bus)
    assert objects[ADAPTER_PATH][BLUEZ_ADAPTER]["Powered"].value is True
    assert objects[ADAPTER_PATH][BLUEZ_ADAPTER]["Discovering"].value is False
    assert not any("/dev_" in p for p in objects)
    assert sim.sessions(ADAPTER) == {}
    # The old session is gone: the client must start again.
    assert_error(await adapter_call(bus, "StopDiscovery"), "org.bluez.Error.Failed")


async def test_a_stopped_simulator_releases_the_name(test_bus: TestBus, bus):
    first = BluezSimulator(test_bus.address)
    await first.start()
    try:
        second = BluezSimulator(test_bus.address)
        try:
            await second.start()
            raise AssertionError("second simulator owned org.bluez")
        except SimulatorError as exc:
            assert "already owned" in str(exc)
    finally:
        await first.stop()
    async with BluezSimulator(test_bus.address):
        pass


async def test_kernel_refusing_start_gives_deferred_in_progress(sim, bus):
    await add_match(bus, PC_RULE)
    rec = SignalRecorder(bus, member="PropertiesChanged")
    sim.refuse_start_discovery(ADAPTER)
    reply = await adapter_call(bus, "StartDiscovery")
    assert_error(reply, "org.bluez.Error.InProgress")
    assert reply.body == ["Operation already in progress"]
    assert sim.sessions(ADAPTER) == {} and not sim.is_discovering(ADAPTER)
    assert_ok(await adapter_call(bus, "StartDiscovery"))
    await rec.wait_for(lambda m: discovering_values(m) == [True])


async def test_external_scanner_refuses_every_start_until_cleared(sim, bus, new_client):
    sim.set_external_scanner(ADAPTER)
    other = await new_client()
    for client in (bus, other, bus):
        assert_error(await adapter_call(client, "StartDiscovery"), "org.bluez.Error.InProgress")
        assert not sim.is_discovering(ADAPTER)
    sim.set_external_scanner(ADAPTER, False)
    assert_ok(await adapter_call(bus, "StartDiscovery"))
    await wait_until(lambda: sim.is_discovering(ADAPTER))


async def test_refused_stop_leaves_discovering_stuck_true(sim, bus):
    """bluez#807."""
    assert_ok(await adapter_call(bus, "StartDiscovery"))
    await wait_until(lambda: sim.is_discovering(ADAPTER))
    sim.refuse_stop_discovery(ADAPTER)
    assert_error(await adapter_call(bus, "StopDiscovery"), "org.bluez.Error.InProgress")
    assert sim.sessions(ADAPTER) == {}
    assert sim.is_discovering(ADAPTER)
    assert_error(await adapter_call(bus, "StopDiscovery"), "org.bluez.Error.Failed")


async def test_discovering_can_drop_while_the_session_is_held(sim, bus):
    await add_match(bus, PC_RULE)
    rec = SignalRecorder(bus, member="PropertiesChanged")
    assert_ok(await adapter_call(bus, "StartDiscovery"))
    await rec.wait_for(lambda m: discovering_values(m) == [True])
    sim.drop_discovering(ADAPTER)
    await rec.wait_for(lambda m: discovering_values(m) == [True, False])
    assert list(sim.sessions(ADAPTER)) == [bus.unique_name]
    assert not await sim.advertise(ADAPTER, ADDR)
    # Still a session: a new Start is "already in progress"; a Stop is accepted.
    assert_error(await adapter_call(bus, "StartDiscovery"), "org.bluez.Error.InProgress")
    assert_ok(await adapter_call(bus, "StopDiscovery"))


async def test_discovering_drop_like_adapter_stop_frees_sessions(sim, bus):
    assert_ok(await adapter_call(bus, "StartDiscovery"))
    await wait_until(lambda: sim.is_discovering(ADAPTER))
    sim.drop_discovering(ADAPTER, keep_sessions=False)
    assert sim.sessions(ADAPTER) == {} and not sim.is_discovering(ADAPTER)
    assert_ok(await adapter_call(bus, "StartDiscovery"))


async def test_silent_adapter_swallows_reports(sim, bus):
    assert_ok(await adapter_call(bus, "StartDiscovery"))
    await wait_until(lambda: sim.is_discovering(ADAPTER))
    sim.set_silent(ADAPTER)
    assert not await sim.advertise(ADAPTER, ADDR)
    assert sim.is_discovering(ADAPTER)
    sim.set_silent(ADAPTER, False)
    assert await sim.advertise(ADAPTER, ADDR)


async def test_reply_delay_holds_the_reply(sim, bus):
    sim.set_reply_delay("StartDiscovery", 0.3, adapter=ADAPTER)
    start = time.monotonic()
    assert_ok(await adapter_call(bus, "StartDiscovery"))
    assert time.monotonic() - start >= 0.3
    sim.set_reply_delay("StartDiscovery", 0, adapter=ADAPTER)
    assert_error(await adapter_call(bus, "StartDiscovery"), "org.bluez.Error.InProgress")


async def test_slow_reply_can_time_out_a_client(sim, bus):
    sim.set_reply_delay("GetDiscoveryFilters", 5.0)
    try:
        await asyncio.wait_for(adapter_call(bus, "GetDiscoveryFilters"), 0.2)
        raise AssertionError("reply came early")
    except TimeoutError:
        pass


async def test_malformed_devices_are_published_as_given(sim, bus):
    await add_match(bus, OM_RULE)
    rec = SignalRecorder(bus, member="InterfacesAdded")
    paths = []
    for index, (_name, make) in enumerate(sorted(malformed.SAMPLES.items())):
        address = f"EE:00:00:00:00:{index:02X}"
        paths.append(sim.inject_device(ADAPTER, address, make(address, ADAPTER_PATH)))
    msgs = await rec.wait_for(lambda m: len(m) == len(paths), what=f"{len(paths)} devices")
    by_path = {m.body[0]: m.body[1][BLUEZ_DEVICE] for m in msgs}
    samples = dict(zip(sorted(malformed.SAMPLES), paths, strict=True))
    assert by_path[samples["wrong_types"]]["ManufacturerData"].signature == "aa{qv}"
    assert len(by_path[samples["oversized"]]["ManufacturerData"].value[0xFFFF].value) == 65536
    assert "Address" not in by_path[samples["missing_address"]]
    assert "\ufffd" in by_path[samples["odd_name"]]["Name"].value
    # The simulator and the bus survive it all.
    assert_ok(await adapter_call(bus, "GetDiscoveryFilters"))


async def test_injected_properties_changed_is_sent_as_given(sim, bus):
    await add_match(bus, PC_RULE)
    rec = SignalRecorder(bus, member="PropertiesChanged")
    path = ADAPTER_PATH + "/dev_EE_00_00_00_00_01"
    sim.inject_properties_changed(path, {"RSSI": Variant("s", "loud")}, ["TxPower"])
    msgs = await rec.wait_for(lambda m: bool(m))
    assert msgs[0].path == path and msgs[0].body == [
        BLUEZ_DEVICE,
        {"RSSI": Variant("s", "loud")},
        ["TxPower"],
    ]


async def test_burst_of_reports_does_not_kill_the_simulator_connection(sim, bus):
    """dbus-fast's writer treats EAGAIN as fatal; the simulator's writer must not."""
    await add_match(bus, PC_RULE)
    count = 0

    def counter(msg: Message) -> bool:
        nonlocal count
        if msg.message_type is MessageType.SIGNAL and msg.member == "PropertiesChanged":
            count += 1
        return False

    bus.add_message_handler(counter)
    # A tiny send buffer makes the socket fill up (EAGAIN) within the burst.
    sim.bus._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    assert_ok(await set_filter(bus, DuplicateData=Variant("b", True)))
    assert_ok(await adapter_call(bus, "StartDiscovery"))
    await wait_until(lambda: sim.is_discovering(ADAPTER))
    from ble_scanner.testing.simulator import Report

    reports = [
        Report.build(
            f"C0:00:00:00:{i // 256:02X}:{i % 256:02X}", manufacturer_data={0x02E1: bytes(20)}
        )
        for i in range(200)
    ]
    for report in reports:
        sim.advertise_report(ADAPTER, report)
    n = 5000
    for i in range(n):
        sim.advertise_report(ADAPTER, reports[i % 200])
    await sim.drain()
    await wait_until(lambda: count >= n, timeout=20, what=f"{n} signals")
    assert sim.bus.connected
