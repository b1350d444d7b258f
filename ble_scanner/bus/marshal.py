"""Scanner1 messages in D-Bus wire format, from cached parts.

dbus-fast builds and marshals a ``DeviceDiscovered`` record (12 variants) in
~13 µs (dev VM), every time, although only ``LastSeen``, ``Interval`` and
``Rssi`` change between most reports. Here the rest of a record is encoded once
per change and kept on the cached device (``Device.wire``); a signal is then
that block, a 38-byte tail (70 with ``Interval``) and a header whose fields are
cached per destination. Pure: no D-Bus library.

The layout follows the D-Bus specification ("Marshaling (Wire Format)"), in
little-endian, with header fields in dbus-fast's order, so that the bytes are
identical to what ``dbus_fast.Message._marshall`` produces: the unit tests
compare the two byte for byte (tests/unit/test_marshal.py).

Alignment: every ``{sv}`` dict entry starts on an 8-byte boundary, so an
entry's bytes do not depend on where it lands; each cached block therefore
starts 8-aligned and is padded to a multiple of 8.

The wire-format constants (message types, header field codes, the fixed
header) are defined here once; ``writer.py`` reads messages with them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from typing import Final

from ..core.cache import Device
from ..core.delta import REMOVED, Changes
from ..core.record import Content

# Message types (specification, "Message Format").
MESSAGE_METHOD_RETURN: Final = 2
MESSAGE_SIGNAL: Final = 4
# The first byte of a message: 'l' for little-endian, which is all we write.
LITTLE_ENDIAN: Final = ord("l")
_PROTOCOL_VERSION: Final = 1
# Header field codes (specification, "Header Fields").
FIELD_PATH: Final = 1
FIELD_INTERFACE: Final = 2
FIELD_MEMBER: Final = 3
FIELD_REPLY_SERIAL: Final = 5
FIELD_DESTINATION: Final = 6
FIELD_SIGNATURE: Final = 8

# Alignment of what we write (specification, "Marshaling"): structs, dict
# entries and doubles on 8; strings' and arrays' u32 lengths on 4; int16 on 2.
ALIGN_STRUCT: Final = 8
ALIGN_U32: Final = 4
ALIGN_INT16: Final = 2

_U32: Final = struct.Struct("<I")
# endianness, type, flags, version, body length, serial
FIXED_HEADER: Final = struct.Struct("<BBBBII")
# The header field array starts after the fixed header and the array's length.
FIELDS_START: Final = FIXED_HEADER.size + _U32.size


class _Encoder:
    """Appends values at their alignment; offset 0 is taken to be 8-aligned.

    Used once per constant (entry prefixes) and per header; the per-record
    path below joins precomputed pieces instead.
    """

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def align(self, n: int) -> None:
        self.buf += bytes(-len(self.buf) % n)

    def pack(self, fmt: str, value: int | float) -> None:
        size = struct.calcsize(fmt)
        self.align(size)
        self.buf += struct.pack("<" + fmt, value)

    def string(self, text: str) -> None:
        data = text.encode()
        self.align(ALIGN_U32)
        self.buf += _U32.pack(len(data))
        self.buf += data
        self.buf.append(0)

    def signature(self, sig: str) -> None:
        self.buf.append(len(sig))
        self.buf += sig.encode()
        self.buf.append(0)

    def entry(self, key: str, sig: str) -> None:
        """Start a ``{sv}`` dict entry; the caller appends the value."""
        self.align(ALIGN_STRUCT)
        self.string(key)
        self.signature(sig)


def _entry_prefix(key: str, sig: str, alignment: int) -> bytes:
    """A ``{sv}`` entry up to its value: key, variant signature, padding to the value."""
    enc = _Encoder()
    enc.entry(key, sig)
    enc.align(alignment)
    return bytes(enc.buf)


def _pad8(size: int) -> bytes:
    return _ZEROS[: -size % ALIGN_STRUCT]


_ZEROS: Final = bytes(ALIGN_STRUCT)  # the most padding ever needed
# Entry prefixes: arrays and strings start with a 4-aligned length, which the
# 8-aligned entry start makes a constant offset.
_MANUFACTURER_DATA: Final = _entry_prefix("ManufacturerData", "a{qay}", ALIGN_U32)
_SERVICE_DATA: Final = _entry_prefix("ServiceData", "a{say}", ALIGN_U32)
_SERVICE_UUIDS: Final = _entry_prefix("ServiceUuids", "as", ALIGN_U32)
_NAME: Final = _entry_prefix("Name", "s", ALIGN_U32)
_TX_POWER_PREFIX: Final = _entry_prefix("TxPower", "n", ALIGN_INT16)
_TX_POWER: Final = struct.Struct(f"<{len(_TX_POWER_PREFIX)}sh6x")  # 16 + 2 + padding
_ADDRESS: Final = _entry_prefix("Address", "s", ALIGN_U32)
_ADDRESS_TYPE: Final = _entry_prefix("AddressType", "s", ALIGN_U32)
_ADAPTER: Final = _entry_prefix("Adapter", "s", ALIGN_U32)
_PATH_ENTRY: Final = _entry_prefix("Path", "o", ALIGN_U32)
_FIRST_SEEN_PREFIX: Final = _entry_prefix("FirstSeen", "d", ALIGN_STRUCT)
_FIRST_SEEN: Final = struct.Struct(f"<{len(_FIRST_SEEN_PREFIX)}sd")
_RESTORED_PREFIX: Final = _entry_prefix("Restored", "b", ALIGN_U32)
_RESTORED_VALUE: Final = _RESTORED_PREFIX + _U32.pack(1)
_RESTORED: Final = _RESTORED_VALUE + _pad8(len(_RESTORED_VALUE))
_COMPANY: Final = struct.Struct("<H2xI")  # {qay} head: company, padding, payload length
_INT16: Final = struct.Struct("<h")


def _string(text: str) -> bytes:
    data = text.encode()
    return _U32.pack(len(data)) + data + b"\0"


def _array_value(prefix: bytes, elements: list[bytes], alignment: int) -> bytes:
    """An array-valued entry, not padded after its last element.

    Elements are padded to ``alignment`` between each other; the array's
    length counts from its first element to the end of its last.
    """
    padded = [e + _ZEROS[: -len(e) % alignment] for e in elements]
    body = b"".join(padded)
    length = len(body) - (len(padded[-1]) - len(elements[-1]) if elements else 0)
    head = prefix + _U32.pack(length)
    head += _ZEROS[: -len(head) % alignment]
    return head + body[:length]


def _content_and_identity(device: Device) -> bytes:
    """Every record entry but LastSeen, Interval and Rssi, in ``record_variants`` order.

    Padded to 8. Written out rather than looped over ``_ENTRIES``: it runs on
    every report whose content changed (every report of a counting sensor).
    """
    content = _content(device)
    parts = [
        _padded(_manufacturer_data_value(content)),
        _padded(_service_data_value(content)),
        _padded(_service_uuids_value(content)),
    ]
    if content.name is not None:
        parts.append(_padded(_NAME + _string(content.name)))
    if content.tx_power is not None:
        parts.append(_TX_POWER.pack(_TX_POWER_PREFIX, content.tx_power))
    parts.append(_padded(_ADDRESS + _string(device.address)))
    parts.append(_padded(_ADDRESS_TYPE + _string(device.address_type)))
    parts.append(_padded(_ADAPTER + _string(device.adapter)))
    parts.append(_padded(_PATH_ENTRY + _string(device.path)))
    parts.append(_FIRST_SEEN.pack(_FIRST_SEEN_PREFIX, device.first_seen))
    if device.restored:
        parts.append(_RESTORED)
    return b"".join(parts)


def _padded(entry: bytes) -> bytes:
    return entry + _pad8(len(entry))


def _padded_string(text: str) -> bytes:
    """A string followed by padding to 4, as before an ``ay`` in ``{say}``."""
    data = _string(text)
    return data + _ZEROS[: -len(data) % ALIGN_U32]


# The entries that change between reports: LastSeen (24 bytes, so what follows
# stays 8-aligned), Interval (32 bytes, absent until learned) and Rssi (14
# bytes; last, so never padded).
_LAST_SEEN_PREFIX: Final = _entry_prefix("LastSeen", "d", ALIGN_STRUCT)
_INTERVAL_PREFIX: Final = _entry_prefix("Interval", "d", ALIGN_STRUCT)
_RSSI_PREFIX: Final = _entry_prefix("Rssi", "n", ALIGN_INT16)
_LAST_SEEN: Final = struct.Struct(f"<{len(_LAST_SEEN_PREFIX)}sd")
_INTERVAL: Final = struct.Struct(f"<{len(_INTERVAL_PREFIX)}sd")
_LAST_SEEN_RSSI: Final = struct.Struct(f"<{len(_LAST_SEEN_PREFIX)}sd{len(_RSSI_PREFIX)}sh")
_LAST_SEEN_INTERVAL: Final = struct.Struct(f"<{len(_LAST_SEEN_PREFIX)}sd{len(_INTERVAL_PREFIX)}sd")
_LAST_SEEN_INTERVAL_RSSI: Final = struct.Struct(
    f"<{len(_LAST_SEEN_PREFIX)}sd{len(_INTERVAL_PREFIX)}sd{len(_RSSI_PREFIX)}sh"
)
# Sources (a{sn}): only when two or more adapters hear the device, between
# Interval and Rssi; padded to 8 like every array entry.
_SOURCES: Final = _entry_prefix("Sources", "a{sn}", ALIGN_U32)
_RSSI: Final = struct.Struct(f"<{len(_RSSI_PREFIX)}sh")


def _sources_value(heard_by: dict[str, int]) -> bytes:
    """``Sources`` (adapter → latest RSSI), not padded after its value: each ``{sn}``
    is a string, padding to 2, an int16."""
    elements = []
    for adapter, rssi in heard_by.items():
        name = _string(adapter)
        elements.append(name + _ZEROS[: -len(name) % ALIGN_INT16] + _INT16.pack(rssi))
    return _array_value(_SOURCES, elements, ALIGN_STRUCT)


def _tail(device: Device) -> bytes:
    """LastSeen, Interval, Sources and Rssi of a device heard by several adapters."""
    parts = [_LAST_SEEN.pack(_LAST_SEEN_PREFIX, device.last_seen)]
    interval = device.learner.interval
    if interval is not None:
        parts.append(_INTERVAL_PREFIX + struct.pack("<d", interval))
    heard_by = device.heard_by()
    if len(heard_by) > 1:
        sources = _sources_value(heard_by)
        parts.append(sources if device.rssi is None else _padded(sources))
    if device.rssi is not None:
        parts.append(_RSSI.pack(_RSSI_PREFIX, device.rssi))
    return b"".join(parts)


def record_entry(device: Device) -> bytes:
    """``{sa{sv}}`` of one device (address, record): a signal body, or a snapshot entry.

    The record's constant part is encoded on first use after a change and kept
    in ``device.wire`` (the cache clears it when content or identity change).
    """
    wire = device.wire
    if wire is None:
        wire = device.wire = _content_and_identity(device)
    rssi, interval = device.rssi, device.learner.interval
    if len(device.sources) > 1:
        tail = _tail(device)
    elif interval is None:
        if rssi is None:
            tail = _LAST_SEEN.pack(_LAST_SEEN_PREFIX, device.last_seen)
        else:
            tail = _LAST_SEEN_RSSI.pack(_LAST_SEEN_PREFIX, device.last_seen, _RSSI_PREFIX, rssi)
    elif rssi is None:
        tail = _LAST_SEEN_INTERVAL.pack(
            _LAST_SEEN_PREFIX, device.last_seen, _INTERVAL_PREFIX, interval
        )
    else:
        tail = _LAST_SEEN_INTERVAL_RSSI.pack(
            _LAST_SEEN_PREFIX, device.last_seen, _INTERVAL_PREFIX, interval, _RSSI_PREFIX, rssi
        )
    return _item(device.address, wire + tail)


def _item(address: str, entries: bytes) -> bytes:
    """``{sa{sv}}`` (or ``(sa{sv})``: the same bytes) from the record's marshalled entries."""
    data = address.encode()
    head = _U32.pack(len(data)) + data + b"\0"
    head += _ZEROS[: -len(head) % ALIGN_U32]
    head += _U32.pack(len(entries))
    return head + _ZEROS[: -len(head) % ALIGN_STRUCT] + entries


