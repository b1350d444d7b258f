"""The kernel's Bluetooth management frames, and the Device1 changes each report makes.

Pure logic, no I/O: ``mgmtchannel.py`` reads the datagrams. A frame is the
event code, the controller index and the parameter length (u16 each,
little-endian), then the parameters (BlueZ doc/mgmt-api.txt). We read four
events: ``Device Found`` and ``Adv Monitor Device Found`` carry advertising
reports with their AD structures as the controller delivered them; ``Device
Connected`` and ``Device Disconnected`` tell where links are. Nothing here
raises on bad input: a frame or AD structure no kernel sends is a
:class:`Malformed`, which the caller counts.

A report changes the device's view (``record.DeviceView``) as bluetoothd's
report changes Device1 (src/adapter.c ``btd_adapter_device_found``,
src/device.c) and as ``DeviceView.update`` would take that change from D-Bus:
a client cannot tell which ingest the service used. The report path
(``reports.py``) gets there cheaply: ``apply_report`` puts what ``parse_eir``
made onto the view without re-checking values the parser bounds,
``apply_reading`` takes a sensor's next reading (only its payload bytes
changed) without parsing, and ``apply_rssi`` an advertisement heard again.
tests/unit/test_mgmt.py keeps the definition (``device_changes``: the Device1
change, for ``DeviceView.update``), and tests/unit/test_report_path.py holds
the report path to it.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, TypeVar

from ..const import BLUEZ_ROOT_PATH, MAX_PAYLOAD_BYTES, RSSI_MAX, RSSI_MIN, RSSI_UNAVAILABLE
from ..core.identifiers import BASE_UUID_SUFFIX, MAX_ECHO
from ..core.record import (
    MAX_UUIDS,
    DeviceView,
    MalformedData,
    content_with,
    normalize_address,
    parse_name,
    parse_rssi,
)

_K = TypeVar("_K", int, str)
_M = TypeVar("_M", int, bytes, tuple[int, str])

# Event codes (doc/mgmt-api.txt).
EV_DEVICE_CONNECTED: Final = 0x000B
EV_DEVICE_DISCONNECTED: Final = 0x000C
EV_DEVICE_FOUND: Final = 0x0012
EV_ADV_MONITOR_DEVICE_FOUND: Final = 0x002F

HEADER: Final = struct.Struct("<HHH")  # event code, controller index, parameter length
# Address (6), address type, RSSI, flags, EIR length: Device Found's fixed part.
_FOUND: Final = struct.Struct("<6sBbIH")
_MONITOR_HANDLE: Final = struct.Struct("<H")
# Address, address type, flags, EIR length: Device Connected's fixed part.
_CONNECTED: Final = struct.Struct("<6sBIH")
# Address, address type, reason: Device Disconnected.
_DISCONNECTED: Final = struct.Struct("<6sBB")

# Device Found flags (doc/mgmt-api.txt): bit 2 not connectable, bit 5 the
# report is a scan response (kernels since 6.4 set it for extended advertising).
FLAG_NOT_CONNECTABLE: Final = 1 << 2
FLAG_SCAN_RESPONSE: Final = 1 << 5

# The kernel's EIR for a report is at most extended advertising's 1650 bytes
# (max_adv_len), plus a merged legacy scan response and the 5-byte Class of
# Device it may append: anything longer is no report a kernel sends.
MAX_EIR_BYTES: Final = MAX_PAYLOAD_BYTES + 31 + 5

# Address types of the management API → Device1's AddressType.
# BR/EDR (0) addresses are public ones; BlueZ calls both "public".
_ADDRESS_TYPES: Final = {0: "public", 1: "public", 2: "random"}

# AD types (Bluetooth Assigned Numbers 2.3) that bluetoothd's eir_parse reads.
AD_FLAGS: Final = 0x01
AD_UUID16_SOME: Final = 0x02
AD_UUID16_ALL: Final = 0x03
AD_UUID32_SOME: Final = 0x04
AD_UUID32_ALL: Final = 0x05
AD_UUID128_SOME: Final = 0x06
AD_UUID128_ALL: Final = 0x07
AD_NAME_SHORT: Final = 0x08
AD_NAME_COMPLETE: Final = 0x09
AD_TX_POWER: Final = 0x0A
AD_SERVICE_DATA16: Final = 0x16
AD_SERVICE_DATA32: Final = 0x20
AD_SERVICE_DATA128: Final = 0x21
AD_MANUFACTURER: Final = 0xFF
# Width of the UUID each list or service-data type carries, in bytes.
_UUID_LISTS: Final = {
    AD_UUID16_SOME: 2, AD_UUID16_ALL: 2,
    AD_UUID32_SOME: 4, AD_UUID32_ALL: 4,
    AD_UUID128_SOME: 16, AD_UUID128_ALL: 16,
}  # fmt: skip
_SERVICE_DATA: Final = {AD_SERVICE_DATA16: 2, AD_SERVICE_DATA32: 4, AD_SERVICE_DATA128: 16}
_UUID128_BYTES: Final = 16
_COMPANY_ID_BYTES: Final = 2
# TxPower 127 is "no value" (src/device.c leaves TxPower unset for it).
TX_POWER_UNAVAILABLE: Final = 127
_INT8_MAX: Final = 127  # TX power is a signed byte
# g_strstrip's whitespace (ASCII only), for names bluetoothd repaired.
_ASCII_SPACE: Final = " \t\n\r\f\v"


@dataclass(slots=True, frozen=True)
class Malformed:
    """A frame or AD structure no kernel sends: dropped and counted."""

    reason: str


@dataclass(slots=True, frozen=True)
class Other:
    """A well-formed event we do not read (command replies, Discovering ...)."""

    code: int


@dataclass(slots=True)
class DeviceEvent:
    """An event about one device on one controller.

    Not frozen (nor are its subclasses and ``Advertisement``): one is made per
    report, and a frozen dataclass's ``__init__`` costs twice as much; nothing
    changes one after parsing."""

    index: int  # controller index: hci<index>
    address: str  # AA:BB:CC:DD:EE:FF
    address_type: str  # Device1's AddressType

    @property
    def path(self) -> str:
        return device_path(self.index, self.address)


@dataclass(slots=True)
class Found(DeviceEvent):
    """One advertising report (Device Found, or Adv Monitor Device Found with ``monitor``)."""

    rssi: int | None  # dBm; None: the controller had no reading
    flags: int
    eir: bytes
    monitor: int | None = None  # the monitor handle of Adv Monitor Device Found

    @property
    def scan_response(self) -> bool:
        return bool(self.flags & FLAG_SCAN_RESPONSE)


@dataclass(slots=True)
class Connected(DeviceEvent):
    """A link came up (Device Connected): no power cycle while it lasts."""


@dataclass(slots=True)
class Disconnected(DeviceEvent):
    """A link went down (Device Disconnected)."""

    reason: int


Event = Found | Connected | Disconnected | Other | Malformed


@dataclass(slots=True)
class Advertisement:
    """The AD structures of one report, as bluetoothd's eir_parse reads them."""

    flags: int | None = None
    name: str | None = None
    name_complete: bool = False
    tx_power: int | None = None
    manufacturer_data: Mapping[int, bytes] | None = None
    service_data: Mapping[str, bytes] | None = None
    uuids: tuple[str, ...] = ()
    # (start, end, key) of the payload of the advertisement's only manufacturer
    # or service data structure (key: its company id or service UUID); None when
    # it has none or several. A sensor's next reading changes only those bytes.
    varying: tuple[int, int, int | str] | None = field(default=None, compare=False, repr=False)


