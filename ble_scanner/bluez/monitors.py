"""Our AdvertisementMonitor1 application: passive scanning through BlueZ (bluetoothd -E).

BlueZ reads the application's objects with GetManagedObjects on its root,
calls ``Activate`` once the kernel accepted the monitors and ``Release`` when
it drops them (BlueZ src/adv_monitor.c, doc/org.bluez.AdvertisementMonitor.rst).
Matching reports then update Device1 objects without any discovery session,
and reach us through the same InterfacesAdded / PropertiesChanged path as
active scanning.

Served with the low-level API, like Scanner1, so that nothing here depends on
dbus-fast's annotation-driven ServiceInterface.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Final

from dbus_fast import Message, MessageFlag, MessageType, Variant

from ..const import (
    BLUEZ_MONITOR,
    ERROR_INVALID_ARGS,
    ERROR_UNKNOWN_METHOD,
    ERROR_UNKNOWN_OBJECT,
    INTROSPECTABLE,
    OBJECT_MANAGER,
    PROPERTIES,
)

MONITOR_APP_ROOT: Final = "/com/victronenergy/ble/scanner/monitor"
AD_TYPE_FLAGS: Final = 0x01
# bluetoothd 5.66 and 5.82 die of heap corruption reading a monitor with 8 or
# more patterns (measured in tests/realbluez; the kernel itself would take 16,
# HCI_MAX_ADV_MONITOR_NUM_PATTERNS), so each monitor carries 4. Eight monitors
# (of the kernel's 32 per controller) cover every combination of the five
# defined Flags bits (Core spec Supplement Part A 1.3): every advertiser that
# sends a Flags AD structure matches. Advertisers without one (some
# non-connectable beacons) are not seen passively; HA's passive scanner has the
# same limit with its three Flags values.
PATTERNS_PER_MONITOR: Final = 4
PASSIVE_PATTERNS: Final = [
    [(0, AD_TYPE_FLAGS, bytes([flags])) for flags in range(start, start + PATTERNS_PER_MONITOR)]
    for start in range(0x00, 0x20, PATTERNS_PER_MONITOR)
]

_MONITOR_XML: Final = f"""<interface name="{BLUEZ_MONITOR}">
  <method name="Release"/>
  <method name="Activate"/>
  <method name="DeviceFound"><arg name="device" type="o" direction="in"/></method>
  <method name="DeviceLost"><arg name="device" type="o" direction="in"/></method>
  <property name="Type" type="s" access="read"/>
  <property name="Patterns" type="a(yyay)" access="read"/>
</interface>"""


def _monitor_properties(patterns: list[tuple[int, int, bytes]]) -> dict[str, Variant]:
    return {
        "Type": Variant("s", "or_patterns"),
        "Patterns": Variant("a(yyay)", [list(p) for p in patterns]),
    }


class MonitorApp:
    """One application per adapter: a root with the two match-everything monitors."""

    def __init__(
        self,
        adapter: str,
        on_activate: Callable[[], None],
        on_release: Callable[[], None],
    ) -> None:
        self.adapter = adapter
        self.root = f"{MONITOR_APP_ROOT}/{adapter}"
        self.monitors = {
            f"{self.root}/{i}": _monitor_properties(patterns)
            for i, patterns in enumerate(PASSIVE_PATTERNS)
        }
        self.on_activate = on_activate
        self.on_release = on_release
        self.activated = 0  # Activate calls BlueZ made (tests/realbluez reads it)

    def owns(self, path: str) -> bool:
        return path == self.root or path in self.monitors

    def handle(self, msg: Message) -> Message | bool:
        """Answer a method call to one of our paths; True when no reply is wanted."""
        path, interface, member = msg.path or "", msg.interface, msg.member
        if interface == OBJECT_MANAGER and member == "GetManagedObjects" and path == self.root:
            objects = {p: {BLUEZ_MONITOR: props} for p, props in self.monitors.items()}
            return Message.new_method_return(msg, "a{oa{sa{sv}}}", [objects])
        if interface == INTROSPECTABLE and member == "Introspect":
            return Message.new_method_return(msg, "s", [self._introspect(path)])
        props = self.monitors.get(path)
        if props is None:
            return Message.new_error(msg, ERROR_UNKNOWN_OBJECT, f"no object {path}")
        if interface == PROPERTIES and member == "GetAll" and msg.signature == "s":
            return Message.new_method_return(
                msg, "a{sv}", [props if msg.body[0] == BLUEZ_MONITOR else {}]
            )
        if interface == PROPERTIES and member == "Get" and msg.signature == "ss":
            value = props.get(msg.body[1]) if msg.body[0] == BLUEZ_MONITOR else None
            if value is None:
                return Message.new_error(msg, ERROR_INVALID_ARGS, "no such property")
            return Message.new_method_return(msg, "v", [value])
        if interface == BLUEZ_MONITOR:
            if member == "Activate":
                self.activated += 1
                self.on_activate()
            elif member == "Release":
                self.on_release()
            # DeviceFound / DeviceLost need no work: the Device1 updates carry the data.
            if msg.flags & MessageFlag.NO_REPLY_EXPECTED:
                return True
            return Message.new_method_return(msg)
        return Message.new_error(msg, ERROR_UNKNOWN_METHOD, f"{interface}.{member}")

    def _introspect(self, path: str) -> str:
        node = ET.Element("node")
        if path == self.root:
            for monitor in self.monitors:
                ET.SubElement(node, "node", name=monitor.rsplit("/", 1)[1])
        elif path in self.monitors:
            node.append(ET.fromstring(_MONITOR_XML))
        return ET.tostring(node, encoding="unicode")


def is_call_for_monitor_app(msg: Message) -> bool:
    return msg.message_type == MessageType.METHOD_CALL and (msg.path or "").startswith(
        MONITOR_APP_ROOT
    )
