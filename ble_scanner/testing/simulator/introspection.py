"""Introspection XML for the simulated objects, close to what bluetoothd returns."""

from __future__ import annotations

from collections.abc import Iterable

from ble_scanner.const import (
    BLUEZ_ADAPTER,
    BLUEZ_DEVICE,
    BLUEZ_MONITOR_MANAGER,
    INTROSPECTABLE,
    OBJECT_MANAGER,
    PROPERTIES,
)

from .names import AGENT_MANAGER

_DOCTYPE = (
    '<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
    '"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n'
)


def _method(name: str, args_in: str = "", args_out: str = "") -> str:
    parts = [f'<method name="{name}">']
    for i, sig in enumerate(filter(None, args_in.split(","))):
        parts.append(f'<arg name="arg{i}" type="{sig}" direction="in"/>')
    for i, sig in enumerate(filter(None, args_out.split(","))):
        parts.append(f'<arg name="out{i}" type="{sig}" direction="out"/>')
    parts.append("</method>")
    return "".join(parts)


def _prop(name: str, sig: str, access: str = "read") -> str:
    return f'<property name="{name}" type="{sig}" access="{access}"/>'


def _iface(name: str, *members: str) -> str:
    return f'<interface name="{name}">' + "".join(members) + "</interface>\n"


INTERFACE_XML: dict[str, str] = {
    INTROSPECTABLE: _iface(INTROSPECTABLE, _method("Introspect", "", "s")),
    PROPERTIES: _iface(
        PROPERTIES,
        _method("Get", "s,s", "v"),
        _method("Set", "s,s,v"),
        _method("GetAll", "s", "a{sv}"),
        '<signal name="PropertiesChanged"><arg name="interface" type="s"/>'
        '<arg name="changed_properties" type="a{sv}"/>'
        '<arg name="invalidated_properties" type="as"/></signal>',
    ),
    OBJECT_MANAGER: _iface(
        OBJECT_MANAGER,
        _method("GetManagedObjects", "", "a{oa{sa{sv}}}"),
        '<signal name="InterfacesAdded"><arg name="object" type="o"/>'
        '<arg name="interfaces" type="a{sa{sv}}"/></signal>',
        '<signal name="InterfacesRemoved"><arg name="object" type="o"/>'
        '<arg name="interfaces" type="as"/></signal>',
    ),
    AGENT_MANAGER: _iface(
        AGENT_MANAGER,
        _method("RegisterAgent", "o,s"),
        _method("UnregisterAgent", "o"),
        _method("RequestDefaultAgent", "o"),
    ),
    BLUEZ_ADAPTER: _iface(
        BLUEZ_ADAPTER,
        _method("StartDiscovery"),
        _method("SetDiscoveryFilter", "a{sv}"),
        _method("StopDiscovery"),
        _method("RemoveDevice", "o"),
        _method("GetDiscoveryFilters", "", "as"),
        _prop("Address", "s"),
        _prop("AddressType", "s"),
        _prop("Name", "s"),
        _prop("Alias", "s", "readwrite"),
        _prop("Class", "u"),
        _prop("Powered", "b", "readwrite"),
        _prop("PowerState", "s"),
        _prop("Discoverable", "b", "readwrite"),
        _prop("DiscoverableTimeout", "u", "readwrite"),
        _prop("Pairable", "b", "readwrite"),
        _prop("PairableTimeout", "u", "readwrite"),
        _prop("Discovering", "b"),
        _prop("UUIDs", "as"),
        _prop("Modalias", "s"),
        _prop("Roles", "as"),
    ),
    BLUEZ_DEVICE: _iface(
        BLUEZ_DEVICE,
        _method("Disconnect"),
        _method("Connect"),
        _method("ConnectProfile", "s"),
        _method("DisconnectProfile", "s"),
        _method("Pair"),
        _method("CancelPairing"),
        _prop("Address", "s"),
        _prop("AddressType", "s"),
        _prop("Name", "s"),
        _prop("Alias", "s", "readwrite"),
        _prop("Paired", "b"),
        _prop("Bonded", "b"),
        _prop("Trusted", "b", "readwrite"),
        _prop("Blocked", "b", "readwrite"),
        _prop("LegacyPairing", "b"),
        _prop("RSSI", "n"),
        _prop("Connected", "b"),
        _prop("UUIDs", "as"),
        _prop("Adapter", "o"),
        _prop("ManufacturerData", "a{qv}"),
        _prop("ServiceData", "a{sv}"),
        _prop("TxPower", "n"),
        _prop("ServicesResolved", "b"),
        _prop("AdvertisingFlags", "ay"),
    ),
    BLUEZ_MONITOR_MANAGER: _iface(
        BLUEZ_MONITOR_MANAGER,
        _method("RegisterMonitor", "o"),
        _method("UnregisterMonitor", "o"),
        _prop("SupportedMonitorTypes", "as"),
        _prop("SupportedFeatures", "as"),
    ),
}


def node_xml(interfaces: Iterable[str], children: Iterable[str]) -> str:
    """One node's XML: its interfaces (known ones) and child node names."""
    body = "".join(INTERFACE_XML.get(name, "") for name in interfaces)
    nodes = "".join(f'<node name="{child}"/>' for child in children)
    return f"{_DOCTYPE}<node>{body}{nodes}</node>"
