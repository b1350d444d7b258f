"""Client filters and subscription options: parsed once, checked, then matched cheaply.

Pure logic. The D-Bus edge hands over the ``a{sv}`` dict as variant-like
objects (anything with ``signature`` and ``value``); every key, type, range
and size is checked here so that a bad filter is refused with an error that
names the key, before it can touch anything else.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import translate
from typing import Any, Final, Protocol

from ..const import (
    MAX_FILTER_LIST_ENTRIES,
    MAX_NAME_PATTERN_LENGTH,
    MAX_STRING_ARGUMENT,
    RSSI_MAX,
    RSSI_MIN,
)
from .record import Content, MalformedData, normalize_address, normalize_uuid


class Heard(Protocol):
    """What matching looks at: the service's cached Device, or a client's Advertisement."""

    @property
    def address(self) -> str: ...
    @property
    def rssi(self) -> int | None: ...
    @property
    def content(self) -> Content | None: ...


class VariantLike(Protocol):
    @property
    def signature(self) -> str: ...
    @property
    def value(self) -> Any: ...


class InvalidFilter(ValueError):
    """A filter key is unknown, of the wrong type or out of range (→ InvalidArgs)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key


class FilterTooLarge(ValueError):
    """A list has more entries than the service accepts (→ LimitsExceeded)."""

    def __init__(self, key: str, count: int) -> None:
        super().__init__(f"{key}: {count} entries, at most {MAX_FILTER_LIST_ENTRIES}")
        self.key = key


# Key → D-Bus signature, for the two places a filter dict is accepted.
MATCH_KEYS: Final[Mapping[str, str]] = {
    "Addresses": "as",
    "ManufacturerIds": "aq",
    "ServiceUuids": "as",
    "ServiceDataUuids": "as",
    "Names": "as",
    "MinRssi": "n",
}
SNAPSHOT_KEYS: Final[Mapping[str, str]] = {**MATCH_KEYS, "MaxAge": "d"}
SUBSCRIPTION_KEYS: Final[Mapping[str, str]] = {
    **MATCH_KEYS,
    "AllReports": "b",
    "RssiDelta": "n",
    "KeepAlive": "d",
    "Replay": "b",
    "Batch": "b",
    "BatchWindow": "d",
    "ChangedKeysOnly": "b",
}
# A glob with more wildcards than this is no device-name pattern; it bounds the
# regex work per report ("glob bombs").
MAX_GLOB_WILDCARDS: Final = 8
# An unknown key is named in the error this far: enough to recognise a typo,
# too little for a caller to flood the log with.
MAX_ECHOED_KEY: Final = 64
# KeepAlive and MaxAge beyond a day are a mistake, not a wish.
MAX_SECONDS: Final = 86_400.0
# A batch window trades latency for fewer signals; past a second a reading is
# staler than the broadcast's own interval, which costs nothing to get.
MAX_BATCH_WINDOW: Final = 1.0


@dataclass(slots=True, frozen=True)
class Filter:
    """What a listener wants: AND across keys, OR within one; None = no constraint."""

    addresses: frozenset[str] | None = None
    manufacturer_ids: frozenset[int] | None = None
    service_uuids: frozenset[str] | None = None
    service_data_uuids: frozenset[str] | None = None
    names: tuple[re.Pattern[str], ...] | None = None
    min_rssi: int | None = None

    @property
    def is_everything(self) -> bool:
        return (
            self.addresses is None
            and self.manufacturer_ids is None
            and self.service_uuids is None
            and self.service_data_uuids is None
            and self.names is None
            and self.min_rssi is None
        )

    def matches(self, device: Heard) -> bool:
        return self.matches_content(device) and self.rssi_ok(device)

    def rssi_ok(self, device: Heard) -> bool:
        min_rssi = self.min_rssi
        return min_rssi is None or (device.rssi is not None and device.rssi >= min_rssi)

    def matches_content(self, device: Heard) -> bool:
        """Everything but MinRssi: the verdict holds until the device's content changes."""
        if self.addresses is not None and device.address not in self.addresses:
            return False
        content = device.content
        if content is None:
            return False
        if self.manufacturer_ids is not None and self.manufacturer_ids.isdisjoint(
            content.manufacturer_data
        ):
            return False
        if self.service_uuids is not None and self.service_uuids.isdisjoint(content.service_uuids):
            return False
        if self.service_data_uuids is not None and self.service_data_uuids.isdisjoint(
            content.service_data
        ):
            return False
        if self.names is not None:
            name = content.name
            if name is None or not any(p.match(name) for p in self.names):
                return False
        return True


EVERYTHING: Final = Filter()


def same_verdicts(a: Content, b: Content) -> bool:
    """Whether every filter's ``matches_content`` says the same of ``a`` as of ``b``.

    It reads the name and which company ids, service UUIDs and service data
    UUIDs there are, never a payload: a sensor whose every advertisement is a
    new reading (a counter, Victron instant readout) keeps its verdicts.
    """
    return (
        a.name == b.name
        and a.service_uuids == b.service_uuids
        and a.manufacturer_data.keys() == b.manufacturer_data.keys()
        and a.service_data.keys() == b.service_data.keys()
    )


@dataclass(slots=True, frozen=True)
class SubscriptionOptions:
    """How a subscription wants to be told (docs/dbus-api.md, "When DeviceDiscovered is sent")."""

    all_reports: bool = False
    rssi_delta: int | None = None  # None: the service's broadcast default
    keep_alive: float | None = None  # None: the broadcast default; 0: never
    replay: bool = True
    batch: bool = False  # DevicesDiscovered, one per wake-up, instead of DeviceDiscovered each
    batch_window: float = 0.0  # seconds a batch gathers after its first item; 0: the wake-up
    changed_keys_only: bool = False  # items carry only what changed since the last one


