"""Every setting of the service, described once: its table.

The command line (``options``: argparse options and ``--help``),
localsettings (``checks.add_settings_definitions``: ``AddSettings`` under
``/Settings/BleScanner``), the checking of every value from either place
(``checks``) and the settings table in the documentation (``markdown``) are
all made from ``SETTINGS`` and ``PROCESS_OPTIONS``; nothing else lists a
default or a range. Pure logic: no D-Bus here.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ..bluez.claims import CLAIMS_DIR, DEFAULT_DRAIN_TIMEOUT
from ..bluez.watchdog import DEFAULT_SILENCE_POWER_CYCLE, MIN_SILENCE
from ..const import (
    DEFAULT_BROADCAST_INTERVAL,
    DEFAULT_BROADCAST_KEEP_ALIVE,
    DEFAULT_BROADCAST_RSSI_DELTA,
    DEFAULT_CACHE_SIZE,
    DEFAULT_LOST_TIMEOUT,
    DEFAULT_MAX_LEASES_PER_USER,
    DEFAULT_MAX_SUBSCRIPTIONS_PER_USER,
    DEFAULT_PUBLISH_DEVICES_MAX,
    DEFAULT_STATE_SAVE_INTERVAL,
    DEFAULT_STEER_GROUP,
    DEFAULT_SUBSCRIPTIONS_RESERVED_FOR_ROOT,
    MAX_FILTER_LIST_ENTRIES,
    MAX_SUBSCRIPTIONS_PER_CONNECTION,
    MAX_SUBSCRIPTIONS_TOTAL,
    RSSI_MAX,
    RSSI_MIN,
    WATCHDOG_SILENCE,
)
from ..core import identifiers
from ..core.filters import MAX_SECONDS
from ..core.leases import MAX_LEASES_PER_CONNECTION
from ..core.loadcap import DEFAULT_SHED_CPU_PERCENT, DEFAULT_SHED_LOAD_AVERAGE
from ..venus.blesensors import BLE_SENSORS_COMPANY_IDS, NOT_TAKEN
from ..venus.const import SETTINGS_PREFIX
from .values import Value

# The values of bluez ScanMode (docs/behaviour.md "Scan modes"); tests/unit/test_config.py
# holds the two equal, so that this module need not import the BlueZ side.
SCAN_MODES: Final = ("active", "passive", "auto")
# The values of bluez Ingest (docs/behaviour.md "Ingest"), held equal the same way.
INGESTS: Final = ("auto", "mgmt", "dbus")
# A Unix socket path fills sockaddr_un's 108-byte sun_path with its NUL (unix(7)).
_UNIX_PATH_MAX: Final = 107
# A Bluetooth SIG company identifier is a uint16 (Assigned Numbers, Company Identifiers).
COMPANY_ID_MAX: Final = 0xFFFF
# groupadd(8): "Groupnames may only be up to 32 characters long".
_GROUP_NAME_MAX: Final = 32
# hciN as the kernel names adapters; three digits is more adapters than any GX has.
_ADAPTER_DIGITS_MAX: Final = 3


class Kind(enum.Enum):
    """How a setting's value is written and checked."""

    SECONDS = enum.auto()  # a duration; a double in localsettings
    NUMBER = enum.auto()  # any other fraction; a double in localsettings
    INTEGER = enum.auto()
    CHOICE = enum.auto()  # one word of ``choices``
    LIST = enum.auto()  # comma separated in localsettings, a repeated option on the command line
    TEXT = enum.auto()
    FLAG = enum.auto()  # 0 / 1 in localsettings (it refuses booleans), a switch on the command line


@dataclass(slots=True, frozen=True)
class Setting:
    """One setting: its value, where it is set, what it may be, and why."""

    field: str  # the ScannerConfig attribute (for PROCESS_OPTIONS: the argparse dest)
    kind: Kind
    default: Value
    help: str  # what it does, for --help and docs/settings.md
    flag: str | None = None  # command-line option; None: localsettings only
    name: str | None = None  # below /Settings/BleScanner; None: command line only
    low: float | None = None  # a number's inclusive range
    high: float | None = None  # also a LIST's most entries and a TEXT's most characters
    why: str = ""  # where the range comes from
    unit: str = ""
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    item: Callable[[str], str | int] | None = None  # LIST: one entry, or ValueError
    live: bool = True  # applied at once when it changes; False: read at start
    default_text: str = ""  # the default in words, when it depends on the machine

    @property
    def path(self) -> str | None:
        return f"{SETTINGS_PREFIX}/{self.name}" if self.name is not None else None


