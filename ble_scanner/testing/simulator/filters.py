"""Discovery filters: parsing SetDiscoveryFilter, merging sessions, matching reports.

Follows src/adapter.c (``parse_discovery_filter_dict``, ``merge_discovery_filters``,
``is_filter_match``, ``device_is_discoverable``) of BlueZ 5.72, including where
the code disagrees with the documentation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from dbus_fast import Variant

from .const import (
    FILTER_KEYS_572,
    FILTER_KEYS_HEAD,
    FILTER_PATHLOSS_MAX,
    FILTER_RSSI_MAX,
    FILTER_RSSI_MIN,
    FLAG_GENERAL_DISCOVERABLE,
    FLAG_LIMITED_DISCOVERABLE,
    TX_POWER_UNKNOWN,
)
from .report import Report
from .uuids import uuid128

TRANSPORTS = ("auto", "bredr", "le")


class FilterError(ValueError):
    """The filter is one BlueZ rejects with InvalidArguments."""


@dataclass(frozen=True, slots=True)
class DiscoveryFilter:
    """One sender's filter; ``given`` keeps what the client sent, as Python values."""

    uuids: frozenset[str]
    rssi: int | None
    pathloss: int | None
    transport: str | None
    duplicate_data: bool
    discoverable: bool
    pattern: str
    given: tuple[tuple[str, Any], ...]

    def is_regular(self, adapter_transport: str, version: str) -> bool:
        """True if it only repeats the defaults, so it counts as no filter at all."""
        if self.uuids or self.rssi is not None or self.pathloss is not None:
            return False
        if self.duplicate_data or self.pattern:
            return False
        if self.transport is not None and self.transport != adapter_transport:
            return False
        # 5.67+ (de8e7cf): a filter with only Discoverable set is regular too.
        return not (self.discoverable and version == "5.66")

    def as_dict(self) -> dict[str, Any]:
        return dict(self.given)


_TYPES = {
    "UUIDs": "as",
    "RSSI": "n",
    "Pathloss": "q",
    "Transport": "s",
    "DuplicateData": "b",
    "Discoverable": "b",
    "Pattern": "s",
    "AutoConnect": "b",
}


def parse_filter(entries: dict[str, Variant], version: str) -> DiscoveryFilter | None:
    """SetDiscoveryFilter's argument → filter, None for ``{}``; FilterError if invalid."""
    if not entries:
        return None
    keys = FILTER_KEYS_HEAD if version == "head" else FILTER_KEYS_572
    uuids: set[str] = set()
    rssi: int | None = None
    pathloss: int | None = None
    transport: str | None = None
    duplicate = discoverable = False
    pattern = ""
    given: list[tuple[str, Any]] = []
    for key, variant in entries.items():
        if key not in keys or not isinstance(variant, Variant):
            raise FilterError(key)
        if variant.signature != _TYPES[key]:
            raise FilterError(key)
        value = variant.value
        given.append((key, list(value) if key == "UUIDs" else value))
        if key == "UUIDs":
            try:
                uuids.update(uuid128(u) for u in value)
            except ValueError as exc:
                raise FilterError(key) from exc
        elif key == "RSSI":
            if not FILTER_RSSI_MIN <= value <= FILTER_RSSI_MAX:
                raise FilterError(key)
            rssi = value
        elif key == "Pathloss":
            if value > FILTER_PATHLOSS_MAX:
                raise FilterError(key)
            pathloss = value
        elif key == "Transport":
            if value not in TRANSPORTS:
                raise FilterError(key)
            transport = value
        elif key == "DuplicateData":
            duplicate = value
        elif key == "Discoverable":
            discoverable = value
        elif key == "Pattern":
            pattern = value
    if rssi is not None and pathloss is not None:
        raise FilterError("RSSI and Pathloss")
    return DiscoveryFilter(
        frozenset(uuids), rssi, pathloss, transport, duplicate, discoverable, pattern, tuple(given)
    )


@dataclass(frozen=True, slots=True)
class MergedFilter:
    """What bluetoothd asks the kernel for; equal values mean no scan restart."""

    filtered: bool
    transport: str
    rssi: int | None
    uuids: frozenset[str] | None  # None = all devices


def merge(
    filters: Iterable[DiscoveryFilter | None], adapter_transport: str, version: str
) -> MergedFilter:
    """``merge_discovery_filters``: a regular session clears the kernel filter entirely."""
    regular = False
    filtered = False
    transports: set[str] = set()
    rssi: int | None = None
    no_rssi = False
    uuids: set[str] = set()
    all_uuids = False
    for f in filters:
        if f is None or f.is_regular(adapter_transport, version):
            regular = True
            continue
        filtered = True
        transports.add(f.transport or adapter_transport)
        if f.rssi is None:
            no_rssi = True
        else:
            rssi = f.rssi if rssi is None else min(rssi, f.rssi)
        if f.uuids:
            uuids |= f.uuids
        else:
            all_uuids = True
    if not filtered:
        return MergedFilter(False, adapter_transport, None, None)
    if regular:
        return MergedFilter(True, adapter_transport, None, None)
    transport = "auto" if len(transports) > 1 or "auto" in transports else transports.pop()
    return MergedFilter(
        True,
        transport,
        None if no_rssi else rssi,
        None if all_uuids else frozenset(uuids),
    )


def filter_matches(f: DiscoveryFilter | None, report: Report) -> bool:
    """``is_filter_match`` for one session: UUIDs, then RSSI or pathloss."""
    if f is None:
        return True
    if f.uuids and not any(u in f.uuids for u in report.all_uuids()):
        return False
    if f.rssi is not None and report.rssi < f.rssi:
        return False
    if f.pathloss is not None:
        if report.tx_power is None or report.tx_power == TX_POWER_UNKNOWN:
            return False
        if report.tx_power - report.rssi > f.pathloss:
            return False
    return True


def is_discoverable(
    report: Report, filtered_discovery: bool, filters: Iterable[DiscoveryFilter | None]
) -> bool:
    """``device_is_discoverable``: flags gate unfiltered discovery; any Pattern gates all.

    The docs say a client without a Pattern turns pattern matching off; the
    code resets the result for every client that has one, so one client's
    Pattern hides non-matching devices from everybody.
    """
    if filtered_discovery:
        discoverable = True
    else:
        flags = report.flags or 0
        discoverable = bool(flags & (FLAG_LIMITED_DISCOVERABLE | FLAG_GENERAL_DISCOVERABLE))
    for f in filters:
        if f is None or not f.pattern:
            continue
        discoverable = False
        # 5.72 compares case-sensitively (strncmp), on the address or the name.
        if report.address.startswith(f.pattern):
            return True
        if report.name is not None and report.name.startswith(f.pattern):
            return True
    return discoverable