@dataclass(slots=True, frozen=True)
class SnapshotQuery:
    filter: Filter
    max_age: float | None


def _check_list(key: str, value: Any) -> list[Any]:
    items = list(value)
    if len(items) > MAX_FILTER_LIST_ENTRIES:
        raise FilterTooLarge(key, len(items))
    return items


def _check_string(key: str, text: str) -> str:
    if len(text) > MAX_STRING_ARGUMENT:
        raise InvalidFilter(key, f"entry longer than {MAX_STRING_ARGUMENT} characters")
    return text


def name_pattern(glob: str) -> re.Pattern[str]:
    """A shell glob (``"SmartShunt*"``) as the regex ``Filter.names`` holds."""
    return re.compile(translate(glob))


def _glob(key: str, pattern: str) -> re.Pattern[str]:
    if len(pattern) > MAX_NAME_PATTERN_LENGTH:
        raise InvalidFilter(key, f"pattern longer than {MAX_NAME_PATTERN_LENGTH} characters")
    if pattern.count("*") + pattern.count("?") > MAX_GLOB_WILDCARDS:
        raise InvalidFilter(key, f"pattern has more than {MAX_GLOB_WILDCARDS} wildcards")
    return name_pattern(pattern)


def _seconds(key: str, value: float, allow_zero: bool) -> float:
    if math.isnan(value) or value < 0 or (value == 0 and not allow_zero) or value > MAX_SECONDS:
        raise InvalidFilter(key, f"{value!r} is out of range (0..{MAX_SECONDS:g} s)")
    return value


def _parse(
    raw: Mapping[str, VariantLike], allowed: Mapping[str, str]
) -> tuple[Filter, dict[str, Any]]:
    """Check keys and signatures; returns the match filter and the other keys' values."""
    match: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, variant in raw.items():
        if not isinstance(key, str) or key not in allowed:
            raise InvalidFilter(str(key)[:MAX_ECHOED_KEY], "unknown key")
        expected = allowed[key]
        if variant.signature != expected:
            raise InvalidFilter(key, f"must be of type '{expected}', not '{variant.signature}'")
        value = variant.value
        try:
            if key == "Addresses":
                match["addresses"] = frozenset(
                    normalize_address(_check_string(key, a)) for a in _check_list(key, value)
                )
            elif key == "ManufacturerIds":
                match["manufacturer_ids"] = frozenset(_check_list(key, value))
            elif key == "ServiceUuids":
                match["service_uuids"] = frozenset(
                    normalize_uuid(_check_string(key, u)) for u in _check_list(key, value)
                )
            elif key == "ServiceDataUuids":
                match["service_data_uuids"] = frozenset(
                    normalize_uuid(_check_string(key, u)) for u in _check_list(key, value)
                )
            elif key == "Names":
                match["names"] = tuple(
                    _glob(key, _check_string(key, n)) for n in _check_list(key, value)
                )
            elif key == "MinRssi":
                if not RSSI_MIN <= value <= RSSI_MAX:
                    raise InvalidFilter(key, f"{value} is out of range ({RSSI_MIN}..{RSSI_MAX})")
                match["min_rssi"] = value
            else:
                extra[key] = value
        except MalformedData as exc:
            raise InvalidFilter(key, str(exc)) from None
    return Filter(**match), extra


def parse_snapshot_query(raw: Mapping[str, VariantLike]) -> SnapshotQuery:
    flt, extra = _parse(raw, SNAPSHOT_KEYS)
    max_age = extra.get("MaxAge")
    if max_age is not None:
        max_age = _seconds("MaxAge", max_age, allow_zero=False)
    return SnapshotQuery(flt, max_age)


def parse_subscription(raw: Mapping[str, VariantLike]) -> tuple[Filter, SubscriptionOptions]:
    flt, extra = _parse(raw, SUBSCRIPTION_KEYS)
    rssi_delta = extra.get("RssiDelta")
    if rssi_delta is not None and not 0 <= rssi_delta <= RSSI_MAX - RSSI_MIN:
        raise InvalidFilter("RssiDelta", f"{rssi_delta} is out of range (0..{RSSI_MAX - RSSI_MIN})")
    keep_alive = extra.get("KeepAlive")
    if keep_alive is not None:
        keep_alive = _seconds("KeepAlive", keep_alive, allow_zero=True)
    batch = extra.get("Batch", False)
    window = extra.get("BatchWindow", 0.0)
    if math.isnan(window) or not 0 <= window <= MAX_BATCH_WINDOW:
        raise InvalidFilter(
            "BatchWindow", f"{window!r} is out of range (0..{MAX_BATCH_WINDOW:g} s)"
        )
    changed_keys_only = extra.get("ChangedKeysOnly", False)
    # Batch's companions mean nothing without it; their defaults are accepted alone.
    for key, set_ in (("BatchWindow", window > 0), ("ChangedKeysOnly", changed_keys_only)):
        if set_ and not batch:
            raise InvalidFilter(key, "needs Batch true")
    options = SubscriptionOptions(
        all_reports=extra.get("AllReports", False),
        rssi_delta=rssi_delta,
        keep_alive=keep_alive,
        replay=extra.get("Replay", True),
        batch=batch,
        batch_window=window,
        changed_keys_only=changed_keys_only,
    )
    return flt, options
