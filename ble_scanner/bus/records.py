"""A cached device's record as Scanner1 entries, from blocks kept on the device.

dbus-fast builds and marshals a ``DeviceDiscovered`` record (12 variants) in
~13 µs (dev VM), every time. Here an item (``{sa{sv}}``: the address and the
record) is the address, the entries' length and three runs of whole entries,
each padded to 8 so that it can be encoded apart from the others (marshal.py,
"Alignment"):

- the content (ManufacturerData, ServiceData, ServiceUuids, Name, TxPower),
  kept on ``Device.content_wire``. A counting sensor's content is new on every
  report, so its usual shapes are cheap: one company's payload is one struct
  and its bytes, the empty arrays are constants;
- the identity (Address, AddressType, Adapter, Path, FirstSeen, Restored),
  kept on ``Device.identity_wire``, encoded again only when the device moves
  to another adapter or the like;
- LastSeen, Interval, Sources and Rssi, packed on every report.

``core/cache.py`` clears each kept block when what it encodes changes. The
entries come in ``record_variants``' order (service.py), and the bytes are
dbus-fast's own: tests/unit/test_marshal.py compares the two byte for byte.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Final, NamedTuple

from ..core.cache import Device
from ..core.delta import REMOVED, Changes
from ..core.record import Content
from .marshal import (
    ALIGN_INT16,
    ALIGN_STRUCT,
    ALIGN_U32,
    U32,
    ZEROS,
    entry_prefix,
)


def _padded(entry: bytes) -> bytes:
    return entry + ZEROS[: -len(entry) % ALIGN_STRUCT]


def _string(text: str) -> bytes:
    data = text.encode()
    return U32.pack(len(data)) + data + b"\0"


def _string_entry(prefix: bytes, text: str, padded: bool) -> bytes:
    """A string-valued entry (``prefix`` ends 4-aligned); ``padded``: to 8 after its NUL."""
    data = text.encode()
    size = len(data)
    end = len(prefix) + U32.size + size
    nul_and_padding = ZEROS[: ALIGN_STRUCT - end % ALIGN_STRUCT] if padded else b"\0"
    return b"".join((prefix, U32.pack(size), data, nul_and_padding))


class _Array(NamedTuple):
    """An array-valued entry's constant part."""

    prefix: bytes  # the key and the signature, up to the array's length (4-aligned)
    head: struct.Struct  # packs the prefix and the array's length, pads to the first element
    alignment: int  # of each element


def _array(key: str, sig: str, alignment: int) -> _Array:
    prefix = entry_prefix(key, sig, ALIGN_U32)
    padding = -(len(prefix) + U32.size) % alignment
    return _Array(prefix, struct.Struct(f"<{len(prefix)}sI{padding}x"), alignment)


def _array_entry(array: _Array, elements: list[bytes], padded: bool) -> bytes:
    """An array-valued entry; ``padded``: to 8 after its value.

    Elements are padded to ``alignment`` between each other; the array's
    length counts from its first element to the end of its last. The padding
    before the first element is there even if there is none.
    """
    prefix, head, alignment = array
    if len(elements) > 1:
        last = elements[-1]
        elements = [e + ZEROS[: -len(e) % alignment] for e in elements[:-1]]
        elements.append(last)
    body = b"".join(elements)  # one element: itself, not a copy
    size = len(body)
    padding = ZEROS[: -(head.size + size) % ALIGN_STRUCT] if padded else b""
    return b"".join((head.pack(prefix, size), body, padding))


# Entry prefixes: arrays and strings start with a 4-aligned length, which the
# 8-aligned entry start makes a constant offset.
_MANUFACTURER_DATA: Final = _array("ManufacturerData", "a{qay}", ALIGN_STRUCT)
_SERVICE_DATA: Final = _array("ServiceData", "a{say}", ALIGN_STRUCT)
_SERVICE_UUIDS: Final = _array("ServiceUuids", "as", ALIGN_U32)
_NAME: Final = entry_prefix("Name", "s", ALIGN_U32)
_TX_POWER_PREFIX: Final = entry_prefix("TxPower", "n", ALIGN_INT16)
_ADDRESS: Final = entry_prefix("Address", "s", ALIGN_U32)
_ADDRESS_TYPE: Final = entry_prefix("AddressType", "s", ALIGN_U32)
_ADAPTER: Final = entry_prefix("Adapter", "s", ALIGN_U32)
_PATH_ENTRY: Final = entry_prefix("Path", "o", ALIGN_U32)
_FIRST_SEEN_PREFIX: Final = entry_prefix("FirstSeen", "d", ALIGN_STRUCT)
_FIRST_SEEN: Final = struct.Struct(f"<{len(_FIRST_SEEN_PREFIX)}sd")
_RESTORED_PREFIX: Final = entry_prefix("Restored", "b", ALIGN_U32)
_RESTORED_VALUE: Final = _RESTORED_PREFIX + U32.pack(1)
_RESTORED: Final = _padded(_RESTORED_VALUE)


