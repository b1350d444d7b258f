"""Full records again from a batched subscription's items (pure; no D-Bus library).

With ``ChangedKeysOnly`` the service sends, per device, the full record first
(the first item of a device, the first after its ``DeviceLost``, every
replayed item) and then only the keys whose value changed, naming in
``Removed`` those that went away (``ble_scanner/core/delta.py`` computes them).
``RecordMerger`` keeps each device's fields and rebuilds the full
``Advertisement`` from every item, so a user sees exactly the records one
``DeviceDiscovered`` each would have given. Fields an item does not carry are
the previous record's own objects (immutable), not copies.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..core.delta import REMOVED
from .records import FIELD_DEFAULTS, RECORD_FIELDS, Advertisement, advertisement_of, apply_keys

__all__ = ["REMOVED", "RecordMerger"]


class RecordMerger:
    """Per address, the fields of the record last rebuilt; forgets a device on ``lost``."""

    __slots__ = ("_fields",)

    def __init__(self) -> None:
        self._fields: dict[str, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self._fields)

    def item(self, address: str, values: Mapping[str, Any]) -> Advertisement:
        """The full record after ``values`` (unwrapped) for ``address``.

        A full record carries ``Address`` (which never changes, so a changed-keys
        item never does) and replaces what was kept. ValueError, keeping the
        device's fields as they were, if the item is malformed or carries only
        changes for a device not known here.
        """
        if "Address" in values:
            fields = {**FIELD_DEFAULTS}
        else:
            last = self._fields.get(address)
            if last is None:
                raise ValueError(f"changed keys for {address}, whose full record never came")
            fields = last.copy()
            removed = values.get(REMOVED)
            if removed:
                if isinstance(removed, str | bytes):
                    raise ValueError(f"malformed advertisement record: {REMOVED}={removed!r}")
                for key in removed:
                    known = RECORD_FIELDS.get(key)
                    if known is not None and known[0] in FIELD_DEFAULTS:
                        fields[known[0]] = FIELD_DEFAULTS[known[0]]
        apply_keys(fields, values)
        adv = advertisement_of(fields)
        self._fields[address] = fields
        return adv

    def lost(self, address: str) -> None:
        """The device is lost: its next item is a full record."""
        self._fields.pop(address, None)

    def clear(self) -> None:
        """A new subscription (a restarted service, a re-subscribe): every item starts full."""
        self._fields.clear()
