"""A velib_python-style consumer, run by the system Python (dbus-python + GLib), as Venus drivers are.

It reads a service the way velib's DbusMonitor and VeDbusItemImport do: GetItems
on "/", GetValue / GetText per path, and ItemsChanged on "/" for updates. It
prints one JSON line when it has read everything, and one when ``watch`` changed.

usage: velib_consumer.py BUS_ADDRESS SERVICE WATCH_PATH
"""

import json
import sys

import dbus
import dbus.bus
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib

BUSITEM = "com.victronenergy.BusItem"


def unwrap(v):
    """ve_utils.unwrap_dbus_value: any empty array is invalid (None)."""
    if isinstance(v, dbus.Array):
        return None if len(v) == 0 else [unwrap(x) for x in v]
    if isinstance(v, dbus.Dictionary):
        return {str(k): unwrap(x) for k, x in v.items()}
    if isinstance(v, dbus.Double):
        return float(v)
    if isinstance(
        v, (dbus.Int16, dbus.Int32, dbus.Int64, dbus.UInt16, dbus.UInt32, dbus.UInt64, dbus.Byte)
    ):
        return int(v)
    if isinstance(v, dbus.String):
        return str(v)
    return v


def main():
    address, service, watch = sys.argv[1:4]
    DBusGMainLoop(set_as_default=True)
    bus = dbus.bus.BusConnection(address)
    loop = GLib.MainLoop()

    def items_changed(items):
        if watch in items:
            change = items[watch]
            print(
                json.dumps(
                    {"changed": {"Value": unwrap(change["Value"]), "Text": str(change["Text"])}}
                )
            )
            sys.stdout.flush()
            loop.quit()

    # DbusMonitor: subscribe first, then scan with GetItems.
    bus.add_signal_receiver(
        items_changed,
        signal_name="ItemsChanged",
        dbus_interface=BUSITEM,
        bus_name=service,
        path="/",
    )
    root = bus.get_object(service, "/", introspect=False)
    items = root.GetItems(dbus_interface=BUSITEM)
    scanned = {
        str(p): {"Value": unwrap(v["Value"]), "Text": str(v["Text"])} for p, v in items.items()
    }
    # VeDbusItemImport: GetValue / GetText on each path.
    imported = {}
    for path in scanned:
        proxy = bus.get_object(service, path, introspect=False)
        imported[path] = {
            "Value": unwrap(proxy.GetValue(dbus_interface=BUSITEM)),
            "Text": str(proxy.GetText(dbus_interface=BUSITEM)),
        }
    legacy = unwrap(root.GetValue(dbus_interface=BUSITEM))
    print(json.dumps({"ready": {"items": scanned, "imported": imported, "root": legacy}}))
    sys.stdout.flush()
    GLib.timeout_add(10000, loop.quit)
    loop.run()


if __name__ == "__main__":
    main()
