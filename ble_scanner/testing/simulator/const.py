"""BlueZ 5.72 numbers and error texts the simulator reproduces, each with its source."""

from __future__ import annotations

from typing import Final

from ble_scanner.const import (
    BLUEZ_ERROR_ALREADY_EXISTS,
    BLUEZ_ERROR_DOES_NOT_EXIST,
    BLUEZ_ERROR_FAILED,
    BLUEZ_ERROR_IN_PROGRESS,
    BLUEZ_ERROR_INVALID_ARGUMENTS,
    BLUEZ_ERROR_NOT_READY,
    BLUEZ_ERROR_NOT_SUPPORTED,
)

ErrorSpec = tuple[str, str]

# src/error.c: the helper names are in the comments.
ERR_BUSY: Final[ErrorSpec] = (BLUEZ_ERROR_IN_PROGRESS, "Operation already in progress")  # busy
ERR_IN_PROGRESS: Final[ErrorSpec] = (BLUEZ_ERROR_IN_PROGRESS, "In Progress")  # in_progress
ERR_NOT_READY: Final[ErrorSpec] = (BLUEZ_ERROR_NOT_READY, "Resource Not Ready")
ERR_INVALID_ARGS: Final[ErrorSpec] = (
    BLUEZ_ERROR_INVALID_ARGUMENTS,
    "Invalid arguments in method call",
)
ERR_DOES_NOT_EXIST: Final[ErrorSpec] = (BLUEZ_ERROR_DOES_NOT_EXIST, "Does Not Exist")
ERR_ALREADY_EXISTS: Final[ErrorSpec] = (BLUEZ_ERROR_ALREADY_EXISTS, "Already Exists")
ERR_NOT_SUPPORTED: Final[ErrorSpec] = (BLUEZ_ERROR_NOT_SUPPORTED, "Operation is not supported")
# stop_discovery: the sender holds no session (even if others do).
ERR_NO_DISCOVERY: Final[ErrorSpec] = (BLUEZ_ERROR_FAILED, "No discovery started")

# src/device.c RSSI_THRESHOLD: device_set_rssi() does not emit smaller RSSI
# moves. Only unfiltered discovery uses it: under filtered discovery (any
# session's filter that is not the trivial one, DuplicateData included)
# btd_adapter_device_found emits RSSI on every report (filters.py).
RSSI_THRESHOLD: Final = 8
# src/main.c DEFAULT_TEMPORARY_TIMEOUT: an unheard temporary device is removed.
DEFAULT_TEMPORARY_TIMEOUT: Final = 30.0
# Filter limits from parse_discovery_filter_dict (src/adapter.c).
FILTER_RSSI_MIN: Final = -127
FILTER_RSSI_MAX: Final = 20
FILTER_PATHLOSS_MAX: Final = 137
# TxPower 127 and RSSI 0 mean "unknown" in BlueZ; the property is then absent.
TX_POWER_UNKNOWN: Final = 127
RSSI_UNKNOWN: Final = 0
# Advertising flags: LE Limited / General Discoverable (Core spec Supplement A 1.3).
FLAG_LIMITED_DISCOVERABLE: Final = 0x01
FLAG_GENERAL_DISCOVERABLE: Final = 0x02
# parsers[] of src/adapter.c: 7 keys in 5.66/5.72, AutoConnect added later.
FILTER_KEYS_572: Final = (
    "UUIDs",
    "RSSI",
    "Pathloss",
    "Transport",
    "DuplicateData",
    "Discoverable",
    "Pattern",
)
FILTER_KEYS_HEAD: Final = (*FILTER_KEYS_572, "AutoConnect")
SUPPORTED_VERSIONS: Final = ("5.66", "5.72", "head")
# Versions whose Device1.UUIDs leave out the UUIDs of service data: measured on
# Debian's 5.66 (tests/realbluez). add_service_data() has called
# device_add_eir_uuids() since the probe_on_discover change of August 2023
# (after 5.66, before 5.72); 5.82 measured adding them.
SERVICE_DATA_UUIDS_NOT_IN_UUIDS: Final = frozenset({"5.66"})
# net/bluetooth DISCOV_LE_TIMEOUT (10240 ms): a crashed bluetoothd's LE
# discovery keeps the controller busy this long; the next bluetoothd's
# StartDiscovery gets InProgress meanwhile (measured 10.0-10.4 s on 5.66 and
# 5.82 in tests/realbluez).
KERNEL_LE_DISCOVERY_TIMEOUT: Final = 10.24
# bluetoothd 5.66 and 5.82 die of heap corruption ("malloc(): invalid size")
# reading an or_patterns monitor with 8 or more patterns; 7 work, and so do
# 8 monitors of 4 (measured in tests/realbluez; kernel 6.1 also refused 8
# with MGMT status 0x0d once).
MONITOR_CRASH_PATTERNS: Final = 8
BASE_UUID_SUFFIX: Final = "-0000-1000-8000-00805f9b34fb"
# Monitor RSSI thresholds: 127 means "unset" (doc/org.bluez.AdvertisementMonitor.rst).
MONITOR_RSSI_UNSET: Final = 127
# Writer queue length at which async advertise() waits for the socket to drain,
# so a burst of reports cannot grow the simulator's memory without bound.
DRAIN_HIGH_WATER: Final = 512
