"""D-Bus names, paths, limits and timing constants, each named once with its reason."""

from __future__ import annotations

from typing import Final

# --- BlueZ (doc/org.bluez.*.rst; src/error.c) --------------------------------

BLUEZ_SERVICE: Final = "org.bluez"
BLUEZ_ADAPTER: Final = "org.bluez.Adapter1"
BLUEZ_DEVICE: Final = "org.bluez.Device1"
BLUEZ_MONITOR_MANAGER: Final = "org.bluez.AdvertisementMonitorManager1"
BLUEZ_MONITOR: Final = "org.bluez.AdvertisementMonitor1"
BLUEZ_ROOT_PATH: Final = "/org/bluez"

BLUEZ_ERROR_IN_PROGRESS: Final = "org.bluez.Error.InProgress"
BLUEZ_ERROR_NOT_READY: Final = "org.bluez.Error.NotReady"
BLUEZ_ERROR_FAILED: Final = "org.bluez.Error.Failed"
BLUEZ_ERROR_INVALID_ARGUMENTS: Final = "org.bluez.Error.InvalidArguments"
BLUEZ_ERROR_DOES_NOT_EXIST: Final = "org.bluez.Error.DoesNotExist"
BLUEZ_ERROR_NOT_SUPPORTED: Final = "org.bluez.Error.NotSupported"
BLUEZ_ERROR_ALREADY_EXISTS: Final = "org.bluez.Error.AlreadyExists"

# --- freedesktop --------------------------------------------------------------

DBUS_SERVICE: Final = "org.freedesktop.DBus"
DBUS_PATH: Final = "/org/freedesktop/DBus"
DBUS_INTERFACE: Final = "org.freedesktop.DBus"
OBJECT_MANAGER: Final = "org.freedesktop.DBus.ObjectManager"
PROPERTIES: Final = "org.freedesktop.DBus.Properties"
INTROSPECTABLE: Final = "org.freedesktop.DBus.Introspectable"
PEER: Final = "org.freedesktop.DBus.Peer"

ERROR_INVALID_ARGS: Final = "org.freedesktop.DBus.Error.InvalidArgs"
ERROR_LIMITS_EXCEEDED: Final = "org.freedesktop.DBus.Error.LimitsExceeded"
ERROR_ACCESS_DENIED: Final = "org.freedesktop.DBus.Error.AccessDenied"
ERROR_UNKNOWN_METHOD: Final = "org.freedesktop.DBus.Error.UnknownMethod"
ERROR_UNKNOWN_OBJECT: Final = "org.freedesktop.DBus.Error.UnknownObject"
ERROR_SERVICE_UNKNOWN: Final = "org.freedesktop.DBus.Error.ServiceUnknown"
ERROR_NAME_HAS_NO_OWNER: Final = "org.freedesktop.DBus.Error.NameHasNoOwner"
# While bluetoothd is down, Debian's activation file makes the bus try to spawn
# it; without systemd that fails with this instead of ServiceUnknown (measured
# on the Debian guests: tests/README.md "Same on 5.66 and 5.82, and modelled by
# the simulator").
ERROR_SPAWN_CHILD_EXITED: Final = "org.freedesktop.DBus.Error.Spawn.ChildExited"
ERROR_NO_REPLY: Final = "org.freedesktop.DBus.Error.NoReply"
# The bus daemon answers AddMatch, GetNameOwner and the like from memory; no
# answer in 5 s means it is wedged (dbus-fast has no timeout of its own).
DBUS_DAEMON_CALL_TIMEOUT: Final = 5.0

# --- our service (docs/dbus-api.md "Scanner1") ---------------------------------

SCANNER_SERVICE: Final = "com.victronenergy.ble.scanner"
SCANNER_INTERFACE: Final = "com.victronenergy.ble.Scanner1"
SCANNER_PATH: Final = "/"
SUBSCRIPTION_PATH_PREFIX: Final = "/Subscription/"
# Error names of our own, for conditions the freedesktop names do not cover.
SCANNER_ERROR_NOT_OWNER: Final = "com.victronenergy.ble.Error.NotOwner"
SCANNER_ERROR_UNKNOWN_SUBSCRIPTION: Final = "com.victronenergy.ble.Error.UnknownSubscription"
SCANNER_ERROR_UNKNOWN_LEASE: Final = "com.victronenergy.ble.Error.UnknownLease"

# --- limits (docs/dbus-api.md "Scanner1", Errors and limits) -------------------

MAX_FILTER_LIST_ENTRIES: Final = 64
MAX_SUBSCRIPTIONS_PER_CONNECTION: Final = 16
MAX_SUBSCRIPTIONS_TOTAL: Final = 256
# Per Unix user (not root), and the last ones only root may take (config/table.py
# says why these numbers): a user with many connections cannot take them all.
DEFAULT_MAX_SUBSCRIPTIONS_PER_USER: Final = 64
DEFAULT_SUBSCRIPTIONS_RESERVED_FOR_ROOT: Final = 32
DEFAULT_MAX_LEASES_PER_USER: Final = 16
DEFAULT_STEER_GROUP: Final = "bluetooth"
# A Names glob longer than this cannot be a device name pattern (BLE names are
# at most 248 bytes); it bounds fnmatch's work per report.
MAX_NAME_PATTERN_LENGTH: Final = 248
# Any string argument longer than this is rejected before it is looked at.
MAX_STRING_ARGUMENT: Final = 1024

