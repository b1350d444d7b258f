"""D-Bus names used only by the simulator (shared ones live in ble_scanner.const)."""

from __future__ import annotations

from typing import Final

AGENT_MANAGER: Final = "org.bluez.AgentManager1"
ERROR_UNKNOWN_PROPERTY: Final = "org.freedesktop.DBus.Error.UnknownProperty"
ERROR_PROPERTY_READ_ONLY: Final = "org.freedesktop.DBus.Error.PropertyReadOnly"
# gdbus adds these two to every object it registers, and lists them in
# InterfacesAdded / InterfacesRemoved / GetManagedObjects.
STANDARD_INTERFACES: Final = (
    "org.freedesktop.DBus.Introspectable",
    "org.freedesktop.DBus.Properties",
)
