"""Bluetooth addresses and UUIDs in the one spelling the service uses everywhere.

Standard library only: the service's record parser, its filters and the
client side (including the dbus-python helper) all import it.
"""

from __future__ import annotations

import re
from typing import Final

BASE_UUID_SUFFIX: Final = "-0000-1000-8000-00805f9b34fb"
_ADDRESS_RE: Final = re.compile(r"^[0-9A-F]{2}(?::[0-9A-F]{2}){5}$")
_UUID128_RE: Final = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_HEX_RE: Final = re.compile(r"^[0-9a-f]+$")
# Hex digits of a 16- and a 32-bit UUID; both widen to 32 bits, then to 128.
_UUID16_DIGITS: Final = 4
_UUID32_DIGITS: Final = 8
# Bad input is quoted in errors this far: enough to recognise, never a flood.
MAX_ECHO: Final = 40


def normalize_address(address: str) -> str:
    """``aa:bb:cc:dd:ee:ff`` → ``AA:BB:CC:DD:EE:FF``; ValueError for anything else."""
    upper = address.strip().upper()
    if not _ADDRESS_RE.match(upper):
        raise ValueError(f"not a Bluetooth address: {address[:MAX_ECHO]!r}")
    return upper


def normalize_uuid(uuid: str) -> str:
    """A 16-, 32- or 128-bit UUID → the 128-bit lower-case form BlueZ uses; ValueError else."""
    text = uuid.strip().lower().removeprefix("0x")
    if len(text) in (_UUID16_DIGITS, _UUID32_DIGITS) and _HEX_RE.match(text):
        return text.rjust(_UUID32_DIGITS, "0") + BASE_UUID_SUFFIX
    if _UUID128_RE.match(text):
        return text
    raise ValueError(f"not a UUID: {uuid[:MAX_ECHO]!r}")