# --- BLE payload bounds -------------------------------------------------------

# Legacy advertising carries at most 31 bytes, extended advertising at most
# 1650 (Core spec Vol 6 Part B 2.3.4.9). Anything larger from BlueZ is bogus.
MAX_PAYLOAD_BYTES: Final = 1650
# RSSI in dBm as BlueZ reports it (int16, and -127..20 in its filter parser).
RSSI_MIN: Final = -127
RSSI_MAX: Final = 20
# HCI's "RSSI not available" (Core spec Vol 4 Part E 7.7.65.2), the top of the
# int8 the controller reports: btvirt sends it. A reading, but of nothing.
RSSI_UNAVAILABLE: Final = 127
# Company identifiers (Bluetooth SIG Assigned Numbers) are 16-bit.
MAX_COMPANY_ID: Final = 0xFFFF

# --- settings: the defaults of config/table.py ---------------------------------

# A device unheard this long is lost. BlueZ itself drops temporary devices after
# 30 s (src/main.c DEFAULT_TEMPORARY_TIMEOUT), but many sensors advertise only
# every 10-60 s, so 180 s keeps them present between reports.
DEFAULT_LOST_TIMEOUT: Final = 180.0
# Bound on cached devices: ~2 KB each (tests/bench/README.md), so 10 000 is ~20 MB
# of a 1 GB Cerbo GX.
DEFAULT_CACHE_SIZE: Final = 10_000
# Broadcast DeviceDiscovered re-sent for an unchanged device this often, so a
# listener can tell "still there" from "gone quiet" without polling.
DEFAULT_BROADCAST_KEEP_ALIVE: Final = 60.0
# Broadcast RSSI change that counts as news. BlueZ's own threshold for
# unfiltered discovery is 8 dBm (src/device.c RSSI_THRESHOLD; under the
# service's filter BlueZ sends every RSSI); 8 keeps the broadcast no chattier.
DEFAULT_BROADCAST_RSSI_DELTA: Final = 8
# The broadcast tells each device at most once per this many seconds (the latest
# state when it ends): the Venus GUI refreshes once a second, so a broadcast
# listener loses nothing it shows, and a sensor whose every advertisement is new
# (a counter: Victron, Ruuvi, Mopeka) costs one broadcast a second, not ten.
DEFAULT_BROADCAST_INTERVAL: Final = 1.0
# The opt-in /Devices list in the Venus tree goes to MQTT and VRM through
# flashmq: the 20 strongest devices show what is around without a flood.
DEFAULT_PUBLISH_DEVICES_MAX: Final = 20

# The state file (statefile.py) is written this often while running, and on
# SIGTERM: a crash loses at most this much. Every 5 minutes keeps flash writes
# to a few hundred a day, a few MB each in the largest cache.
DEFAULT_STATE_SAVE_INTERVAL: Final = 300.0

# --- timing -------------------------------------------------------------------

# How often the cache looks for lost devices. Loss is reported at most this late.
LOST_SWEEP_INTERVAL: Final = 1.0
# Every call to BlueZ gets an answer or an error within this: dbus-fast and the
# system bus have no timeout of their own (dbus-fast's MessageBus.call takes
# none; dbus-daemon's reply_timeout defaults to never, bus/config-parser.c).
BLUEZ_CALL_TIMEOUT: Final = 5.0
# Second retry of a failed StartDiscovery (the first is immediate), doubled up
# to the maximum. InProgress from a kernel refusal (another scanner holds the
# controller) clears only when that scanner stops, and BlueZ signals nothing
# then: polling every 10 s finds it soon enough without loading the adapter.
REARM_BACKOFF_INITIAL: Final = 0.25
REARM_BACKOFF_MAX: Final = 10.0
# A session that stayed up this long ends the backoff: the adapter works again.
STABLE_SESSION_SECONDS: Final = 10.0
# After bluetoothd (re)appears the kernel may still run the dead daemon's LE
# discovery and refuse ours with InProgress until it times out (DISCOV_LE_TIMEOUT
# 10.24 s; measured 10.0-10.4 s on 5.66 and 5.82, tests/realbluez): for this
# long after an adapter appears, InProgress is retried at a steady pace.
ORPHAN_SCAN_WINDOW: Final = 12.0
# The failure count whose backoff is that pace: 0.5 s.
ORPHAN_SCAN_RETRY_FAILURES: Final = 3
# An adapter that was hearing advertisements and then hears nothing for this
# long, while we scan, is stuck (HA's SCANNER_WATCHDOG_TIMEOUT is 90 s too).
WATCHDOG_SILENCE: Final = 90.0
# A power cycle disturbs every connection on the adapter: one per silence (a
# second finds no more than the first did), and at most this many an hour.
WATCHDOG_MAX_POWER_CYCLES_PER_HOUR: Final = 3
# A silence that outlasts the power cycle is most likely a quiet place: the
# restarts that go on double their interval up to this.
WATCHDOG_MAX_INTERVAL: Final = 900.0
# The watchdog looks at the report counts this many times per silence, so a
# silence is acted on at most a quarter late ...
WATCHDOG_LOOKS_PER_SILENCE: Final = 4
# ... and at least this often, so that a long silence setting is not looked at lazily.
WATCHDOG_MAX_LOOK_INTERVAL: Final = 5.0
# SIGTERM must end in an exit within 2 s (docs/behaviour.md "Against BlueZ");
# the cleanup calls get this.
SHUTDOWN_TIMEOUT: Final = 1.5