# --- frames ------------------------------------------------------------------------


# What the channel hears again and again, formatted once: the adapter, address and
# path text of each device. Bounded: a cache this full starts again (a site with
# more devices than this, or a flood of new addresses, only formats as before).
_MEMO_LIMIT: Final = 1024
_adapter_paths: dict[int, str] = {}
_addresses: dict[bytes, str] = {}
_device_paths: dict[tuple[int, str], str] = {}
# The UUID and name texts of the AD structures heard, likewise.
_uuids: dict[bytes, str] = {}
_names: dict[bytes, str] = {}


def _remember(memo: dict[_M, str], key: _M, text: str) -> str:
    if len(memo) >= _MEMO_LIMIT:
        memo.clear()
    memo[key] = text
    return text


def adapter_path(index: int) -> str:
    """Controller index N is BlueZ's ``/org/bluez/hciN``."""
    path = _adapter_paths.get(index)
    if path is None:
        path = _remember(_adapter_paths, index, f"{BLUEZ_ROOT_PATH}/hci{index}")
    return path


def device_path(index: int, address: str) -> str:
    """The Device1 path as bluetoothd names it (src/device.c ``device_create``)."""
    key = (index, address)
    path = _device_paths.get(key)
    if path is None:
        text = f"{adapter_path(index)}/dev_{address.replace(':', '_')}"
        path = _remember(_device_paths, key, text)
    return path


