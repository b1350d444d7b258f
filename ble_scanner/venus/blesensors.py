"""Victron's dbus-ble-sensors, seen from here: its UDP input, its settings, and the take-over.

dbus-ble-sensors (``com.victronenergy.ble``, C) turns sensor advertisements
into Venus services. Since v0.30 it also reads advertisements from a UDP
socket (``src/ble-socket.c``), and ``/Settings/BleSensors/Bluetooth/Enabled =
0`` closes its raw-HCI scan while that socket stays open. So the service can
be the one scanner on a GX: it feeds dbus-ble-sensors and switches the other
scan off (README "Let dbus-ble-scanner do the scanning for dbus-ble-sensors").
Sources: victronenergy/dbus-ble-sensors v0.31, ``src/ble-socket.c`` (the
datagrams), ``src/ble-scan.c`` ``ble_scan_close`` and ``src/task.c`` (the scan
closed, the socket kept), ``src/ble-handler.c`` ``ble_parse_adv``.

Pure logic: the datagram builder and the decision of what to do with
dbus-ble-sensors' settings. The socket and the bus are in ``feed.py``.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from ..const import RSSI_UNAVAILABLE

# --- what dbus-ble-sensors handles ------------------------------------------------

# The company ids dbus-ble-sensors v0.31 has manufacturer handlers for
# (src/ble-handler.c): Victron, Ruuvi, Nordic (Mopeka), Safiery, Gobius,
# Garnet. The one list: the BleSensorsCompanyIds setting defaults to it, so a
# later dbus-ble-sensors' new handler needs a setting, not a release.
BLE_SENSORS_COMPANY_IDS: Final = frozenset({0x02E1, 0x0499, 0x0059, 0x0067, 0x0F53, 0x0CC0})

# --- its settings in localsettings (src/ble-socket.c, src/ble-scan.c) -------------

BLE_SENSORS_PREFIX: Final = "/Settings/BleSensors"
SOCKET_PORT_PATH: Final = f"{BLE_SENSORS_PREFIX}/Socket/Port"
SOCKET_BIND_ADDRESS_PATH: Final = f"{BLE_SENSORS_PREFIX}/Socket/BindAddress"
BLUETOOTH_ENABLED_PATH: Final = f"{BLE_SENSORS_PREFIX}/Bluetooth/Enabled"
FOLLOWED_PATHS: Final = (SOCKET_PORT_PATH, SOCKET_BIND_ADDRESS_PATH, BLUETOOTH_ENABLED_PATH)
# ble-socket.c's defaults: where it listens when the settings are absent.
DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 18542
# ble-socket.c's range for Socket/Port (a UDP port; 0 is not one to send to).
PORT_MIN: Final = 1
PORT_MAX: Final = 65535
# A bind address that listens on every interface is reached on loopback.
_WILDCARD_TO_LOOPBACK: Final = {"0.0.0.0": "127.0.0.1"}
# Our BleSensorsBluetoothWas when nothing is remembered (we did not take over).
NOT_TAKEN: Final = -1

# --- the version-2 datagram (src/ble-socket.c) ----------------------------------------

PACKET_VERSION: Final = 2
# BLE_SOCKET_MAX_PACKET: dbus-ble-sensors reads at most this much of a datagram.
MAX_PACKET: Final = 128
# version (1), repeater bdaddr (6), advertiser bdaddr (6), RSSI (1).
HEADER_SIZE: Final = 14
# ble-socket.c: an RSSI of 0x7F is "invalid": HCI's "RSSI not available".
RSSI_UNKNOWN: Final = RSSI_UNAVAILABLE
BDADDR_SIZE: Final = 6
# AD types ble_parse_adv reads (Bluetooth Core Supplement, part A, 1.2 and 1.4).
AD_COMPLETE_LOCAL_NAME: Final = 0x09
AD_MANUFACTURER_DATA: Final = 0xFF
# The length byte of an AD structure counts the type byte and the data.
_AD_LENGTH_MAX: Final = 0xFF
_INT8_MIN: Final = -128
_INT8_MAX: Final = 127


def bdaddr(address: str) -> bytes:
    """``AA:BB:CC:DD:EE:FF`` -> ``FF EE DD CC BB AA``: bdaddr_t, least significant byte first."""
    parts = address.split(":")
    if len(parts) != BDADDR_SIZE or not all(len(p) == 2 for p in parts):
        raise ValueError(f"{address!r} is not a Bluetooth address")
    try:
        return bytes(int(p, 16) for p in reversed(parts))
    except ValueError:
        raise ValueError(f"{address!r} is not a Bluetooth address") from None


def _rssi_byte(rssi: int | None) -> int:
    if rssi is None or not _INT8_MIN <= rssi < RSSI_UNKNOWN:
        return RSSI_UNKNOWN
    return rssi & 0xFF


def rssi_byte(rssi: int | None) -> bytes:
    """Byte 13: the RSSI as int8, 0x7F when unknown or not an int8."""
    return _RSSI_BYTES[_rssi_byte(rssi)]


# Every RSSI byte made once: the feed puts one in each datagram.
_RSSI_BYTES: Final = tuple(bytes((value,)) for value in range(256))


def _ad(ad_type: int, data: bytes) -> bytes:
    return bytes((len(data) + 1, ad_type)) + data


def handled(manufacturer_data: Mapping[int, bytes], company_ids: frozenset[int]) -> list[int]:
    """The company ids of ``manufacturer_data`` dbus-ble-sensors handles, in the report's order."""
    return [company for company in manufacturer_data if company in company_ids]