def _int16_entry(prefix: bytes, padded: bool) -> struct.Struct:
    """Packs an int16-valued entry from its prefix (which ends 2-aligned) and value."""
    padding = -(len(prefix) + 2) % ALIGN_STRUCT if padded else 0
    return struct.Struct(f"<{len(prefix)}sh{padding}x")


_TX_POWER: Final = _int16_entry(_TX_POWER_PREFIX, padded=False)
_TX_POWER_PADDED: Final = _int16_entry(_TX_POWER_PREFIX, padded=True)

# ManufacturerData (a{qay}): each {qay} is a company id, padding to 4, the
# payload's length and the payload.
_COMPANY: Final = struct.Struct("<H2xI")
# The ManufacturerData of most sensors, one company's, up to its payload: the
# array's head and the company's.
_ONE_COMPANY: Final = struct.Struct(_MANUFACTURER_DATA.head.format + _COMPANY.format[1:])


def _manufacturer_data_entry(data: Mapping[int, bytes], padded: bool) -> bytes:
    if len(data) == 1:
        ((company, payload),) = data.items()
        size = len(payload)
        head = _ONE_COMPANY.pack(_MANUFACTURER_DATA.prefix, _COMPANY.size + size, company, size)
        padding = ZEROS[: -(_ONE_COMPANY.size + size) % ALIGN_STRUCT] if padded else b""
        return b"".join((head, payload, padding))
    return _array_entry(
        _MANUFACTURER_DATA, [_COMPANY.pack(k, len(v)) + v for k, v in data.items()], padded
    )


# ServiceData (a{say}): each {say} is a string, padding to 4, the payload's
# length and the payload. Keys are 128-bit UUIDs, 36 characters
# (core/identifiers.py normalize_uuid): such a {say} up to its payload is
# _SERVICE_KEY (the NUL and padding are 4 bytes), and ServiceData of one is
# _ONE_SERVICE and the payload.
_UUID_SIZE: Final = 36
_SERVICE_KEY: Final = struct.Struct(f"<I{_UUID_SIZE}s{ALIGN_U32 - _UUID_SIZE % ALIGN_U32}xI")
_ONE_SERVICE: Final = struct.Struct(_SERVICE_DATA.head.format + _SERVICE_KEY.format[1:])


def _service_data_entry(data: Mapping[str, bytes], padded: bool) -> bytes:
    if len(data) == 1:
        ((uuid, payload),) = data.items()
        key = uuid.encode()
        if len(key) == _UUID_SIZE:
            size = len(payload)
            head = _ONE_SERVICE.pack(
                _SERVICE_DATA.prefix, _SERVICE_KEY.size + size, _UUID_SIZE, key, size
            )
            padding = ZEROS[: -(_ONE_SERVICE.size + size) % ALIGN_STRUCT] if padded else b""
            return b"".join((head, payload, padding))
    elements = []
    for uuid, payload in data.items():
        key = uuid.encode()
        size = len(key)
        nul_and_padding = ZEROS[: ALIGN_U32 - size % ALIGN_U32]
        elements.append(
            b"".join((U32.pack(size), key, nul_and_padding, U32.pack(len(payload)), payload))
        )
    return _array_entry(_SERVICE_DATA, elements, padded)


# One 128-bit UUID's ServiceUuids: the array's head, the string.
_ONE_UUID: Final = struct.Struct(_SERVICE_UUIDS.head.format + f"I{_UUID_SIZE}sx")
_ONE_UUID_PADDING: Final = ZEROS[: -_ONE_UUID.size % ALIGN_STRUCT]


def _service_uuids_entry(uuids: tuple[str, ...], padded: bool) -> bytes:
    if len(uuids) == 1:
        key = uuids[0].encode()
        if len(key) == _UUID_SIZE:
            string_size = U32.size + _UUID_SIZE + 1
            entry = _ONE_UUID.pack(_SERVICE_UUIDS.prefix, string_size, _UUID_SIZE, key)
            return entry + _ONE_UUID_PADDING if padded else entry
    return _array_entry(_SERVICE_UUIDS, [_string(u) for u in uuids], padded)


# The empty arrays: most records carry an empty ServiceData or ServiceUuids.
_NO_MANUFACTURER_DATA: Final = _manufacturer_data_entry({}, padded=True)
_NO_SERVICE_DATA: Final = _service_data_entry({}, padded=True)
_NO_SERVICE_UUIDS: Final = _service_uuids_entry((), padded=True)


