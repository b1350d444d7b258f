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


def normalize_address(address: str) -> str:
    """``aa:bb:cc:dd:ee:ff`` → ``AA:BB:CC:DD:EE:FF``; ValueError for anything else."""
    upper = address.strip().upper()
    if not _ADDRESS_RE.match(upper):
        raise ValueError(f"not a Bluetooth address: {address[:40]!r}")
    return upper


def normalize_uuid(uuid: str) -> str:
    """A 16-, 32- or 128-bit UUID → the 128-bit lower-case form BlueZ uses; ValueError else."""
    text = uuid.strip().lower()
    if text.startswith("0x"):
        text = text[2:]
    if len(text) in (4, 8) and _HEX_RE.match(text):
        return text.rjust(8, "0") + BASE_UUID_SUFFIX
    if _UUID128_RE.match(text):
        return text
    raise ValueError(f"not a UUID: {uuid[:40]!r}")
