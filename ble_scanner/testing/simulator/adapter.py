"""One ``/org/bluez/hciN``: Adapter1, its discovery sessions and its devices.

Session handling follows src/adapter.c of BlueZ 5.72 (``start_discovery``,
``stop_discovery``, ``set_discovery_filter``, ``discovery_stop``,
``discovery_remove``, ``discovery_cleanup``, ``adapter_stop``) and report
gating follows ``btd_adapter_device_found``. The "kernel" answers on a later
loop iteration (or after ``kernel_delay``), so replies are deferred as in BlueZ.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dbus_fast import Message, Variant

from ble_scanner.const import BLUEZ_ADAPTER, BLUEZ_DEVICE, BLUEZ_MONITOR_MANAGER

from . import wire
from .const import (
    ERR_BUSY,
    ERR_DOES_NOT_EXIST,
    ERR_INVALID_ARGS,
    ERR_NO_DISCOVERY,
    ERR_NOT_READY,
    FILTER_KEYS_572,
    FILTER_KEYS_HEAD,
    RSSI_THRESHOLD,
    SERVICE_DATA_UUIDS_NOT_IN_UUIDS,
)
from .device import Device
from .faults import Faults
from .filters import FilterError, MergedFilter, filter_matches, is_discoverable, merge, parse_filter
from .monitor import MonitorManager
from .names import ERROR_PROPERTY_READ_ONLY
from .objects import ObjectServer
from .report import Report
from .session import Session

_WRITABLE = {
    "Powered": "b",
    "Alias": "s",
    "Discoverable": "b",
    "DiscoverableTimeout": "u",
    "Pairable": "b",
    "PairableTimeout": "u",
}
_ERR_BUSY_SETTING = ("org.bluez.Error.Busy", "")


class Adapter:
    """State and D-Bus face of one adapter. Create through ``BluezSimulator.add_adapter``."""

    def __init__(
        self,
        server: ObjectServer,
        name: str,
        address: str,
        *,
        powered: bool = True,
        version: str = "5.72",
        temporary_timeout: float = 30.0,
        monitor_manager: bool = True,
        le_only: bool = False,
        kernel_delay: float = 0.0,
    ) -> None:
        self.server = server
        self.loop = server.loop
        self.name = name
        self.path = f"/org/bluez/{name}"
        self.address = address.upper()
        self.version = version
        self.temporary_timeout = temporary_timeout
        self.kernel_delay = kernel_delay
        self.scan_type = "le" if le_only else "auto"
        self.alias = f"BlueZ Simulator ({name})"
        self.powered = powered
        self.discoverable = False
        self.discoverable_timeout = 180
        self.pairable = False
        self.pairable_timeout = 0
        self.discovering = False
        self.alive = True
        self.faults = Faults()
        self.discovery: dict[str, Session] = {}
        self.preset: dict[str, Session] = {}
        self.current: MergedFilter | None = None
        self.filtered_discovery = False
        self.devices: dict[str, Device] = {}
        self.found: set[Device] = set()
        self.monitors = MonitorManager(self) if monitor_manager else None
        self._power_pending = False
        self._filters: list[Any] = []
        self._duplicate = False
        self._service_data_uuids = version not in SERVICE_DATA_UUIDS_NOT_IN_UUIDS
        # Told of every link change (the management channel's Device Connected/Disconnected).
        self.on_link: Callable[[Adapter, Device, bool], None] | None = None

    # --- the D-Bus face (objects.SimObject) ---------------------------------

    def add_monitor_manager(self) -> MonitorManager:
        """AdvertisementMonitorManager1 appears on the adapter, in its own InterfacesAdded."""
        if self.monitors is None:
            self.monitors = MonitorManager(self)
            self.server.add_interfaces(self.path, [BLUEZ_MONITOR_MANAGER])
        return self.monitors

    def remove_monitor_manager(self) -> None:
        """``manager_destroy``: every monitor gets Release, then the interface goes alone."""
        if self.monitors is not None:
            self.monitors.release_all()
            self.monitors = None
            self.server.remove_interfaces(self.path, [BLUEZ_MONITOR_MANAGER])

    def interface_names(self) -> list[str]:
        names = [BLUEZ_ADAPTER]
        if self.monitors is not None:
            names.append(BLUEZ_MONITOR_MANAGER)
        return names

    def get_all(self, interface: str) -> dict[str, Variant] | None:
        if interface == BLUEZ_ADAPTER:
            return self._adapter_properties()
        if interface == BLUEZ_MONITOR_MANAGER and self.monitors is not None:
            return self.monitors.properties()
        return None

    def get(self, interface: str, name: str) -> Variant | None:
        values = self.get_all(interface)
        return None if values is None else values.get(name)

    def _adapter_properties(self) -> dict[str, Variant]:
        return {
            "Address": Variant("s", self.address),
            "AddressType": Variant("s", "public"),
            "Name": Variant("s", "BlueZ Simulator"),
            "Alias": Variant("s", self.alias),
            "Class": Variant("u", 0),
            "Powered": Variant("b", self.powered),
            "PowerState": Variant("s", "on" if self.powered else "off"),
            "Discoverable": Variant("b", self.discoverable),
            "DiscoverableTimeout": Variant("u", self.discoverable_timeout),
            "Pairable": Variant("b", self.pairable),
            "PairableTimeout": Variant("u", self.pairable_timeout),
            "Discovering": Variant("b", self.discovering),
            "UUIDs": Variant("as", []),
            "Modalias": Variant("s", "usb:v1D6Bp0246d0548"),
            "Roles": Variant("as", ["central", "peripheral"]),
        }

    def call(self, interface: str, member: str, msg: Message) -> Message | bool | None:
        if interface == BLUEZ_MONITOR_MANAGER:
            return self.monitors.call(member, msg) if self.monitors is not None else None
        sig = msg.signature
        if member == "StartDiscovery" and sig == "":
            return self.start_discovery(msg)
        if member == "StopDiscovery" and sig == "":
            return self.stop_discovery(msg)
        if member == "SetDiscoveryFilter" and sig == "a{sv}":
            return self.set_discovery_filter(msg)
        if member == "GetDiscoveryFilters" and sig == "":
            keys = FILTER_KEYS_HEAD if self.version == "head" else FILTER_KEYS_572
            return Message.new_method_return(msg, "as", [list(keys)])
        if member == "RemoveDevice" and sig == "o":
            return self._remove_device_call(msg)
        return None

    def set_property(
        self, interface: str, name: str, value: Variant, msg: Message
    ) -> Message | bool | None:
        if interface != BLUEZ_ADAPTER:
            return None
        if name not in _WRITABLE:
            if name in self._adapter_properties():
                return Message.new_error(
                    msg, ERROR_PROPERTY_READ_ONLY, f"Property '{name}' is not writable"
                )
            return None
        if value.signature != _WRITABLE[name]:
            return wire.error(msg, ERR_INVALID_ARGS)
        if name == "Powered":
            return self._set_powered_call(value.value, msg)
        attr = {
            "Alias": "alias",
            "Discoverable": "discoverable",
            "DiscoverableTimeout": "discoverable_timeout",
            "Pairable": "pairable",
            "PairableTimeout": "pairable_timeout",
        }[name]
        if getattr(self, attr) != value.value:
            setattr(self, attr, value.value)
            self.server.changed(self.path, BLUEZ_ADAPTER, [name])
        return Message.new_method_return(msg)

    # --- discovery sessions --------------------------------------------------

    def start_discovery(self, msg: Message) -> Message | bool:
        if not self.powered:
            return wire.error(msg, ERR_NOT_READY)
        sender = msg.sender or ""
        # "Every client can only start one discovery" (btd_error_busy).
        if sender in self.discovery:
            return wire.error(msg, ERR_BUSY)
        session = self.preset.pop(sender, None) or Session(sender)
        self.discovery[sender] = session
        self._sessions_changed()
        return self._update_filter(session, msg)

    def stop_discovery(self, msg: Message) -> Message | bool:
        if not self.powered:
            return wire.error(msg, ERR_NOT_READY)
        session = self.discovery.get(msg.sender or "")
        if session is None:
            return wire.error(msg, ERR_NO_DISCOVERY)
        if session.pending is not None or session.stopping:
            return wire.error(msg, ERR_BUSY)
        return self._discovery_stop(session, msg)

    def set_discovery_filter(self, msg: Message) -> Message | bool:
        if not self.powered:
            return wire.error(msg, ERR_NOT_READY)
        try:
            new = parse_filter(msg.body[0], self.version)
        except FilterError:
            return wire.error(msg, ERR_INVALID_ARGS)
        sender = msg.sender or ""
        session = self.discovery.get(sender) or self.preset.get(sender)
        if session is not None and session.pending is not None:
            return wire.error(msg, ERR_BUSY)
        if session is not None:
            session.filter = new
            if sender in self.discovery:
                self._sessions_changed()
                self._update_filter(None, None)
            elif new is None:
                del self.preset[sender]
        elif new is not None:
            # Kept for a later StartDiscovery, and dropped if the sender leaves.
            self.preset[sender] = Session(sender, new)
        return Message.new_method_return(msg)

    def _update_filter(self, session: Session | None, msg: Message | None) -> Message | bool:
        """``update_discovery_filter``: no restart when the merged filter is unchanged."""
        merged = merge(self._filters, self.scan_type, self.version)
        if merged == self.current and self.discovering:
            return Message.new_method_return(msg) if msg is not None else True
        self.current = merged
        if session is not None and msg is not None:
            session.pending = msg
        self._kernel(self._kernel_started)
        return True

    def _kernel_started(self) -> None:
        """``start_discovery_complete``: reply first, Discovering flips afterwards."""
        if not self.alive or not self.powered:
            return
        waiting = [s for s in self.discovery.values() if s.pending is not None]
        if self.faults.take_start_refusal(self.loop.time()):
            # The kernel said busy: the client gets btd_error_busy and its
            # session is removed; Discovering does not change.
            for session in waiting:
                msg, session.pending = session.pending, None
                assert msg is not None
                self.server.send(wire.error(msg, ERR_BUSY))
                self._discovery_remove(session)
            return
        if not self.discovery:
            return
        # The kernel took the filter: from now on ``filtered_discovery`` says
        # whether ``current_discovery_filter`` is set (start_discovery_complete).
        self.filtered_discovery = self.current is not None and self.current.filtered
        for session in waiting:
            msg, session.pending = session.pending, None
            assert msg is not None
            self.server.send(Message.new_method_return(msg))
        self._set_discovering(True)

    def _discovery_stop(self, session: Session, msg: Message | None) -> Message | bool:
        others = len(self.discovery) > 1
        if others or not self.discovering:
            # Others keep scanning (filter recomputed), or the kernel is idle.
            self._discovery_remove(session)
            if others:
                self._update_filter(None, None)
            return Message.new_method_return(msg) if msg is not None else True
        session.pending = msg
        session.stopping = True
        self._kernel(self._kernel_stopped, session)
        return True

    def _kernel_stopped(self, session: Session) -> None:
        """``stop_discovery_complete``, including bluez#807 on a refused stop."""
        if not self.alive:
            return
        msg, session.pending = session.pending, None
        session.stopping = False
        if self.discovery.get(session.owner) is not session:
            return
        if self.faults.take_stop_refusal():
            # bluez#807: error reply, session removed, Discovering left true.
            if msg is not None:
                self.server.send(wire.error(msg, ERR_BUSY))
            self._discovery_remove(session)
            return
        if msg is not None:
            self.server.send(Message.new_method_return(msg))
        self.filtered_discovery = False
        self.current = None
        self._set_discovering(False)
        self._discovery_remove(session)

    def _discovery_remove(self, session: Session) -> None:
        """A client with a filter keeps it for its next StartDiscovery."""
        if self.discovery.get(session.owner) is session:
            del self.discovery[session.owner]
        if session.filter is not None:
            self.preset[session.owner] = Session(session.owner, session.filter)
        self._sessions_changed()
        if not self.discovery:
            self._discovery_cleanup()

    def _discovery_cleanup(self) -> None:
        """Last session gone: invalidate RSSI/TxPower, drop temporary non-connectable devices."""
        for dev in self.found:
            if self.devices.get(dev.address) is dev:
                self.server.changed(dev.path, BLUEZ_DEVICE, dev.invalidate_proximity())
        self.found.clear()
        for dev in list(self.devices.values()):
            # 5.77+ also keeps connected devices; 5.66/5.72 check only these two.
            if dev.temporary and not dev.connectable:
                if self.version == "head" and dev.connected:
                    continue
                self.remove_device(dev)

    def disconnect_sender(self, owner: str) -> None:
        """``discovery_disconnect``: the sender left the bus."""
        self.preset.pop(owner, None)
        session = self.discovery.get(owner)
        if session is not None:
            session.pending = None
            if not session.stopping:
                self._discovery_stop(session, None)
        if self.monitors is not None:
            self.monitors.sender_gone(owner)

    def _sessions_changed(self) -> None:
        filters = [s.filter for s in self.discovery.values()]
        self._filters = filters
        self._duplicate = any(f is not None and f.duplicate_data for f in filters)

    def _set_discovering(self, value: bool) -> None:
        if self.discovering != value:
            self.discovering = value
            self.server.changed(self.path, BLUEZ_ADAPTER, ["Discovering"])

    def _kernel(self, callback: Callable[..., None], *args: Any) -> None:
        if self.kernel_delay > 0:
            self.loop.call_later(self.kernel_delay, callback, *args)
        else:
            self.loop.call_soon(callback, *args)

    # --- power ---------------------------------------------------------------

    def _set_powered_call(self, value: bool, msg: Message) -> Message | bool:
        if value == self.powered:
            return Message.new_method_return(msg)
        if self._power_pending:
            return wire.error(msg, _ERR_BUSY_SETTING)
        self._power_pending = True

        def done() -> None:
            self._power_pending = False
            if not self.alive:
                return
            self.set_powered(value)
            self.server.send(Message.new_method_return(msg))

        self._kernel(done)
        return True

    def set_connected(self, dev: Device, connected: bool, announce: bool = True) -> None:
        """Connected on a device (another process's link); a connected device does not expire.

        ``announce`` False: the link comes as bluetoothd 5.66 was seen to make it
        (tests/realbluez/test_links.py): no PropertiesChanged for Connected, only
        ServicesResolved true once its services are resolved.
        """
        if dev.connected != connected:
            dev.connected = connected
            if announce:
                self.server.changed(dev.path, BLUEZ_DEVICE, ["Connected"])
            # Resolved over the link; a link's end always unresolves (device.c).
            if dev.services_resolved != (connected and not announce):
                dev.services_resolved = not dev.services_resolved
                self.server.changed(dev.path, BLUEZ_DEVICE, ["ServicesResolved"])
            if self.on_link is not None:
                self.on_link(self, dev, connected)

    def set_powered(self, value: bool) -> None:
        """Power on or off now; off drops every session (``adapter_stop``) and every link."""
        if value == self.powered:
            return
        if not value:
            self.stop_all_discovery()
            for dev in list(self.devices.values()):
                self.set_connected(dev, False)
            # property_set_mode also removes every temporary device.
            for dev in list(self.devices.values()):
                if dev.temporary:
                    self.remove_device(dev)
        self.powered = value
        self.server.changed(self.path, BLUEZ_ADAPTER, ["Powered", "PowerState"])

    def stop_all_discovery(self) -> None:
        """``adapter_stop`` minus the power change: sessions and pre-set filters freed."""
        pending = [s.pending for s in self.discovery.values() if s.pending is not None]
        for msg in pending:
            self.server.send(wire.error(msg, ERR_NOT_READY))
        self.discovery.clear()
        self.preset.clear()
        self._sessions_changed()
        self._discovery_cleanup()
        self.current = None
        self.filtered_discovery = False
        self._set_discovering(False)

    def drop_discovering(self) -> None:
        """The kernel stopped scanning on its own; sessions stay held."""
        self.current = None
        self._set_discovering(False)

    # --- devices -------------------------------------------------------------

    def _remove_device_call(self, msg: Message) -> Message:
        target = msg.body[0]
        dev = next((d for d in self.devices.values() if d.path == target), None)
        if dev is None:
            return wire.error(msg, ERR_DOES_NOT_EXIST)
        if not self.powered:
            return wire.error(msg, ERR_NOT_READY)
        self.remove_device(dev)
        return Message.new_method_return(msg)

    def remove_device(self, dev: Device) -> None:
        if self.devices.get(dev.address) is not dev:
            return
        del self.devices[dev.address]
        self.found.discard(dev)
        if dev.timer is not None:
            dev.timer.cancel()
            dev.timer = None
        if self.monitors is not None:
            self.monitors.device_removed(dev)
        self.server.remove(dev.path)

    def device_path(self, address: str) -> str | None:
        dev = self.devices.get(address.upper())
        return dev.path if dev is not None else None

    def _device_notify(self, dev: Device, names: list[str]) -> None:
        self.server.changed(dev.path, BLUEZ_DEVICE, names)

    def advertise(self, report: Report) -> bool:
        """``btd_adapter_device_found``; True if the report reached Device1."""
        if not self.powered or not self.alive or self.faults.silent:
            return False
        monitors = self.monitors
        matched = monitors.match(report) if monitors is not None and monitors.active else None
        if not self.discovering and not matched:
            return False
        if not matched:
            if not is_discoverable(report, self.filtered_discovery, self._filters):
                return False
            if self.filtered_discovery and not any(
                filter_matches(f, report) for f in self._filters
            ):
                return False
        # btd_adapter_device_found: filtered discovery emits RSSI on every report
        # (device_set_rssi_with_delta(dev, rssi, 0)), else device_set_rssi's 8 dBm.
        rssi_delta = 0 if self.filtered_discovery else RSSI_THRESHOLD
        dev = self.devices.get(report.address)
        if not self.discovery and not matched and (dev is None or dev.temporary):
            # No client asked for discovery: only permanent devices are updated.
            return False
        if dev is None:
            if report.scan_response:
                return False
            dev = Device(self.path, report.address, report.address_type, self._device_notify)
            dev.apply(report, self._duplicate, rssi_delta, self._service_data_uuids)
            self.devices[report.address] = dev
            self.server.add(dev)
        else:
            changed = dev.apply(report, self._duplicate, rssi_delta, self._service_data_uuids)
            if changed:
                self.server.emit_now(dev, BLUEZ_DEVICE, changed)
        dev.last_seen = self.loop.time()
        if self.discovering:
            self.found.add(dev)
        if dev.timer is None and dev.temporary and self.temporary_timeout > 0:
            dev.timer = self.loop.call_later(self.temporary_timeout, self._expire, dev)
        if matched:
            assert monitors is not None
            monitors.device_seen(dev, matched, report.rssi)
        return True

    def _expire(self, dev: Device) -> None:
        """The temporary timer, restarted by every report (``device_update_last_seen``)."""
        dev.timer = None
        if self.devices.get(dev.address) is not dev or not dev.temporary:
            return
        if dev.connected:
            dev.timer = self.loop.call_later(self.temporary_timeout, self._expire, dev)
            return
        remaining = dev.last_seen + self.temporary_timeout - self.loop.time()
        if remaining > 0.001:
            dev.timer = self.loop.call_later(remaining, self._expire, dev)
            return
        self.remove_device(dev)

    # --- lifetime ------------------------------------------------------------

    def shutdown(self, release_monitors: bool = True) -> None:
        """Adapter gone (unplug or bluetoothd exit): devices first, then the adapter."""
        for session in self.discovery.values():
            session.pending = None
        self.discovery.clear()
        self.preset.clear()
        self._sessions_changed()
        for dev in list(self.devices.values()):
            self.remove_device(dev)
        if self.monitors is not None and release_monitors:
            self.monitors.release_all()
        self.alive = False
        self.server.remove(self.path)

    def abandon(self) -> None:
        """bluetoothd crashed: nothing is sent, timers and monitor reads just stop."""
        self.alive = False
        for dev in self.devices.values():
            if dev.timer is not None:
                dev.timer.cancel()
                dev.timer = None
        if self.monitors is not None:
            self.monitors.abandon()

    def sessions(self) -> dict[str, dict[str, Any]]:
        return {
            owner: (s.filter.as_dict() if s.filter is not None else {})
            for owner, s in self.discovery.items()
        }

    def preset_filters(self) -> dict[str, dict[str, Any]]:
        return {
            owner: s.filter.as_dict() for owner, s in self.preset.items() if s.filter is not None
        }

    def device_by_path(self, path: str) -> Device | None:
        address = path.rsplit("/dev_", 1)[-1].replace("_", ":")
        dev = self.devices.get(address)
        return dev if dev is not None and dev.path == path else None