def _manufacturer_data_value(content: Content) -> bytes:
    return _array_value(
        _MANUFACTURER_DATA,
        [_COMPANY.pack(k, len(v)) + v for k, v in content.manufacturer_data.items()],
        ALIGN_STRUCT,
    )


def _service_data_value(content: Content) -> bytes:
    return _array_value(
        _SERVICE_DATA,
        [_padded_string(k) + _U32.pack(len(v)) + v for k, v in content.service_data.items()],
        ALIGN_STRUCT,
    )


def _service_uuids_value(content: Content) -> bytes:
    return _array_value(_SERVICE_UUIDS, [_string(u) for u in content.service_uuids], ALIGN_U32)


def _content(device: Device) -> Content:
    content = device.content
    assert content is not None
    return content


# The entries of a changed-keys item: each key's entry from the device's state
# now, not padded after its value (``_join`` pads between entries).
_ENTRIES: Final[dict[str, Callable[[Device], bytes]]] = {
    "ManufacturerData": lambda d: _manufacturer_data_value(_content(d)),
    "ServiceData": lambda d: _service_data_value(_content(d)),
    "ServiceUuids": lambda d: _service_uuids_value(_content(d)),
    "Name": lambda d: _NAME + _string(_content(d).name or ""),
    "TxPower": lambda d: _TX_POWER_PREFIX + _INT16.pack(_content(d).tx_power or 0),
    "Address": lambda d: _ADDRESS + _string(d.address),
    "AddressType": lambda d: _ADDRESS_TYPE + _string(d.address_type),
    "Adapter": lambda d: _ADAPTER + _string(d.adapter),
    "Path": lambda d: _PATH_ENTRY + _string(d.path),
    "FirstSeen": lambda d: _FIRST_SEEN.pack(_FIRST_SEEN_PREFIX, d.first_seen),
    "Restored": lambda d: _RESTORED_VALUE,
    "LastSeen": lambda d: _LAST_SEEN.pack(_LAST_SEEN_PREFIX, d.last_seen),
    "Interval": lambda d: _INTERVAL.pack(_INTERVAL_PREFIX, d.learner.interval or 0.0),
    "Sources": lambda d: _sources_value(d.heard_by()),
    "Rssi": lambda d: _RSSI_PREFIX + _INT16.pack(d.rssi or 0),
}
_REMOVED_PREFIX: Final = _entry_prefix(REMOVED, "as", ALIGN_U32)