# --- list entries -------------------------------------------------------------


def adapter_name(text: str) -> str:
    """``hci0``; anything else is a ValueError."""
    name = text.strip()
    number = name.removeprefix("hci")
    if (
        name == number
        or not (number.isascii() and number.isdigit())
        or len(number) > _ADAPTER_DIGITS_MAX
    ):
        raise ValueError(f"{text!r} is not an adapter name like hci0")
    return name


def company_id(text: str) -> int:
    """``0x004C`` or ``76`` -> 76: a Bluetooth SIG company id, decimal or hex."""
    try:
        value = int(text.strip(), 0)
    except ValueError:
        raise ValueError(f"{text!r} is not a company id (decimal or 0x hex)") from None
    if not 0 <= value <= COMPANY_ID_MAX:
        raise ValueError(f"{text!r} is outside 0..0xFFFF")
    return value


def address(text: str) -> str:
    """``aa:bb:cc:dd:ee:ff`` -> ``AA:BB:CC:DD:EE:FF``."""
    return identifiers.normalize_address(text)


# --- the table -----------------------------------------------------------------

_LIST_WHY = f"the same bound as a subscription's filter lists ({MAX_FILTER_LIST_ENTRIES})"

SETTINGS: Final[tuple[Setting, ...]] = (
    Setting(
        "adapters", Kind.LIST, frozenset(),
        "Adapters to scan on (hciN); none given: every adapter",
        flag="--adapter", name="Adapters", metavar="HCI", item=adapter_name,
        high=MAX_FILTER_LIST_ENTRIES, why=_LIST_WHY,
    ),
    Setting(
        "lost_timeout", Kind.SECONDS, DEFAULT_LOST_TIMEOUT,
        "Seconds without an advertisement before a device is lost (DeviceLost); a device "
        "with a learned advertising interval is lost sooner (docs/behaviour.md, Presence)",
        flag="--lost-timeout", name="LostTimeout", metavar="S", unit="s",
        low=10.0, high=MAX_SECONDS,
        why="below 10 s a sensor that advertises every few seconds flaps between found and "
        "lost; past a day 'present' means nothing (subscriptions' KeepAlive has the same top)",
    ),
    Setting(
        "cache_size", Kind.INTEGER, DEFAULT_CACHE_SIZE,
        "Most devices kept; the least recently heard go first",
        flag="--cache-size", name="CacheSize", metavar="N",
        low=100, high=50_000,
        why="100 keeps a busy marina's devices; 50 000 at the ~2 KB a device measured is "
        "~100 MB, inside service/run's 150 MB softlimit",
    ),
    Setting(
        "broadcast_keep_alive", Kind.SECONDS, DEFAULT_BROADCAST_KEEP_ALIVE,
        "Repeat an unchanged, still advertising device on the broadcast this often; 0: never",
        flag="--keep-alive", name="BroadcastKeepAlive", metavar="S", unit="s",
        low=0.0, high=MAX_SECONDS,
        why="0 turns it off; a day is the top of a subscription's KeepAlive, which means the same",
    ),
    Setting(
        "broadcast_rssi_delta", Kind.INTEGER, DEFAULT_BROADCAST_RSSI_DELTA,
        "RSSI change that re-sends a device on the broadcast "
        "(8, as BlueZ's threshold for unfiltered discovery)",
        flag="--rssi-delta", name="BroadcastRssiDelta", metavar="DBM", unit="dBm",
        low=0, high=RSSI_MAX - RSSI_MIN,
        why="a subscription's RssiDelta range: 0 and 1 re-send on every change; 147, BlueZ's "
        "whole RSSI span (-127..20), means in practice only on new content",
    ),
    Setting(
        "broadcast_interval", Kind.SECONDS, DEFAULT_BROADCAST_INTERVAL,
        "Broadcast each device at most this often, its latest state when the time is up "
        "(subscriptions get every change); 0: every change",
        flag="--broadcast-interval", name="BroadcastInterval", metavar="S", unit="s",
        low=0.0, high=60.0,
        why="0 is every change, as before; a minute is the broadcast's default KeepAlive: "
        "a slower broadcast would show readings older than a still device's keep-alive",
    ),
    Setting(
        "ignore_company_ids", Kind.LIST, frozenset(),
        "Manufacturer ids never reported, decimal or 0x hex (e.g. 0x004C for Apple)",
        flag="--ignore-company-id", name="IgnoreCompanyIds", metavar="ID", item=company_id,
        high=MAX_FILTER_LIST_ENTRIES, why=_LIST_WHY,
    ),
    Setting(
        "ignore_addresses", Kind.LIST, frozenset(),
        "Addresses never reported",
        flag="--ignore-address", metavar="ADDR", item=address,
        high=MAX_FILTER_LIST_ENTRIES, why=_LIST_WHY, live=False,
    ),
    Setting(
        "min_rssi", Kind.INTEGER, None,
        "Drop reports weaker than this; none: keep every report",
        flag="--min-rssi", metavar="DBM", unit="dBm",
        low=RSSI_MIN, high=RSSI_MAX,
        why="the RSSI BlueZ reports (-127..20 in its filter parser)", live=False,
    ),
    Setting(
        "scan_mode", Kind.CHOICE, "active",
        "active: discovery with scan requests (names from scan responses); passive: an "
        "AdvertisementMonitor, no scan requests (needs bluetoothd -E); auto: passive, with "
        "active windows while a client asks for them",
        flag="--scan-mode", name="ScanMode", metavar="MODE", choices=SCAN_MODES,
        why="the three modes the BlueZ side has",
    ),
    Setting(
        "publish_devices", Kind.FLAG, False,
        "1: publish a capped, throttled device list under /Devices in the Venus tree "
        "(goes to MQTT and VRM)",
        name="PublishDevices", low=0, high=1, why="off or on",
    ),
    Setting(
        "publish_devices_max", Kind.INTEGER, DEFAULT_PUBLISH_DEVICES_MAX,
        "Most devices published when PublishDevices is 1 (strongest first)",
        name="PublishDevicesMax", low=1, high=100,
        why="the list goes to MQTT and VRM through flashmq: a hundred is already a long page",
    ),
    Setting(
        "custom_name", Kind.TEXT, "",
        "Name of the scanner in the GUI and VRM; also writable as /CustomName",
        name="CustomName", high=128,
        why="a name for one row in the GUI; the bound keeps a client from storing a page of "
        "text in settings.xml",
    ),
    Setting(
        "shed_load_average", Kind.NUMBER, DEFAULT_SHED_LOAD_AVERAGE,
        "Shed work (docs/behaviour.md 'Under load') when the 5-minute load average "
        "reaches this; 0: never for the load average",
        flag="--shed-load-average", name="ShedLoadAverage", metavar="LOAD",
        low=0.0, high=64.0,
        why="Venus's watchdog reboots the GX when the 15-minute load average reaches 6 "
        "(/etc/watchdog.conf max-load-15); the 5-minute average leads it, and 4.5 leaves 1.5 "
        "for the rest of the GX; 64 is far past any load a GX survives",
    ),
    Setting(
        "shed_cpu_percent", Kind.INTEGER, DEFAULT_SHED_CPU_PERCENT,
        "Shed work (docs/behaviour.md 'Under load') when the service uses this much of "
        "one CPU core; 0: never for the CPU share",
        flag="--shed-cpu-percent", name="ShedCpuPercent", metavar="PCT", unit="%",
        low=0, high=100,
        why="a Cerbo GX is a dual Cortex-A7 shared by a dozen services: 40 % of one core, a "
        "fifth of the machine, is a crowd, not a normal site; the service is one thread, so "
        "100 is all it can take",
    ),
    Setting(
        "ble_sensors_feed", Kind.FLAG, False,
        "1: send every report of a device dbus-ble-sensors handles to its UDP input and switch "
        "its own Bluetooth scan off (README 'Let dbus-ble-scanner do the scanning for "
        "dbus-ble-sensors'); 0: put its scan back",
        flag="--ble-sensors-feed", name="BleSensorsFeed", low=0, high=1, why="off or on",
    ),
    Setting(
        "ble_sensors_company_ids", Kind.LIST, BLE_SENSORS_COMPANY_IDS,
        "Manufacturer ids whose reports go to dbus-ble-sensors, decimal or 0x hex; the default "
        "is every id dbus-ble-sensors v0.31 handles",
        name="BleSensorsCompanyIds", item=company_id,
        high=MAX_FILTER_LIST_ENTRIES, why=_LIST_WHY,
    ),
    Setting(
        "ble_sensors_bluetooth_was", Kind.INTEGER, NOT_TAKEN,
        "Kept by the service, not for editing: dbus-ble-sensors' Bluetooth/Enabled before the "
        "feed switched it off, put back when the feed is turned off or by tools/uninstall.sh; "
        "-1: nothing taken over",
        name="BleSensorsBluetoothWas", low=NOT_TAKEN, high=1,
        why="-1 or the 0/1 of Bluetooth/Enabled",
    ),
    Setting(
        "silence_restart", Kind.SECONDS, WATCHDOG_SILENCE,
        "Seconds without a report, while scanning, before the watchdog restarts discovery "
        "on an adapter that was hearing advertisements (silence while a device on it is "
        "connected does not count)",
        flag="--silence-restart", name="SilenceRestart", metavar="S", unit="s",
        low=MIN_SILENCE, high=MAX_SECONDS,
        why="below 5 s an adapter whose one sensor advertises every few seconds looks silent "
        "between reports; a day is as good as never",
    ),
    Setting(
        "silence_power_cycle", Kind.SECONDS, DEFAULT_SILENCE_POWER_CYCLE,
        "Further seconds of silence after that restart before the one power cycle of the "
        "adapter (never while a link is on it: docs/behaviour.md 'Other processes' links "
        "and claims')",
        flag="--silence-power-cycle", name="SilencePowerCycle", metavar="S", unit="s",
        low=MIN_SILENCE, high=MAX_SECONDS,
        why="the restart needs a few seconds to show whether it helped; a day is as good as "
        "never",
    ),
    Setting(
        "drain_timeout", Kind.SECONDS, DEFAULT_DRAIN_TIMEOUT,
        "How long a power cycle waits, holding the adapter's bt-claims drain, for other "
        "processes' links and uses (and connected devices) to go; if any remain it is held off",
        flag="--drain-timeout", name="DrainTimeout", metavar="S", unit="s",
        low=0.0, high=600.0,
        why="0 only looks once; past ten minutes a stuck adapter stays stuck for longer than "
        "any connection manager needs to move its links",
    ),
    Setting(
        "ingest", Kind.CHOICE, "auto",
        "Where reports come from (docs/behaviour.md 'Ingest'): mgmt: the kernel's Bluetooth "
        "management channel (needs CAP_NET_ADMIN), required at start; dbus: BlueZ's Device1 "
        "signals; auto: the channel when it can be opened, else D-Bus, trying the channel again",
        flag="--ingest", name="Ingest", metavar="INGEST", choices=INGESTS,
        why="the three ingests the BlueZ side has",
    ),
    Setting(
        "mgmt_socket", Kind.TEXT, "",
        "Read management frames from this Unix SOCK_SEQPACKET socket instead of the kernel "
        "(the simulator's seam, for tests)",
        flag="--mgmt-socket", metavar="PATH", high=_UNIX_PATH_MAX, live=False,
        why="sockaddr_un's sun_path (unix(7))",
    ),
    Setting(
        "steer_group", Kind.TEXT, DEFAULT_STEER_GROUP,
        "Members of this group (a name or a numeric gid) may steer the radio (PauseScan, "
        "RequestActiveScan), as root may; empty: root only (docs/dbus-api.md 'Who may do what')",
        flag="--steer-group", name="SteerGroup", metavar="GROUP", high=_GROUP_NAME_MAX,
        why="bluetooth: the group Debian's bluez package names in its bus policy "
        "(/etc/dbus-1/system.d/bluetooth.conf) for Bluetooth's users; 32 characters is "
        "groupadd's longest group name",
    ),
    Setting(
        "max_subscriptions_per_user", Kind.INTEGER, DEFAULT_MAX_SUBSCRIPTIONS_PER_USER,
        "Most subscriptions one Unix user other than root holds over all its connections",
        flag="--max-subscriptions-per-user", name="MaxSubscriptionsPerUser", metavar="N",
        low=MAX_SUBSCRIPTIONS_PER_CONNECTION, high=MAX_SUBSCRIPTIONS_TOTAL,
        why=f"the default is four connections' worth ({MAX_SUBSCRIPTIONS_PER_CONNECTION} each), "
        f"a quarter of the {MAX_SUBSCRIPTIONS_TOTAL} the service holds, so one user's programs "
        "cannot crowd out the others; never less than one connection's worth",
    ),
    Setting(
        "subscriptions_reserved_for_root", Kind.INTEGER, DEFAULT_SUBSCRIPTIONS_RESERVED_FOR_ROOT,
        "The last subscriptions of the service's total that only root may take",
        flag="--subscriptions-reserved-for-root", name="SubscriptionsReservedForRoot",
        metavar="N", low=0, high=MAX_SUBSCRIPTIONS_TOTAL // 2,
        why=f"the default is two connections' worth for root's own services (the GUI, Node-RED "
        f"on a GX); at most half of the {MAX_SUBSCRIPTIONS_TOTAL}, so other users keep the rest",
    ),
    Setting(
        "max_leases_per_user", Kind.INTEGER, DEFAULT_MAX_LEASES_PER_USER,
        "Most leases (PauseScan, RequestActiveScan) one Unix user other than root holds over "
        "all its connections",
        flag="--max-leases-per-user", name="MaxLeasesPerUser", metavar="N",
        low=MAX_LEASES_PER_CONNECTION, high=256,
        why=f"the default is two connections' worth ({MAX_LEASES_PER_CONNECTION} each): one "
        "program connecting to devices needs one pause at a time; 256 is the subscriptions' total",
    ),
)  # fmt: skip
"""The settings in ``ScannerConfig``, in the order docs/settings.md lists them."""