def _content_entries(content: Content) -> bytes:
    """ManufacturerData to TxPower, padded to 8: the block kept on ``Device.content_wire``.

    Runs on every report whose content changed (every report of a counting sensor).
    """
    data, service_data, uuids = (
        content.manufacturer_data,
        content.service_data,
        content.service_uuids,
    )
    parts = [
        _manufacturer_data_entry(data, padded=True) if data else _NO_MANUFACTURER_DATA,
        _service_data_entry(service_data, padded=True) if service_data else _NO_SERVICE_DATA,
        _service_uuids_entry(uuids, padded=True) if uuids else _NO_SERVICE_UUIDS,
    ]
    if content.name is not None:
        parts.append(_string_entry(_NAME, content.name, padded=True))
    if content.tx_power is not None:
        parts.append(_TX_POWER_PADDED.pack(_TX_POWER_PREFIX, content.tx_power))
    return b"".join(parts)


def _identity_entries(device: Device) -> bytes:
    """Address to Restored, padded to 8: the block kept on ``Device.identity_wire``."""
    parts = [
        _string_entry(_ADDRESS, device.address, padded=True),
        _string_entry(_ADDRESS_TYPE, device.address_type, padded=True),
        _string_entry(_ADAPTER, device.adapter, padded=True),
        _string_entry(_PATH_ENTRY, device.path, padded=True),
        _FIRST_SEEN.pack(_FIRST_SEEN_PREFIX, device.first_seen),
    ]
    if device.restored:
        parts.append(_RESTORED)
    return b"".join(parts)


# The entries that change between reports: LastSeen (24 bytes, so what follows
# stays 8-aligned), Interval (32 bytes, absent until learned) and Rssi (14
# bytes; last, so never padded).
_LAST_SEEN_PREFIX: Final = entry_prefix("LastSeen", "d", ALIGN_STRUCT)
_INTERVAL_PREFIX: Final = entry_prefix("Interval", "d", ALIGN_STRUCT)
_RSSI_PREFIX: Final = entry_prefix("Rssi", "n", ALIGN_INT16)
_LAST_SEEN: Final = struct.Struct(f"<{len(_LAST_SEEN_PREFIX)}sd")
_INTERVAL: Final = struct.Struct(f"<{len(_INTERVAL_PREFIX)}sd")
_LAST_SEEN_RSSI: Final = struct.Struct(f"<{len(_LAST_SEEN_PREFIX)}sd{len(_RSSI_PREFIX)}sh")
_LAST_SEEN_INTERVAL: Final = struct.Struct(f"<{len(_LAST_SEEN_PREFIX)}sd{len(_INTERVAL_PREFIX)}sd")
_LAST_SEEN_INTERVAL_RSSI: Final = struct.Struct(
    f"<{len(_LAST_SEEN_PREFIX)}sd{len(_INTERVAL_PREFIX)}sd{len(_RSSI_PREFIX)}sh"
)
# Sources (a{sn}): only when two or more adapters hear the device, between
# Interval and Rssi; padded to 8 like every array entry.
_SOURCES: Final = _array("Sources", "a{sn}", ALIGN_STRUCT)
_RSSI: Final = _int16_entry(_RSSI_PREFIX, padded=False)
_RSSI_PADDED: Final = _int16_entry(_RSSI_PREFIX, padded=True)
_INT16: Final = struct.Struct("<h")


def _sources_entry(heard_by: dict[str, int], padded: bool) -> bytes:
    """``Sources`` (adapter → latest RSSI): each ``{sn}`` is a string, padding to 2,
    an int16."""
    elements = []
    for adapter, rssi in heard_by.items():
        name = _string(adapter)
        elements.append(name + ZEROS[: -len(name) % ALIGN_INT16] + _INT16.pack(rssi))
    return _array_entry(_SOURCES, elements, padded)


def _tail(device: Device) -> bytes:
    """LastSeen, Interval, Sources and Rssi of a device heard by several adapters."""
    parts = [_LAST_SEEN.pack(_LAST_SEEN_PREFIX, device.last_seen)]
    interval = device.learner.interval
    if interval is not None:
        parts.append(_INTERVAL.pack(_INTERVAL_PREFIX, interval))
    heard_by = device.heard_by()
    if len(heard_by) > 1:
        parts.append(_sources_entry(heard_by, padded=device.rssi is not None))
    if device.rssi is not None:
        parts.append(_RSSI.pack(_RSSI_PREFIX, device.rssi))
    return b"".join(parts)


