"""Discovery filters: parsing SetDiscoveryFilter, merging sessions, matching reports.

Follows src/adapter.c (``parse_discovery_filter_dict``, ``merge_discovery_filters``,
``discovery_filter_to_mgmt_cp``, ``is_filter_match``, ``device_is_discoverable``)
of BlueZ 5.66, 5.72, 5.82 and 5.87, including where the code disagrees with the
documentation.

Whether discovery is *filtered* decides more than which devices pass: BlueZ
sets ``adapter->filtered_discovery`` when the kernel has started a discovery
with a ``current_discovery_filter`` (``start_discovery_complete``), and then
every report calls ``device_set_rssi_with_delta(dev, rssi, 0)`` (an ``RSSI``
PropertiesChanged per report, even unchanged) instead of ``device_set_rssi``
and its 8 dBm threshold (``btd_adapter_device_found``); it also shows
advertisers without discoverable flags. ``merge`` computes that flag exactly
as ``discovery_filter_to_mgmt_cp`` leaves ``current_discovery_filter`` NULL
or not.
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
    transport: str | None  # None: not given (``auto`` is the same: the adapter's scan type)
    duplicate_data: bool
    discoverable: bool
    pattern: str | None  # None: not given; "" is a Pattern (it matches everything)
    given: tuple[tuple[str, Any], ...]

    def scan_type(self, adapter_transport: str) -> str:
        """``item->type``: ``parse_discovery_filter_dict`` starts from ``get_scan_type``
        and ``parse_transport`` changes it only for "le" or "bredr"."""
        return self.transport if self.transport in ("le", "bredr") else adapter_transport

    def is_regular(self, adapter_transport: str, version: str) -> bool:
        """True if it only repeats the defaults, so it counts as no filter at all.

        5.67+ (de8e7cf, "Detect empty filter with only discoverable") in
        ``merge_discovery_filters``: ``item->uuids == NULL``, no RSSI, no
        Pathloss, ``item->type == get_scan_type(adapter)``, ``duplicate ==
        false``, ``pattern == NULL``. Discoverable and (head) AutoConnect do not
        count. An empty UUIDs list leaves ``uuids`` NULL; ``Pattern: ""`` does
        not leave ``pattern`` NULL. 5.66 has no such check: there every
        filter, even ``{Transport: le}`` on an LE-only adapter, is a filtered
        session.
        """
        if version == "5.66":
            return False
        if self.uuids or self.rssi is not None or self.pathloss is not None:
            return False
        if self.duplicate_data or self.pattern is not None:
            return False
        return self.scan_type(adapter_transport) == adapter_transport

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
    pattern: str | None = None
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
    """What bluetoothd asks the kernel for; equal values mean no scan restart.

    ``filtered`` is ``current_discovery_filter != NULL``: true as soon as one
    session's filter is not regular, even when a regular session has cleared
    the kernel filter (``discovery_filter_to_mgmt_cp`` returns a filter with
    every device in it, not NULL).
    """

    filtered: bool
    transport: str
    rssi: int | None
    uuids: frozenset[str] | None  # None = all devices


# SCAN_TYPE_BREDR (1 << BDADDR_BREDR) and SCAN_TYPE_LE, OR-ed by the merge;
# "auto" is both, the scan type of a dual-mode adapter (get_scan_type).
_SCAN_TYPE_BITS = {"bredr": 0x01, "le": 0x06, "auto": 0x07}
_SCAN_TYPES = {bits: name for name, bits in _SCAN_TYPE_BITS.items()}


def merge(
    filters: Iterable[DiscoveryFilter | None], adapter_transport: str, version: str
) -> MergedFilter:
    """``merge_discovery_filters`` + ``discovery_filter_to_mgmt_cp``.

    Only regular sessions (no filter, or one that repeats the defaults):
    ``merge_discovery_filters`` returns 1 and the kernel filter is NULL, so
    discovery is unfiltered. Regular and filtered sessions together: the
    kernel filter is cleared (the adapter's scan type, no RSSI, no UUIDs:
    "clear whole filter to report all devices") but still exists, so
    discovery stays *filtered* for everybody.
    """
    regular = False
    filtered = False
    scan_type = 0
    rssi: int | None = None
    no_rssi = False
    uuids: set[str] = set()
    all_uuids = False
    for f in filters:
        if f is None or f.is_regular(adapter_transport, version):
            regular = True
            continue
        filtered = True
        scan_type |= _SCAN_TYPE_BITS[f.scan_type(adapter_transport)]
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
    return MergedFilter(
        True,
        _SCAN_TYPES[scan_type],
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
    Pattern hides non-matching devices from everybody. An empty Pattern
    (``pattern_len == 0``) matches every device.
    """
    if filtered_discovery:
        discoverable = True
    else:
        flags = report.flags or 0
        discoverable = bool(flags & (FLAG_LIMITED_DISCOVERABLE | FLAG_GENERAL_DISCOVERABLE))
    for f in filters:
        if f is None or f.pattern is None:
            continue
        discoverable = False
        # 5.72 compares case-sensitively (strncmp), on the address or the name.
        if report.address.startswith(f.pattern):
            return True
        if report.name is not None and report.name.startswith(f.pattern):
            return True
    return discoverable