PROCESS_OPTIONS: Final[tuple[Setting, ...]] = (
    Setting(
        "no_settings", Kind.FLAG, False,
        "Do not use localsettings (com.victronenergy.settings); the options here apply",
        flag="--no-settings", live=False,
    ),
    Setting(
        "settings_wait", Kind.SECONDS, 0.0,
        "How long to wait for localsettings before scanning with the options here; 0: do not "
        "wait (the settings apply live whenever localsettings appears)",
        flag="--settings-wait", metavar="S", unit="s", low=0.0, high=60.0, live=False,
        why="on a GX localsettings is up long before us; a minute covers a slow development start",
    ),
    Setting(
        "state_file", Kind.TEXT, None,
        "File that keeps the device cache across restarts (written on SIGTERM and every "
        "--state-save-interval, read at start); empty: none",
        flag="--state-file", metavar="PATH", high=4096, live=False,
        default_text="/data/var/lib/dbus-ble-scanner/devices.json on Venus OS, "
        "/var/lib/dbus-ble-scanner/devices.json elsewhere",
        why="PATH_MAX on Linux",
    ),
    Setting(
        "state_save_interval", Kind.SECONDS, DEFAULT_STATE_SAVE_INTERVAL,
        "How often the state file is written while running: what a crash loses",
        flag="--state-save-interval", metavar="S", unit="s", low=5.0, high=86400.0, live=False,
        why="each write is the whole cache (up to a few MB) to flash: more often than every "
        "5 s wears it for nothing; a day is as good as only on SIGTERM",
    ),
    Setting(
        "claims_dir", Kind.TEXT, CLAIMS_DIR,
        "The bt-claims directory shared with other Bluetooth services (convention 0.4); "
        "an unusable one means no coordination (logged once)",
        flag="--claims-dir", metavar="DIR", high=4096, live=False,
        why="PATH_MAX on Linux",
    ),
    Setting(
        "debug", Kind.FLAG, False, "Log every decision", flag="--debug", live=False,
    ),
)  # fmt: skip
"""Options of the process itself: command line only, read at start, not in ``ScannerConfig``."""

BY_FIELD: Final = {setting.field: setting for setting in SETTINGS}
BY_PATH: Final = {setting.path: setting for setting in SETTINGS if setting.path is not None}