def record_entry(device: Device) -> bytes:
    """``{sa{sv}}`` of one device (address, record): a signal body, or a snapshot entry.

    The content and identity blocks are encoded on first use after a change and
    kept on the device (the cache clears each when what it encodes changes).
    """
    content = device.content_wire
    if content is None:
        content = device.content_wire = _content_entries(_content(device))
    identity = device.identity_wire
    if identity is None:
        identity = device.identity_wire = _identity_entries(device)
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
    size = len(content) + len(identity) + len(tail)
    return b"".join((_item_head(device.address, size), content, identity, tail))


def _item_struct(size: int) -> struct.Struct:
    """``{sa{sv}}`` up to the entries, for an address of ``size`` bytes: the address,
    padding to 4, the entries' length, padding to 8."""
    string_end = U32.size + size + 1
    pad = -string_end % ALIGN_U32
    entries_start = string_end + pad + U32.size
    return struct.Struct(f"<I{size}s{1 + pad}xI{-entries_start % ALIGN_STRUCT}x")


# BlueZ's addresses are all "XX:XX:XX:XX:XX:XX" (ba2str, lib/bluetooth.c).
_ADDRESS_SIZE: Final = 17
_ITEM_HEAD: Final = _item_struct(_ADDRESS_SIZE)


def _item_head(address: str, entries_size: int) -> bytes:
    """``{sa{sv}}`` (or ``(sa{sv})``: the same bytes) up to its ``entries_size`` bytes of
    entries."""
    data = address.encode()
    size = len(data)
    head = _ITEM_HEAD if size == _ADDRESS_SIZE else _item_struct(size)
    return head.pack(size, data, entries_size)


def _item(address: str, entries: bytes) -> bytes:
    return _item_head(address, len(entries)) + entries


def _content(device: Device) -> Content:
    content = device.content
    assert content is not None
    return content


# The entries of a changed-keys item: each key's entry from the device's state
# now, padded to 8 after its value if asked (all but an item's last are).
_ENTRIES: Final[dict[str, Callable[[Device, Content, bool], bytes]]] = {
    "ManufacturerData": lambda d, c, p: _manufacturer_data_entry(c.manufacturer_data, p),
    "ServiceData": lambda d, c, p: _service_data_entry(c.service_data, p),
    "ServiceUuids": lambda d, c, p: _service_uuids_entry(c.service_uuids, p),
    "Name": lambda d, c, p: _string_entry(_NAME, c.name or "", p),
    "TxPower": lambda d, c, p: (_TX_POWER_PADDED if p else _TX_POWER).pack(
        _TX_POWER_PREFIX, c.tx_power or 0
    ),
    "Address": lambda d, c, p: _string_entry(_ADDRESS, d.address, p),
    "AddressType": lambda d, c, p: _string_entry(_ADDRESS_TYPE, d.address_type, p),
    "Adapter": lambda d, c, p: _string_entry(_ADAPTER, d.adapter, p),
    "Path": lambda d, c, p: _string_entry(_PATH_ENTRY, d.path, p),
    "FirstSeen": lambda d, c, p: _FIRST_SEEN.pack(_FIRST_SEEN_PREFIX, d.first_seen),
    "Restored": lambda d, c, p: _RESTORED if p else _RESTORED_VALUE,
    "LastSeen": lambda d, c, p: _LAST_SEEN.pack(_LAST_SEEN_PREFIX, d.last_seen),
    "Interval": lambda d, c, p: _INTERVAL.pack(_INTERVAL_PREFIX, d.learner.interval or 0.0),
    "Sources": lambda d, c, p: _sources_entry(d.heard_by(), p),
    "Rssi": lambda d, c, p: (_RSSI_PADDED if p else _RSSI).pack(_RSSI_PREFIX, d.rssi or 0),
}
_REMOVED: Final = _array(REMOVED, "as", ALIGN_U32)


def changed_entry(device: Device, changes: Changes) -> bytes:
    """``(sa{sv})`` of one device carrying only ``changes.keys`` (their values now) and,
    if any key is gone, ``Removed`` (``as``) naming them: a DevicesDiscovered item."""
    keys, removed = changes
    content = _content(device)
    entries = _ENTRIES
    if removed:
        parts = [entries[key](device, content, True) for key in keys]
        parts.append(_array_entry(_REMOVED, [_string(k) for k in removed], padded=False))
        return _item(device.address, b"".join(parts))
    if "LastSeen" in keys:
        # The usual item (a reading, the time, the RSSI): the entries that change
        # on every report come as one precomputed struct, as in ``record_entry``.
        at = keys.index("LastSeen")
        tail = _TAILS.get(keys[at:])
        if tail is not None:
            parts = [entries[key](device, content, True) for key in keys[:at]]
            parts.append(tail(device))
            return _item(device.address, b"".join(parts))
    parts = [entries[key](device, content, True) for key in keys[:-1]]
    parts += [entries[key](device, content, False) for key in keys[-1:]]
    return _item(device.address, b"".join(parts))


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
