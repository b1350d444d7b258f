"""UUID spelling as BlueZ stores it: 128-bit, lower case."""

from __future__ import annotations

import re

from .const import BASE_UUID_SUFFIX

_HEX = re.compile(r"^[0-9a-fA-F]+$")
_UUID128 = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)


def uuid128(text: str) -> str:
    """Expand a 16-, 32- or 128-bit UUID (``bt_string_to_uuid``); ValueError if invalid."""
    if text.startswith(("0x", "0X")):
        text = text[2:]
    if len(text) in (4, 8) and _HEX.match(text):
        return f"{int(text, 16):08x}{BASE_UUID_SUFFIX}"
    if _UUID128.match(text):
        return text.lower()
    raise ValueError(f"not a UUID: {text!r}")


def short_uuid(uuid: str) -> int | None:
    """The 16- or 32-bit alias of a base-UUID value, else None."""
    if uuid.endswith(BASE_UUID_SUFFIX):
        return int(uuid[:8], 16)
    return None
