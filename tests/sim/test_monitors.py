"""AdvertisementMonitorManager1: registration, callbacks and errors (src/adv_monitor.c)."""

# No "from __future__ import annotations": dbus-fast reads the annotations as D-Bus types.
from typing import Any

from dbus_fast import PropertyAccess
from dbus_fast.aio import MessageBus
from dbus_fast.service import ServiceInterface, dbus_property, method

from ble_scanner.const import BLUEZ_ADAPTER, BLUEZ_MONITOR_MANAGER, BLUEZ_SERVICE, OBJECT_MANAGER
from ble_scanner.testing.simulator import BluezSimulator
from ble_scanner.testing.testbus import TestBus
from tests.helpers import SignalRecorder, add_match, assert_error, assert_ok, call, wait_until
from tests.sim.conftest import ADAPTER, ADAPTER_PATH, OM_RULE, added, get_all, removed

APP = "/org/example/monitors"
MONITOR = APP + "/m0"
VICTRON_PATTERN = [(0, 0xFF, b"\xe1\x02")]


class Monitor(ServiceInterface):
    """An application's monitor that records what bluetoothd calls on it."""

    def __init__(
        self, patterns: list[tuple[int, int, bytes]], kind: str = "or_patterns", **rssi: int
    ) -> None:
        super().__init__("org.bluez.AdvertisementMonitor1")
        self.patterns = patterns
        self.kind = kind
        self.rssi = rssi
        self.events: list[tuple[str, Any]] = []

    @method()
    def Release(self) -> None:
        self.events.append(("Release", None))

    @method()
    def Activate(self) -> None:
        self.events.append(("Activate", None))

    @method()
    def DeviceFound(self, device: "o") -> None:  # noqa: F821
        self.events.append(("DeviceFound", device))

    @method()
    def DeviceLost(self, device: "o") -> None:  # noqa: F821
        self.events.append(("DeviceLost", device))

    @dbus_property(PropertyAccess.READ)
    def Type(self) -> "s":  # noqa: F821
        return self.kind

    @dbus_property(PropertyAccess.READ)
    def Patterns(self) -> "a(yyay)":  # noqa: F821
        return [[s, t, c] for s, t, c in self.patterns]

    def names(self) -> list[str]:
        return [e[0] for e in self.events]


async def _register(bus: MessageBus, monitor: Monitor, app: str = APP, path: str = MONITOR) -> None:
    bus.export(path, monitor)
    reply = await call(
        bus, BLUEZ_SERVICE, ADAPTER_PATH, BLUEZ_MONITOR_MANAGER, "RegisterMonitor", "o", [app]
    )
    assert_ok(reply)


async def _managed(bus: MessageBus) -> Any:
    return assert_ok(await call(bus, BLUEZ_SERVICE, "/", OBJECT_MANAGER, "GetManagedObjects"))[0]


async def _unregister(bus: MessageBus, app: str = APP) -> Any:
    return await call(
        bus, BLUEZ_SERVICE, ADAPTER_PATH, BLUEZ_MONITOR_MANAGER, "UnregisterMonitor", "o", [app]
    )


async def test_manager_properties(sim, bus):
    props = await get_all(bus, ADAPTER_PATH, BLUEZ_MONITOR_MANAGER)
    assert props == {"SupportedMonitorTypes": ["or_patterns"], "SupportedFeatures": []}


async def test_registered_monitor_is_activated_and_gets_device_found_without_discovery(sim, bus):
    monitor = Monitor(VICTRON_PATTERN)
    await _register(bus, monitor)
    await wait_until(lambda: monitor.names() == ["Activate"], what="Activate")
    assert not sim.is_discovering(ADAPTER)
    assert await sim.advertise(ADAPTER, "C0:00:00:00:00:01", manufacturer_data={0x02E1: b"\x10"})
    assert not await sim.advertise(
        ADAPTER, "C0:00:00:00:00:02", manufacturer_data={0x0499: b"\x05"}
    )
    path = sim.device_path(ADAPTER, "C0:00:00:00:00:01")
    await wait_until(lambda: ("DeviceFound", path) in monitor.events, what="DeviceFound")
    assert sim.device_path(ADAPTER, "C0:00:00:00:00:02") is None
    # Found once per device, not once per report.
    await sim.advertise(ADAPTER, "C0:00:00:00:00:01", manufacturer_data={0x02E1: b"\x11"})
    assert monitor.names().count("DeviceFound") == 1


