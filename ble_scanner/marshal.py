"""Scanner1 messages in D-Bus wire format, from cached parts.

dbus-fast marshals a ``DeviceDiscovered`` record (12 variants) in ~10 µs,
every time, although only ``LastSeen`` and ``Rssi`` change between most
reports. Here the rest of a record is encoded once per change and kept on the
cached device (``Device.wire``); a signal is then that block, a 38-byte tail
and a header whose fields are cached per destination. Pure: no D-Bus library.

The layout follows the D-Bus specification ("Marshaling (Wire Format)"), in
little-endian, with header fields in dbus-fast's order, so that the bytes are
identical to what ``dbus_fast.Message._marshall`` produces: the unit tests
compare the two byte for byte (tests/unit/test_marshal.py).

Alignment: every ``{sv}`` dict entry starts on an 8-byte boundary, so an
entry's bytes do not depend on where it lands; each cached block therefore
starts 8-aligned and is padded to a multiple of 8.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final

from .cache import Device

MESSAGE_METHOD_RETURN: Final = 2
MESSAGE_SIGNAL: Final = 4
_PROTOCOL_VERSION: Final = 1
# Header field codes (specification, "Header Fields").
_PATH, _INTERFACE, _MEMBER, _REPLY_SERIAL, _DESTINATION, _SIGNATURE = 1, 2, 3, 5, 6, 8

_U32: Final = struct.Struct("<I")
_FIXED_HEADER: Final = struct.Struct("<cBBBII")  # endianness, type, flags, version, length, serial


class _Encoder:
    """Appends values at their alignment; offset 0 is taken to be 8-aligned."""

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
        self.align(4)
        self.buf += _U32.pack(len(data))
        self.buf += data
        self.buf.append(0)

    def signature(self, sig: str) -> None:
        self.buf.append(len(sig))
        self.buf += sig.encode()
        self.buf.append(0)

    def byte_array(self, data: bytes) -> None:
        self.align(4)
        self.buf += _U32.pack(len(data))
        self.buf += data

    def begin_array(self, element_alignment: int) -> tuple[int, int]:
        self.align(4)
        at = len(self.buf)
        self.buf += b"\0\0\0\0"
        self.align(element_alignment)
        return at, len(self.buf)

    def end_array(self, mark: tuple[int, int]) -> None:
        at, start = mark
        self.buf[at : at + 4] = _U32.pack(len(self.buf) - start)

    def entry(self, key: str, sig: str) -> None:
        """Start a ``{sv}`` dict entry; the caller appends the value."""
        self.align(8)
        self.string(key)
        self.signature(sig)


def _content_and_identity(device: Device) -> bytes:
    """Every record entry but LastSeen and Rssi, in ``record_variants`` order, padded to 8."""
    content = device.content
    assert content is not None
    enc = _Encoder()
    enc.entry("ManufacturerData", "a{qay}")
    mark = enc.begin_array(8)
    for company, payload in content.manufacturer_data.items():
        enc.align(8)
        enc.pack("H", company)
        enc.byte_array(payload)
    enc.end_array(mark)
    enc.entry("ServiceData", "a{say}")
    mark = enc.begin_array(8)
    for uuid, payload in content.service_data.items():
        enc.align(8)
        enc.string(uuid)
        enc.byte_array(payload)
    enc.end_array(mark)
    enc.entry("ServiceUuids", "as")
    mark = enc.begin_array(4)
    for uuid in content.service_uuids:
        enc.string(uuid)
    enc.end_array(mark)
    if content.name is not None:
        enc.entry("Name", "s")
        enc.string(content.name)
    if content.tx_power is not None:
        enc.entry("TxPower", "n")
        enc.pack("h", content.tx_power)
    for key, sig, text in (
        ("Address", "s", device.address),
        ("AddressType", "s", device.address_type),
        ("Adapter", "s", device.adapter),
        ("Path", "o", device.path),
    ):
        enc.entry(key, sig)
        enc.string(text)
    enc.entry("FirstSeen", "d")
    enc.pack("d", device.first_seen)
    enc.align(8)
    return bytes(enc.buf)


def _entry_prefix(key: str, sig: str, alignment: int) -> bytes:
    enc = _Encoder()
    enc.entry(key, sig)
    enc.align(alignment)
    return bytes(enc.buf)


# The two entries that change with every report: LastSeen (24 bytes, so Rssi
# after it stays 8-aligned) and Rssi (14 bytes; last, so never padded).
_LAST_SEEN_PREFIX: Final = _entry_prefix("LastSeen", "d", 8)
_RSSI_PREFIX: Final = _entry_prefix("Rssi", "n", 2)
_LAST_SEEN: Final = struct.Struct(f"<{len(_LAST_SEEN_PREFIX)}sd")
_LAST_SEEN_RSSI: Final = struct.Struct(f"<{len(_LAST_SEEN_PREFIX)}sd{len(_RSSI_PREFIX)}sh")


def record_entry(device: Device) -> bytes:
    """``{sa{sv}}`` of one device (address, record): a signal body, or a snapshot entry.

    The record's constant part is encoded on first use after a change and kept
    in ``device.wire`` (the cache clears it when content or identity change).
    """
    wire = device.wire
    if wire is None:
        wire = device.wire = _content_and_identity(device)
    if device.rssi is None:
        tail = _LAST_SEEN.pack(_LAST_SEEN_PREFIX, device.last_seen)
    else:
        tail = _LAST_SEEN_RSSI.pack(_LAST_SEEN_PREFIX, device.last_seen, _RSSI_PREFIX, device.rssi)
    address = device.address.encode()
    head = _U32.pack(len(address)) + address + b"\0"
    head += bytes(-len(head) % 4)
    head += _U32.pack(len(wire) + len(tail))
    return head + bytes(-len(head) % 8) + wire + tail


def snapshot_body(entries: Iterable[bytes]) -> bytes:
    """``a{sa{sv}}`` from ``record_entry`` blocks (each padded to 8 but the last)."""
    parts: list[bytes] = []
    size = 0
    for entry in entries:
        if size % 8:
            pad = bytes(-size % 8)
            parts.append(pad)
            size += len(pad)
        parts.append(entry)
        size += len(entry)
    return _U32.pack(size) + b"\0\0\0\0" + b"".join(parts)


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
    enc.buf += bytes(16)  # the fixed header and the array length, filled in below
    start = len(enc.buf)
    for code, sig, value in (
        (_PATH, "o", path),
        (_INTERFACE, "s", interface),
        (_MEMBER, "s", member),
        (_REPLY_SERIAL, "u", reply_serial),
        (_DESTINATION, "s", destination),
        (_SIGNATURE, "g", signature),
    ):
        if not value:
            continue
        enc.align(8)
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
    enc.align(8)
    return _U32.pack(length) + bytes(enc.buf[start:])


def message(message_type: int, serial: int, fields: bytes, body: bytes, flags: int = 0) -> bytes:
    """A whole message: fixed header, ``header_fields`` output, body."""
    return _FIXED_HEADER.pack(b"l", message_type, flags, _PROTOCOL_VERSION, len(body), serial) + (
        fields + body
    )
