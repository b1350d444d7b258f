"""The two settings that choose a way of working: how adapters listen and where reports come from.

Enums only, with no imports from the package: the settings (``config.py``), the
BlueZ side and the tests all name them, and none of those need each other for it.
"""

from __future__ import annotations

import enum


class ScanMode(enum.Enum):
    """How an adapter listens (README "Scan modes")."""

    ACTIVE = "active"  # StartDiscovery: scan requests, names from scan responses
    PASSIVE = "passive"  # AdvertisementMonitor1: no scan requests, needs bluetoothd -E
    AUTO = "auto"  # passive, with active windows while a client holds a lease


class Ingest(enum.Enum):
    """Where reports come from (README "Ingest"); the value is the option's word."""

    AUTO = "auto"  # the management channel when it works, else D-Bus
    MGMT = "mgmt"  # the channel, required at start; a later failure still falls back
    DBUS = "dbus"  # Device1 PropertiesChanged only