def address_text(raw: bytes) -> str:
    """Six bytes, least significant first → ``AA:BB:CC:DD:EE:FF``."""
    text = _addresses.get(raw)
    if text is None:
        text = _remember(_addresses, raw, raw[::-1].hex(":").upper())
    return text


def parse_frame(data: bytes) -> Event:
    """One datagram → an event; never raises."""
    size = len(data) - HEADER.size
    if size < 0:
        return Malformed(f"frame of {len(data)} bytes is shorter than its header")
    code, index, length = HEADER.unpack_from(data)
    if size != length:
        return Malformed(f"event 0x{code:04X} says {length} parameter bytes, carries {size}")
    if code == EV_DEVICE_FOUND:
        return _found(index, data, HEADER.size, None)
    if code == EV_ADV_MONITOR_DEVICE_FOUND:
        if length < _MONITOR_HANDLE.size:
            return Malformed(f"Adv Monitor Device Found of {length} bytes")
        (handle,) = _MONITOR_HANDLE.unpack_from(data, HEADER.size)
        return _found(index, data, HEADER.size + _MONITOR_HANDLE.size, handle)
    params = data[HEADER.size :]
    if code == EV_DEVICE_CONNECTED:
        if length < _CONNECTED.size:
            return Malformed(f"Device Connected of {length} bytes")
        raw, kind, _flags, eir_length = _CONNECTED.unpack_from(params)
        if eir_length != length - _CONNECTED.size:
            return Malformed(f"Device Connected with EIR length {eir_length} in {length} bytes")
        address_type = _ADDRESS_TYPES.get(kind)
        if address_type is None:
            return Malformed(f"Device Connected with address type {kind}")
        return Connected(index, address_text(raw), address_type)
    if code == EV_DEVICE_DISCONNECTED:
        if length != _DISCONNECTED.size:
            return Malformed(f"Device Disconnected of {length} bytes")
        raw, kind, reason = _DISCONNECTED.unpack_from(params)
        address_type = _ADDRESS_TYPES.get(kind)
        if address_type is None:
            return Malformed(f"Device Disconnected with address type {kind}")
        return Disconnected(index, address_text(raw), address_type, reason)
    return Other(code)


def _found(index: int, data: bytes, offset: int, monitor: int | None) -> Found | Malformed:
    """The Device Found parameters at ``offset`` of the frame (read in place: one copy, the EIR)."""
    size = len(data) - offset
    if size < _FOUND.size:
        return Malformed(f"{_found_name(monitor)} of {size} bytes")
    raw, kind, rssi, flags, eir_length = _FOUND.unpack_from(data, offset)
    if eir_length != size - _FOUND.size:
        return Malformed(f"{_found_name(monitor)} with EIR length {eir_length} in {size} bytes")
    if eir_length > MAX_EIR_BYTES:
        return Malformed(f"{_found_name(monitor)} with {eir_length} bytes of EIR")
    address_type = _ADDRESS_TYPES.get(kind)
    if address_type is None:
        return Malformed(f"{_found_name(monitor)} with address type {kind}")
    # 127 is HCI's "no reading"; BlueZ's Device1 has no value outside -127..20 either.
    reading = rssi if RSSI_MIN <= rssi <= RSSI_MAX else None
    return Found(
        index,
        address_text(raw),
        address_type,
        reading,
        flags,
        data[offset + _FOUND.size :],
        monitor,
    )


def _found_name(monitor: int | None) -> str:
    return "Device Found" if monitor is None else "Adv Monitor Device Found"


# --- AD structures -------------------------------------------------------------------


def uuid_text(raw: bytes) -> str:
    """A 2-, 4- or 16-byte UUID, least significant byte first → 128-bit text."""
    text = _uuids.get(raw)
    if text is None:
        if len(raw) != _UUID128_BYTES:
            text = f"{int.from_bytes(raw, 'little'):08x}{BASE_UUID_SUFFIX}"
        else:
            h = raw[::-1].hex()
            text = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
        _remember(_uuids, raw, text)
    return text


