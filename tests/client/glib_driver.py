"""A velib-style driver on the system python: it exports an object and uses the GLib client.

Prints "ready" once both are set up, then serves until killed.
"""

from __future__ import annotations

import dbus
import dbus.service
from dbus.mainloop.glib import DBusGMainLoop
from gi.repository import GLib

from ble_scanner.client.glib import GlibScannerClient

NAME = "com.victronenergy.test.driver"


class Driver(dbus.service.Object):  # type: ignore[misc]
    @dbus.service.method("com.victronenergy.BusItem", out_signature="s")  # type: ignore[misc]
    def GetText(self) -> str:
        return "alive"


def main() -> None:
    DBusGMainLoop(set_as_default=True)
    bus = dbus.SystemBus()
    name = dbus.service.BusName(NAME, bus)
    driver = Driver(bus, "/Driver")
    client = GlibScannerClient(bus)
    client.subscribe(lambda event: None)
    print("ready", flush=True)
    GLib.MainLoop().run()
    del name, driver


if __name__ == "__main__":
    main()
