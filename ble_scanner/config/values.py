"""What the user sets, as the service uses it: ``ScannerConfig``.

The record the hub, the BlueZ side and the Venus pieces read. Its defaults
are the settings table's (``table``; ``tests/unit/test_config.py`` holds them
equal); it is filled from the command line (``options``) and from
localsettings (``venus/settings.py``), each value checked by ``checks``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from ..bluez.claims import DEFAULT_DRAIN_TIMEOUT
from ..bluez.watchdog import DEFAULT_SILENCE_POWER_CYCLE
from ..const import (
    DEFAULT_BROADCAST_INTERVAL,
    DEFAULT_BROADCAST_KEEP_ALIVE,
    DEFAULT_BROADCAST_RSSI_DELTA,
    DEFAULT_CACHE_SIZE,
    DEFAULT_LOST_TIMEOUT,
    DEFAULT_MAX_LEASES_PER_USER,
    DEFAULT_MAX_SUBSCRIPTIONS_PER_USER,
    DEFAULT_PUBLISH_DEVICES_MAX,
    DEFAULT_STEER_GROUP,
    DEFAULT_SUBSCRIPTIONS_RESERVED_FOR_ROOT,
    WATCHDOG_SILENCE,
)
from ..core.loadcap import DEFAULT_SHED_CPU_PERCENT, DEFAULT_SHED_LOAD_AVERAGE
from ..venus.blesensors import BLE_SENSORS_COMPANY_IDS, NOT_TAKEN


@dataclass(slots=True, frozen=True)
class ScannerConfig:
    """What the user sets (command line, localsettings); ``Hub.configure`` applies it live.

    The defaults here are the table's (``tests/unit/test_config.py`` holds them
    equal). Values are not checked on construction, so tests may use ranges a
    user cannot; ``from_text`` and ``from_stored`` check what users give.
    """

    adapters: frozenset[str] = frozenset()  # empty: every adapter
    lost_timeout: float = DEFAULT_LOST_TIMEOUT
    cache_size: int = DEFAULT_CACHE_SIZE
    broadcast_keep_alive: float = DEFAULT_BROADCAST_KEEP_ALIVE  # 0: never
    broadcast_rssi_delta: int = DEFAULT_BROADCAST_RSSI_DELTA
    broadcast_interval: float = DEFAULT_BROADCAST_INTERVAL  # 0: every change
    # Reports whose manufacturer data carries only these company ids are
    # dropped before they reach the cache (e.g. 0x004C for Apple's chatter).
    ignore_company_ids: frozenset[int] = frozenset()
    ignore_addresses: frozenset[str] = frozenset()
    min_rssi: int | None = None
    scan_mode: str = "active"  # one of SCAN_MODES
    publish_devices: bool = False
    publish_devices_max: int = DEFAULT_PUBLISH_DEVICES_MAX
    custom_name: str = ""
    shed_load_average: float = DEFAULT_SHED_LOAD_AVERAGE  # 0: not a trigger
    shed_cpu_percent: int = DEFAULT_SHED_CPU_PERCENT  # 0: not a trigger
    ble_sensors_feed: bool = False
    ble_sensors_company_ids: frozenset[int] = BLE_SENSORS_COMPANY_IDS
    # dbus-ble-sensors' Bluetooth/Enabled as the feed found it (NOT_TAKEN: untouched).
    ble_sensors_bluetooth_was: int = NOT_TAKEN
    silence_restart: float = WATCHDOG_SILENCE
    silence_power_cycle: float = DEFAULT_SILENCE_POWER_CYCLE
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    steer_group: str = DEFAULT_STEER_GROUP  # a group name or a numeric gid; "": root only
    max_subscriptions_per_user: int = DEFAULT_MAX_SUBSCRIPTIONS_PER_USER
    subscriptions_reserved_for_root: int = DEFAULT_SUBSCRIPTIONS_RESERVED_FOR_ROOT
    max_leases_per_user: int = DEFAULT_MAX_LEASES_PER_USER
    ingest: str = "auto"  # one of INGESTS
    mgmt_socket: str = ""  # a simulator's seam instead of the kernel's channel (tests)


Value = float | int | str | bool | frozenset[str] | frozenset[int] | None
Stored = int | float | str
"""A value as localsettings holds it: int32, double or string (it has no booleans)."""


def with_values(config: ScannerConfig, values: Mapping[str, Value]) -> ScannerConfig:
    """``config`` with some fields changed, each to a value the table's checks gave."""
    return replace(config, **values)  # type: ignore[arg-type]  # typed by the table
