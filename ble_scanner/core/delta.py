"""What changed in a device's record since a subscription last got it (``ChangedKeysOnly``).

Pure logic. A ``Sent`` is the record's values as one item carried them (built
once per report and shared by every subscription that got that report);
``changes`` compares two and names the record keys (docs/dbus-api.md
"Record") whose value is new, and those that were present and are now absent
(the item's ``Removed``). A client merges an item into what it holds by
setting the keys it carries and deleting those in ``Removed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, NamedTuple, Protocol

from .record import Content

# The record's keys in the order a record carries them (bus/marshal.py), so
# that an item of changed keys keeps that order too.
RECORD_KEYS: Final = (
    "ManufacturerData",
    "ServiceData",
    "ServiceUuids",
    "Name",
    "TxPower",
    "Address",
    "AddressType",
    "Adapter",
    "Path",
    "FirstSeen",
    "Restored",
    "LastSeen",
    "Interval",
    "Sources",
    "Rssi",
)
# The item key naming what is gone (``as``): not a record key.
REMOVED: Final = "Removed"


class Sent(NamedTuple):
    """A device's record as one item carried it (absent keys are None / False)."""

    content: Content
    address_type: str
    adapter: str
    path: str
    first_seen: float
    restored: bool
    last_seen: float
    interval: float | None
    sources: dict[str, int] | None  # only when two or more adapters hear it
    rssi: int | None


class Changes(NamedTuple):
    """The record keys an item carries (record order) and those it names in ``Removed``."""

    keys: tuple[str, ...]
    removed: tuple[str, ...]


class Recorded(Protocol):
    """What a record is made of: the service's cached Device (core/cache.py)."""

    @property
    def content(self) -> Content | None: ...
    @property
    def address_type(self) -> str: ...
    @property
    def adapter(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def first_seen(self) -> float: ...
    @property
    def restored(self) -> bool: ...
    @property
    def last_seen(self) -> float: ...
    @property
    def interval(self) -> float | None: ...
    @property
    def rssi(self) -> int | None: ...
    @property
    def sources(self) -> Mapping[str, object]: ...
    def heard_by(self) -> dict[str, int]: ...


def sent_of(device: Recorded) -> Sent:
    """The record ``device`` has now, for comparing with the next one."""
    content = device.content
    assert content is not None
    return Sent(
        content,
        device.address_type,
        device.adapter,
        device.path,
        device.first_seen,
        device.restored,
        device.last_seen,
        device.interval,
        device.heard_by() if len(device.sources) > 1 else None,
        device.rssi,
    )


def _optional(key: str, before: object, after: object, keys: list[str], removed: list[str]) -> None:
    """An optional key (absent as None or False): new, changed, or gone."""
    if after is None or after is False:
        if before is not None and before is not False:
            removed.append(key)
    elif after != before:
        keys.append(key)


def changes(before: Sent, after: Sent) -> Changes:
    """The keys whose value differs from ``before`` to ``after``, and those gone."""
    keys: list[str] = []
    removed: list[str] = []
    old, new = before.content, after.content
    if old is not new:
        # Always present (empty when the device advertises none).
        if new.manufacturer_data != old.manufacturer_data:
            keys.append("ManufacturerData")
        if new.service_data != old.service_data:
            keys.append("ServiceData")
        if new.service_uuids != old.service_uuids:
            keys.append("ServiceUuids")
        _optional("Name", old.name, new.name, keys, removed)
        _optional("TxPower", old.tx_power, new.tx_power, keys, removed)
    # Address is the item's own key, the same for every item of a device.
    if after.address_type != before.address_type:
        keys.append("AddressType")
    if after.adapter != before.adapter:
        keys.append("Adapter")
    if after.path != before.path:
        keys.append("Path")
    if after.first_seen != before.first_seen:
        keys.append("FirstSeen")
    _optional("Restored", before.restored, after.restored, keys, removed)
    if after.last_seen != before.last_seen:
        keys.append("LastSeen")
    _optional("Interval", before.interval, after.interval, keys, removed)
    _optional("Sources", before.sources, after.sources, keys, removed)
    _optional("Rssi", before.rssi, after.rssi, keys, removed)
    return Changes(tuple(keys), tuple(removed))