def changed_entry(device: Device, changes: Changes) -> bytes:
    """``(sa{sv})`` of one device carrying only ``changes.keys`` (their values now) and,
    if any key is gone, ``Removed`` (``as``) naming them: a DevicesDiscovered item."""
    keys = changes.keys
    entries = _ENTRIES
    if not changes.removed and "LastSeen" in keys:
        # The usual item (a reading, the time, the RSSI): the entries that change
        # on every report come as one precomputed struct, as in ``record_entry``.
        at = keys.index("LastSeen")
        tail = _TAILS.get(keys[at:])
        if tail is not None:
            head = b"".join([_padded(entries[key](device)) for key in keys[:at]])
            return _item(device.address, head + tail(device))
    parts = [entries[key](device) for key in keys]
    if changes.removed:
        parts.append(
            _array_value(_REMOVED_PREFIX, [_string(k) for k in changes.removed], ALIGN_U32)
        )
    return _item(device.address, _join(parts))


_TAILS: Final[dict[tuple[str, ...], Callable[[Device], bytes]]] = {
    ("LastSeen",): lambda d: _LAST_SEEN.pack(_LAST_SEEN_PREFIX, d.last_seen),
    ("LastSeen", "Rssi"): lambda d: _LAST_SEEN_RSSI.pack(
        _LAST_SEEN_PREFIX, d.last_seen, _RSSI_PREFIX, d.rssi or 0
    ),
    ("LastSeen", "Interval"): lambda d: _LAST_SEEN_INTERVAL.pack(
        _LAST_SEEN_PREFIX, d.last_seen, _INTERVAL_PREFIX, d.learner.interval or 0.0
    ),
    ("LastSeen", "Interval", "Rssi"): lambda d: _LAST_SEEN_INTERVAL_RSSI.pack(
        _LAST_SEEN_PREFIX,
        d.last_seen,
        _INTERVAL_PREFIX,
        d.learner.interval or 0.0,
        _RSSI_PREFIX,
        d.rssi or 0,
    ),
}