def header(adapter: bytes, advertiser: bytes, rssi: int | None) -> bytes:
    """The first 14 bytes: version, receiving adapter, advertiser (``bdaddr`` bytes), RSSI."""
    return bytes((PACKET_VERSION,)) + adapter + advertiser + rssi_byte(rssi)


def bodies(
    manufacturer_data: Mapping[int, bytes], companies: Iterable[int], name: str | None
) -> list[bytes]:
    """The AD structures of each datagram for one report: one body, unless 128 bytes cannot hold it.

    ``companies`` are the entries of ``manufacturer_data`` to send
    (``handled``). The name comes after them: ble_parse_adv names only a
    device a manufacturer handler has created, in the order of the AD
    structures. When the whole does not fit the name is dropped first, then
    each manufacturer entry gets a datagram of its own; an entry that cannot
    fit even alone (over 110 bytes of payload: an extended advertisement) is
    left out. Apart from the header, so that the feed can keep them while a
    device repeats itself.
    """
    room = MAX_PACKET - HEADER_SIZE
    entries = [
        _ad(AD_MANUFACTURER_DATA, company.to_bytes(2, "little") + manufacturer_data[company])
        for company in companies
        if manufacturer_data[company]  # ble_parse_adv skips an entry without payload
    ]
    entries = [e for e in entries if len(e) <= room]
    if not entries:
        return []
    body = b"".join(entries)
    if name:
        encoded = name.encode("utf-8")
        if len(encoded) < _AD_LENGTH_MAX:
            with_name = body + _ad(AD_COMPLETE_LOCAL_NAME, encoded)
            if len(with_name) <= room:
                return [with_name]
    if len(body) <= room:
        return [body]
    return entries


def datagrams(
    adapter: bytes,
    advertiser: bytes,
    rssi: int | None,
    manufacturer_data: Mapping[int, bytes],
    companies: Iterable[int],
    name: str | None,
) -> list[bytes]:
    """The version-2 datagrams for one report (``header`` + each of ``bodies``)."""
    head = header(adapter, advertiser, rssi)
    return [head + body for body in bodies(manufacturer_data, companies, name)]


# --- what to do with dbus-ble-sensors' settings ----------------------------------------