async def test_device_lost_when_the_device_goes(sim, bus):
    monitor = Monitor(VICTRON_PATTERN)
    await _register(bus, monitor)
    await wait_until(lambda: bool(sim.monitors(ADAPTER)))
    await sim.advertise(ADAPTER, "C0:00:00:00:00:01", manufacturer_data={0x02E1: b"\x10"})
    path = sim.device_path(ADAPTER, "C0:00:00:00:00:01")
    assert_ok(
        await call(bus, BLUEZ_SERVICE, ADAPTER_PATH, BLUEZ_ADAPTER, "RemoveDevice", "o", [path])
    )
    await wait_until(lambda: ("DeviceLost", path) in monitor.events, what="DeviceLost")


async def test_unregister_releases_the_monitors(sim, bus):
    monitor = Monitor(VICTRON_PATTERN)
    await _register(bus, monitor)
    await wait_until(lambda: bool(sim.monitors(ADAPTER)))
    assert_ok(await _unregister(bus))
    await wait_until(lambda: "Release" in monitor.names(), what="Release")
    assert not await sim.advertise(ADAPTER, "C0:00:00:00:00:01", manufacturer_data={0x02E1: b""})


async def test_second_registration_of_the_same_app_already_exists(sim, bus):
    await _register(bus, Monitor(VICTRON_PATTERN))
    reply = await call(
        bus, BLUEZ_SERVICE, ADAPTER_PATH, BLUEZ_MONITOR_MANAGER, "RegisterMonitor", "o", [APP]
    )
    assert_error(reply, "org.bluez.Error.AlreadyExists")


async def test_unregister_of_unknown_app_does_not_exist(sim, bus):
    assert_error(await _unregister(bus), "org.bluez.Error.DoesNotExist")


async def test_invalid_monitor_is_released_not_activated(sim, bus):
    monitor = Monitor(VICTRON_PATTERN, kind="and_patterns")
    await _register(bus, monitor)
    await wait_until(lambda: monitor.names() == ["Release"], what="Release of invalid monitor")
    assert sim.monitors(ADAPTER) == []


async def test_monitors_of_a_client_that_leaves_stop_matching(sim, new_client):
    client = await new_client()
    await _register(client, Monitor(VICTRON_PATTERN))
    await wait_until(lambda: bool(sim.monitors(ADAPTER)))
    client.disconnect()
    await wait_until(lambda: not sim.monitors(ADAPTER), what="monitors dropped")
    assert not await sim.advertise(ADAPTER, "C0:00:00:00:00:01", manufacturer_data={0x02E1: b""})


async def test_adapter_removal_releases_monitors(sim, bus):
    monitor = Monitor(VICTRON_PATTERN)
    await _register(bus, monitor)
    await wait_until(lambda: bool(sim.monitors(ADAPTER)))
    await sim.remove_adapter(ADAPTER)
    await wait_until(lambda: "Release" in monitor.names(), what="Release")


async def test_rssi_high_threshold_gates_device_found(sim, bus):
    monitor = Monitor(VICTRON_PATTERN)
    await _register(bus, monitor)
    await wait_until(lambda: bool(sim.monitors(ADAPTER)))
    manager = sim.adapter(ADAPTER).monitors
    assert manager is not None
    next(iter(manager.apps.values())).monitors[MONITOR].rssi_high = -60
    await sim.advertise(ADAPTER, "C0:00:00:00:00:01", rssi=-80, manufacturer_data={0x02E1: b""})
    await sim.advertise(ADAPTER, "C0:00:00:00:00:01", rssi=-50, manufacturer_data={0x02E1: b""})
    await wait_until(lambda: "DeviceFound" in monitor.names())
    assert monitor.names() == ["Activate", "DeviceFound"]


async def test_without_experimental_the_manager_is_absent(test_bus: TestBus, bus):
    async with BluezSimulator(test_bus.address, experimental=False) as sim:
        await sim.add_adapter(ADAPTER)
        reply = await call(
            bus, BLUEZ_SERVICE, ADAPTER_PATH, BLUEZ_MONITOR_MANAGER, "RegisterMonitor", "o", [APP]
        )
        assert_error(reply, "org.freedesktop.DBus.Error.UnknownMethod")