def _join(parts: Iterable[bytes]) -> bytes:
    """Marshalled 8-aligned elements back to back, padded to 8 between (not after the last)."""
    out: list[bytes] = []
    size = 0
    for part in parts:
        if size % ALIGN_STRUCT:
            pad = _ZEROS[: -size % ALIGN_STRUCT]
            out.append(pad)
            size += len(pad)
        out.append(part)
        size += len(part)
    return b"".join(out)


def snapshot_body(entries: Iterable[bytes]) -> bytes:
    """``a{sa{sv}}`` from ``record_entry`` blocks; also ``a(sa{sv})`` (DevicesDiscovered)
    from ``record_entry`` and ``changed_entry`` items: the two lay out alike."""
    body = _join(entries)
    return _U32.pack(len(body)) + b"\0\0\0\0" + body


def string_body(text: str) -> bytes:
    """A body of signature ``s`` (or ``o``)."""
    data = text.encode()
    return _U32.pack(len(data)) + data + b"\0"


def header_fields(
    signature: str,
    *,
    path: str | None = None,
    interface: str | None = None,
    member: str | None = None,
    destination: str | None = None,
    reply_serial: int | None = None,
) -> bytes:
    """The header's field array, padded so that the body follows; cache it per destination."""
    enc = _Encoder()
    enc.buf += bytes(FIELDS_START)  # the fixed header and the array length: see below
    start = len(enc.buf)
    for code, sig, value in (
        (FIELD_PATH, "o", path),
        (FIELD_INTERFACE, "s", interface),
        (FIELD_MEMBER, "s", member),
        (FIELD_REPLY_SERIAL, "u", reply_serial),
        (FIELD_DESTINATION, "s", destination),
        (FIELD_SIGNATURE, "g", signature),
    ):
        if not value:
            continue
        enc.align(ALIGN_STRUCT)
        enc.buf.append(code)
        enc.signature(sig)
        if sig == "u":
            assert isinstance(value, int)
            enc.pack("I", value)
        elif sig == "g":
            assert isinstance(value, str)
            enc.signature(value)
        else:
            assert isinstance(value, str)
            enc.string(value)
    length = len(enc.buf) - start
    enc.align(ALIGN_STRUCT)
    return _U32.pack(length) + bytes(enc.buf[start:])


def message(message_type: int, serial: int, fields: bytes, body: bytes, flags: int = 0) -> bytes:
    """A whole message: fixed header, ``header_fields`` output, body."""
    return FIXED_HEADER.pack(
        LITTLE_ENDIAN, message_type, flags, _PROTOCOL_VERSION, len(body), serial
    ) + (fields + body)