class FeedState(enum.Enum):
    """The feed in words, as ``/BleSensorsFeed/State`` shows it."""

    OFF = "off"
    FEEDING = "feeding"
    NO_SOCKET = "dbus-ble-sensors has no socket input"
    SOCKET_DISABLED = "its socket is disabled"
    BAD_ADDRESS = "its socket address is not usable"


# Why the feed leaves dbus-ble-sensors' scan alone, for the log.
LEFT_ALONE: Final = {
    FeedState.NO_SOCKET: f"{SOCKET_PORT_PATH} does not exist: dbus-ble-sensors before v0.30 "
    "reads no UDP",
    FeedState.SOCKET_DISABLED: f"{SOCKET_BIND_ADDRESS_PATH} is empty, which disables it",
    FeedState.BAD_ADDRESS: f"{SOCKET_BIND_ADDRESS_PATH} is not an IPv4 address or "
    f"{SOCKET_PORT_PATH} not a port: dbus-ble-sensors cannot listen there either",
}


@dataclass(slots=True, frozen=True)
class BleSensorsSettings:
    """dbus-ble-sensors' settings as localsettings holds them; None: the setting is absent."""

    port: int | None = None
    bind_address: str | None = None
    bluetooth_enabled: int | None = None


@dataclass(slots=True, frozen=True)
class FeedPlan:
    """Where to send, and whether dbus-ble-sensors' scan should be ours to switch off."""

    state: FeedState
    target: tuple[str, int] | None = None  # (host, port) to send to; None: send nothing
    take_over: bool = False  # switch its HCI scan off (and remember the value found)
    restore: bool = False  # put back what we remembered

    @property
    def text(self) -> str:
        if self.state is FeedState.FEEDING and self.target is not None:
            host, port = self.target
            return f"feeding {host}:{port}"
        return self.state.value


def _host(bind_address: str) -> str | None:
    """The address to send to for dbus-ble-sensors' bind address; None if it cannot bind it.

    ble-socket.c binds an AF_INET socket to what ``inet_pton(AF_INET)``
    accepts: an IPv4 address in dotted form, nothing else.
    """
    text = bind_address.strip()
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return None
    return _WILDCARD_TO_LOOPBACK.get(text, text)


def plan(
    feed_on: bool,
    settings: BleSensorsSettings | None,
    remembered: int,
) -> FeedPlan:
    """What the feed does now.

    ``settings`` is None when localsettings is not there to ask (a
    development machine, ``--no-settings``): then the feed goes to
    dbus-ble-sensors' default address and no setting is touched.
    ``remembered`` is our BleSensorsBluetoothWas (``NOT_TAKEN``: nothing).
    The scan is taken over only while the feed can reach dbus-ble-sensors'
    socket; in every other case a remembered value is put back, so that
    dbus-ble-sensors never ends up with neither its scan nor our feed.
    """
    taken = remembered != NOT_TAKEN
    if not feed_on:
        return FeedPlan(FeedState.OFF, restore=taken and settings is not None)
    if settings is None:
        return FeedPlan(FeedState.FEEDING, (DEFAULT_HOST, DEFAULT_PORT))
    if settings.port is None:
        return FeedPlan(FeedState.NO_SOCKET, restore=taken)
    bind = DEFAULT_HOST if settings.bind_address is None else settings.bind_address
    if not bind.strip():
        return FeedPlan(FeedState.SOCKET_DISABLED, restore=taken)
    host = _host(bind)
    if host is None or not PORT_MIN <= settings.port <= PORT_MAX:
        return FeedPlan(FeedState.BAD_ADDRESS, restore=taken)
    return FeedPlan(
        FeedState.FEEDING,
        (host, settings.port),
        take_over=not taken and settings.bluetooth_enabled is not None,
    )


@dataclass(slots=True, frozen=True)
class FeedStatus:
    """The feed for the Venus tree: its state in words and its counters."""

    state: str = FeedState.OFF.value
    sent: int = 0
    errors: int = 0
