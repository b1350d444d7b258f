"""An AdvertisementMonitor1 application on dbus-fast, as a passive-scanning client exports it.

No ``from __future__ import annotations`` here: dbus-fast reads the D-Bus
signatures from the annotations.
"""

from dbus_fast.service import PropertyAccess, ServiceInterface, dbus_property, method


class OrPatternsMonitor(ServiceInterface):
    """One ``or_patterns`` monitor; records bluetoothd's calls in ``events``."""

    def __init__(self, patterns: list[tuple[int, int, bytes]]) -> None:
        super().__init__("org.bluez.AdvertisementMonitor1")
        self.patterns = [[start, ad_type, value] for start, ad_type, value in patterns]
        self.events: list[tuple[str, str]] = []

    @method()
    def Release(self):
        self.events.append(("Release", ""))

    @method()
    def Activate(self):
        self.events.append(("Activate", ""))

    @method()
    def DeviceFound(self, device: "o"):  # noqa: F821
        self.events.append(("DeviceFound", device))

    @method()
    def DeviceLost(self, device: "o"):  # noqa: F821
        self.events.append(("DeviceLost", device))

    @dbus_property(access=PropertyAccess.READ)
    def Type(self) -> "s":  # noqa: F821
        return "or_patterns"

    @dbus_property(access=PropertyAccess.READ)
    def Patterns(self) -> "a(yyay)":  # noqa: F821
        return self.patterns

    def called(self, name: str) -> list[str]:
        return [arg for event, arg in self.events if event == name]