def name_text(raw: bytes) -> str:
    """A name as bluetoothd keeps it (src/eir.c ``name2utf8``): up to a NUL; invalid
    UTF-8 cut at the first bad byte and the ends stripped."""
    text = _names.get(raw)
    if text is None:
        cut = raw.split(b"\0", 1)[0]
        try:
            text = cut.decode("utf-8")
        except UnicodeDecodeError as exc:
            text = cut[: exc.start].decode("utf-8").strip(_ASCII_SPACE)
        _remember(_names, raw, text)
    return text


def parse_eir(eir: bytes) -> Advertisement | Malformed:
    """The AD structures of a report; a structure that runs past the end is Malformed.

    A zero length byte ends the data (the padding of a legacy report). Runs for
    every report whose advertisement changed: each structure is read in place,
    its data sliced out once, the likeliest types first.
    """
    flags: int | None = None
    name: str | None = None
    complete = False
    tx_power: int | None = None
    mfr: dict[int, bytes] | None = None
    sd: dict[str, bytes] | None = None
    uuids: list[str] | None = None
    varying: tuple[int, int, int | str] | None = None
    payloads = 0
    i, end = 0, len(eir)
    while i < end:
        length = eir[i]
        if length == 0:
            break
        # ``at``: the structure's first data byte; ``i``: the next structure; ``size``: data bytes.
        at, i, size = i + 2, i + 1 + length, length - 1
        if i > end:
            return Malformed(f"AD structure of {length} bytes at {at - 2} runs past {end}")
        kind = eir[at - 1]
        if kind == AD_MANUFACTURER:
            if size < _COMPANY_ID_BYTES:
                return Malformed(f"manufacturer data of {size} bytes")
            if mfr is None:
                mfr = {}
            company = eir[at] | eir[at + 1] << 8
            mfr[company] = eir[at + _COMPANY_ID_BYTES : i]
            varying, payloads = (at + _COMPANY_ID_BYTES, i, company), payloads + 1
        elif kind == AD_FLAGS:
            if size:
                flags = eir[at]
        elif kind in _SERVICE_DATA:
            width = _SERVICE_DATA[kind]
            if size < width:
                return Malformed(f"service data 0x{kind:02X} of {size} bytes")
            if sd is None:
                sd = {}
            uuid = uuid_text(eir[at : at + width])
            sd[uuid] = eir[at + width : i]
            varying, payloads = (at + width, i, uuid), payloads + 1
        elif kind in (AD_NAME_COMPLETE, AD_NAME_SHORT):
            text = name_text(eir[at:i])
            if text:
                name, complete = text, kind == AD_NAME_COMPLETE
        elif kind in _UUID_LISTS:
            width = _UUID_LISTS[kind]
            if size % width:
                return Malformed(f"UUID list 0x{kind:02X} of {size} bytes")
            if uuids is None:
                uuids = []
            for j in range(at, i, width):
                uuids.append(uuid_text(eir[j : j + width]))
        elif kind == AD_TX_POWER:
            if size != 1:
                return Malformed(f"TX power of {size} bytes")
            value = eir[at]
            if value != TX_POWER_UNAVAILABLE:
                tx_power = value - 256 if value > _INT8_MAX else value
            else:
                tx_power = None
    return Advertisement(
        flags,
        name,
        complete,
        tx_power,
        mfr,
        sd,
        tuple(uuids) if uuids else (),
        varying if payloads == 1 else None,
    )


# --- onto Device1 ---------------------------------------------------------------------


def rssi_value(found: Found) -> int:
    """The report's RSSI as Device1 carries it: 127 (no reading) when the controller had none."""
    return found.rssi if found.rssi is not None else RSSI_UNAVAILABLE


def view_rssi(found: Found) -> int | None:
    """The report's RSSI as ``update`` puts ``rssi_value`` on the view: what parse_frame
    made of it (None, or RSSI_MIN..RSSI_MAX), so nothing to check; MalformedData else."""
    rssi = found.rssi
    if rssi is not None and not RSSI_MIN <= rssi <= RSSI_MAX:
        return None if parse_rssi(rssi) > RSSI_MAX else rssi
    return rssi


def apply_rssi(view: DeviceView, found: Found) -> None:
    """The view's advertisement again: ``view.update({"RSSI": rssi_value(found)})``,
    which changes RSSI alone, for what parse_frame makes (no check needed)."""
    rssi = found.rssi
    if rssi is None or RSSI_MIN <= rssi <= RSSI_MAX:
        view.rssi = rssi
    else:  # no Found parse_frame makes: update refuses it, or takes it for no reading
        held = view.eir
        view.update({"RSSI": rssi_value(found)})
        view.eir = held