async def test_manager_can_be_switched_off_per_adapter(test_bus: TestBus, bus):
    async with BluezSimulator(test_bus.address) as sim:
        await sim.add_adapter("hci0")
        await sim.add_adapter("hci1", monitor_manager=False)
        reply = await call(
            bus,
            BLUEZ_SERVICE,
            "/org/bluez/hci1",
            "org.freedesktop.DBus.Properties",
            "GetAll",
            "s",
            [BLUEZ_MONITOR_MANAGER],
        )
        assert_error(reply, "org.freedesktop.DBus.Error.InvalidArgs")
        assert await get_all(bus, "/org/bluez/hci0", BLUEZ_MONITOR_MANAGER)


async def test_restart_releases_monitors(sim, bus):
    monitor = Monitor(VICTRON_PATTERN)
    await _register(bus, monitor)
    await wait_until(lambda: bool(sim.monitors(ADAPTER)))
    await sim.restart_bluetoothd()
    await wait_until(lambda: "Release" in monitor.names(), what="Release")
    assert sim.monitors(ADAPTER) == []


async def test_after_a_restart_the_adapter_publishes_all_interfaces_in_one_signal(sim, bus):
    """bluetoothd's default, and the simulator's: Adapter1 and the manager together."""
    await add_match(bus, OM_RULE)
    rec = SignalRecorder(bus, path="/")
    await sim.restart_bluetoothd()
    await rec.wait_for(lambda m: bool(added(m, ADAPTER_PATH)), what="InterfacesAdded")
    await _managed(bus)  # a manager held back for the reply would follow it
    await _managed(bus)
    (signal,) = added(rec.messages, ADAPTER_PATH)
    assert {BLUEZ_ADAPTER, BLUEZ_MONITOR_MANAGER} <= set(signal.body[1])


async def test_monitor_manager_later_follows_the_objects_reply_in_its_own_signal(sim, bus):
    await add_match(bus, OM_RULE)
    rec = SignalRecorder(bus, path="/")
    await sim.restart_bluetoothd(monitor_manager_later=True)
    await rec.wait_for(lambda m: bool(added(m, ADAPTER_PATH)), what="Adapter1")
    objects = await _managed(bus)
    assert BLUEZ_MONITOR_MANAGER not in objects[ADAPTER_PATH], "the reply must lack it"
    msgs = await rec.wait_for(lambda m: len(added(m, ADAPTER_PATH)) == 2, what="the manager")
    first, second = added(msgs, ADAPTER_PATH)
    assert BLUEZ_ADAPTER in first.body[1] and BLUEZ_MONITOR_MANAGER not in first.body[1]
    assert list(second.body[1]) == [BLUEZ_MONITOR_MANAGER]
    assert second.body[1][BLUEZ_MONITOR_MANAGER]["SupportedMonitorTypes"].value == ["or_patterns"]
    assert BLUEZ_MONITOR_MANAGER in (await _managed(bus))[ADAPTER_PATH]
    await _register(bus, Monitor(VICTRON_PATTERN))
    await wait_until(lambda: bool(sim.monitors(ADAPTER)), what="a monitor on the late manager")


async def test_removing_the_monitor_manager_alone_releases_monitors_and_keeps_the_adapter(sim, bus):
    monitor = Monitor(VICTRON_PATTERN)
    await _register(bus, monitor)
    await wait_until(lambda: "Activate" in monitor.names(), what="Activate")
    await add_match(bus, OM_RULE)
    rec = SignalRecorder(bus, path="/")
    sim.remove_monitor_manager(ADAPTER)
    msgs = await rec.wait_for(lambda m: bool(removed(m, ADAPTER_PATH)), what="InterfacesRemoved")
    assert [m.body[1] for m in removed(msgs, ADAPTER_PATH)] == [[BLUEZ_MONITOR_MANAGER]]
    await wait_until(lambda: "Release" in monitor.names(), what="Release")
    objects = await _managed(bus)
    assert BLUEZ_ADAPTER in objects[ADAPTER_PATH]
    assert BLUEZ_MONITOR_MANAGER not in objects[ADAPTER_PATH]
    assert_error(await _unregister(bus), "org.freedesktop.DBus.Error.UnknownMethod")
    sim.add_monitor_manager(ADAPTER)
    msgs = await rec.wait_for(lambda m: bool(added(m, ADAPTER_PATH)), what="InterfacesAdded")
    assert list(added(msgs, ADAPTER_PATH)[0].body[1]) == [BLUEZ_MONITOR_MANAGER]
