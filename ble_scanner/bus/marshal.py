"""Scanner1 messages in D-Bus wire format. Pure: no D-Bus library.

dbus-fast builds and marshals a message from Variants every time; the service
writes its signals and snapshot replies itself, from record entries encoded
once per change (``records.py``) and a header whose fields are cached per
destination (signals.py).

The layout follows the D-Bus specification ("Marshaling (Wire Format)"), in
little-endian, with header fields in dbus-fast's order, so that the bytes are
identical to what ``dbus_fast.Message._marshall`` produces: the unit tests
compare the two byte for byte (tests/unit/test_marshal.py).

Alignment: every ``{sv}`` dict entry starts on an 8-byte boundary, so an
entry's bytes do not depend on where it lands; a block of whole entries
padded to a multiple of 8 can therefore be encoded once and put anywhere.

The wire-format constants (message types, header field codes, the fixed
header) are defined here once; ``writer.py`` reads messages with them.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final

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

U32: Final = struct.Struct("<I")
# endianness, type, flags, version, body length, serial
FIXED_HEADER: Final = struct.Struct("<BBBBII")
# The header field array starts after the fixed header and the array's length.
FIELDS_START: Final = FIXED_HEADER.size + U32.size
# Padding is sliced from here: never more than 7 bytes, or 8 with a string's NUL.
ZEROS: Final = bytes(ALIGN_STRUCT)


class _Encoder:
    """Appends values at their alignment; offset 0 is taken to be 8-aligned.

    Used once per constant (entry prefixes) and per header; the per-record
    path (records.py) joins precomputed pieces instead.
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
        self.buf += U32.pack(len(data))
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


def entry_prefix(key: str, sig: str, alignment: int) -> bytes:
    """A ``{sv}`` entry up to its value: key, variant signature, padding to the value."""
    enc = _Encoder()
    enc.entry(key, sig)
    enc.align(alignment)
    return bytes(enc.buf)


def _join_aligned(parts: Iterable[bytes]) -> bytes:
    """Marshalled 8-aligned elements back to back, padded to 8 between (not after the last)."""
    out: list[bytes] = []
    size = 0
    for part in parts:
        if size % ALIGN_STRUCT:
            pad = ZEROS[: -size % ALIGN_STRUCT]
            out.append(pad)
            size += len(pad)
        out.append(part)
        size += len(part)
    return b"".join(out)


def snapshot_body(entries: Iterable[bytes]) -> bytes:
    """``a{sa{sv}}`` from ``records.record_entry`` blocks; also ``a(sa{sv})``
    (DevicesDiscovered) from ``record_entry`` and ``changed_entry`` items: the
    two lay out alike."""
    body = _join_aligned(entries)
    return U32.pack(len(body)) + b"\0\0\0\0" + body


def string_body(text: str) -> bytes:
    """A body of signature ``s`` (or ``o``)."""
    data = text.encode()
    return U32.pack(len(data)) + data + b"\0"


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
    return U32.pack(length) + bytes(enc.buf[start:])


def message(message_type: int, serial: int, fields: bytes, body: bytes, flags: int = 0) -> bytes:
    """A whole message: fixed header, ``header_fields`` output, body."""
    return FIXED_HEADER.pack(
        LITTLE_ENDIAN, message_type, flags, _PROTOCOL_VERSION, len(body), serial
    ) + (fields + body)