def apply_report(view: DeviceView, found: Found, ad: Advertisement, duplicate: bool) -> None:
    """``view.update(device_changes(view, found, ad, duplicate))`` (tests/unit/test_mgmt.py)
    for what ``parse_frame`` and ``parse_eir`` made: the same view, at a fraction of the cost.

    Their values need none of the checks a D-Bus value does (addresses, company
    ids and UUID texts are made well-formed here, no payload of one AD
    structure reaches ``MAX_PAYLOAD_BYTES``), so only what they leave unbounded
    is checked: a name's length, TX power's range and the number of UUIDs. A
    value equal to the one the view holds was checked when it came. Raises
    MalformedData as ``update`` does, changing nothing but ``view.eir``, which
    it clears (as ``update`` does).
    """
    view.eir = None
    content = view.content
    name, tx_power = content.name, content.tx_power
    mfr, sd, uuids = content.manufacturer_data, content.service_data, content.service_uuids
    # In the order ``update`` meets them, so that the first bad value is the one named.
    rssi = view_rssi(found)
    # Address and type are checked once per device: they name its path.
    address, address_type = found.address, found.address_type
    if address != view.address:
        address = normalize_address(address)
    if address_type != view.address_type and address_type not in ("public", "random"):
        raise MalformedData(f"AddressType {address_type[:MAX_ECHO]!r}")
    new_name = ad.name
    if new_name is not None and new_name != name and (ad.name_complete or name is None):
        name = parse_name(new_name)
    if ad.tx_power is not None and ad.tx_power != tx_power:
        tx_power = parse_rssi(ad.tx_power, "TxPower")
    if ad.manufacturer_data:
        mfr = _merged(mfr, ad.manufacturer_data, duplicate)
    if ad.service_data:
        sd = _merged(sd, ad.service_data, duplicate)
    added = ad.uuids + tuple(ad.service_data) if ad.service_data else ad.uuids
    for uuid in added:
        if uuid not in uuids:
            if len(uuids) + len(added) > MAX_UUIDS:
                raise MalformedData(f"{len(uuids) + len(added)} UUIDs exceed {MAX_UUIDS}")
            uuids = tuple(sorted({*uuids, *added}))
            break
    view.address, view.address_type, view.rssi = address, address_type, rssi
    view.content = content_with(content, name, tx_power, mfr, sd, uuids)


def _merged(
    held: Mapping[_K, bytes], new: Mapping[_K, bytes], duplicate: bool
) -> Mapping[_K, bytes]:
    """What the view holds after a report's payloads: bluetoothd's per-key merge (cleared
    first with DuplicateData), and what it held when that is equal."""
    # With DuplicateData, or the keys held in their order (a sensor's next
    # reading), the report's own mapping (parse_eir's, new) is the merge.
    if not (duplicate or not held or tuple(new) == tuple(held)):
        new = {**held, **new}
    return held if new == held else new


def apply_reading(view: DeviceView, found: Found) -> bool:
    """``apply_report`` for a report that is the view's last advertisement (``view.eir``,
    of the same DuplicateData, address and type: the caller checks) but for the bytes
    of its one payload (``view.varying``), as a sensor's next reading is; False else.

    Parsing it would find every structure as before, so the view changes in that
    payload and RSSI only: the payload replaced in its place among what the view
    holds (with DuplicateData, that payload alone, as ``apply_report`` left it).
    """
    held, varying, rssi = view.eir, view.varying, found.rssi
    if held is None or varying is None:
        return False
    if rssi is not None and not RSSI_MIN <= rssi <= RSSI_MAX:
        return False  # no Found parse_frame makes: apply_report says what is wrong
    eir, before = found.eir, held[0]
    start, end, key = varying
    if len(eir) != len(before) or eir[:start] != before[:start] or eir[end:] != before[end:]:
        return False
    payload = eir[start:end]
    content = view.content
    mfr, sd = content.manufacturer_data, content.service_data
    if isinstance(key, int):
        mfr = {**mfr, key: payload}
    else:
        sd = {**sd, key: payload}
    view.rssi = rssi
    view.content = content_with(
        content, content.name, content.tx_power, mfr, sd, content.service_uuids
    )
    view.eir = (eir, held[1])
    return True
