"""The Scanner1 contract seen from a client: records, filters, and what was delivered.

Pure logic shared by both client transports: ``ble_scanner.client`` (asyncio,
dbus-fast) and ``ble_scanner.client.glib`` (GLib, dbus-python). It imports no
D-Bus library, so either transport can use it on a system that has only its
own library installed; of the service it uses only the pure core's filter
(``ble_scanner.core.filters.Filter``), so the client matches exactly as the service
does. Values arrive here already unwrapped from their variants (plain
``int``, ``str``, ``bytes``, ``dict``...).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from ..const import ERROR_INVALID_ARGS, MAX_COMPANY_ID, MAX_FILTER_LIST_ENTRIES, RSSI_MAX, RSSI_MIN
from ..core.filters import Filter, name_pattern
from ..core.identifiers import normalize_address, normalize_uuid
from ..core.record import Content

_EMPTY: Final[Mapping[Any, bytes]] = MappingProxyType({})
_EMPTY_SOURCES: Final[Mapping[str, int]] = MappingProxyType({})


@dataclass(slots=True, frozen=True)
class Advertisement:
    """One device's latest advertisement, as the service reports it (docs/dbus-api.md).

    Payloads are the raw bytes from the air; the mappings are read-only.
    ``interval`` is the advertising interval the service learned (seconds;
    None until learned); ``restored`` is True for a device the service
    remembered across its restart and has not heard since. ``sources`` maps
    each adapter that hears the device to its latest RSSI when more than one
    does (empty otherwise: ``adapter`` alone hears it); ``adapter``, ``path``
    and ``rssi`` are the one source the service chose.
    """

    address: str
    address_type: str
    adapter: str
    path: str
    rssi: int | None
    name: str | None
    tx_power: int | None
    manufacturer_data: Mapping[int, bytes]
    service_data: Mapping[str, bytes]
    service_uuids: tuple[str, ...]
    first_seen: float
    last_seen: float
    interval: float | None = None
    restored: bool = False
    # A factory: Python 3.11 counts a mappingproxy as a mutable default.
    sources: Mapping[str, int] = field(default_factory=lambda: _EMPTY_SOURCES)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Advertisement:
        """Build from an ``a{sv}`` record whose values are already unwrapped.

        Unknown keys are ignored (the contract lets the service add keys);
        a missing mandatory key or a wrong type raises ValueError.
        """
        if "Address" not in record:
            raise ValueError("malformed advertisement record: KeyError('Address')")
        fields = {**FIELD_DEFAULTS}
        apply_keys(fields, record)
        return cls(**fields) if cls is not Advertisement else advertisement_of(fields)

    @property
    def content(self) -> Content:
        """What the device advertises, in the core's terms (for ``Filter``)."""
        return Content(
            self.name, self.tx_power, self.manufacturer_data, self.service_data, self.service_uuids
        )

    @property
    def manufacturer_id(self) -> int | None:
        """The first company id in the manufacturer data, as HA's ``manufacturer_id``."""
        return next(iter(self.manufacturer_data), None)

    def same_report(self, other: Advertisement) -> bool:
        """True when ``other`` tells a listener nothing new: same content and RSSI."""
        return (
            self.rssi == other.rssi
            and self.name == other.name
            and self.tx_power == other.tx_power
            and self.manufacturer_data == other.manufacturer_data
            and self.service_data == other.service_data
            and self.service_uuids == other.service_uuids
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: payloads as hex strings, company ids as decimal string keys."""
        return {
            "address": self.address,
            "address_type": self.address_type,
            "adapter": self.adapter,
            "path": self.path,
            "rssi": self.rssi,
            "name": self.name,
            "tx_power": self.tx_power,
            "manufacturer_data": {str(k): v.hex() for k, v in self.manufacturer_data.items()},
            "service_data": {k: v.hex() for k, v in self.service_data.items()},
            "service_uuids": list(self.service_uuids),
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "interval": self.interval,
            "restored": self.restored,
            "sources": dict(self.sources),
        }


def _sources(value: Any) -> Mapping[str, int]:
    if not value:
        return _EMPTY_SOURCES
    return MappingProxyType({str(k): int(v) for k, v in value.items()})


@dataclass(slots=True, frozen=True)
class DeviceLost:
    """The device has not been heard for its lost time (learned interval, or the lost timeout)."""

    address: str

    def as_dict(self) -> dict[str, Any]:
        return {"address": self.address}


Event = Advertisement | DeviceLost


def _mapping(convert_key: Callable[[Any], Any]) -> Callable[[Any], Mapping[Any, bytes]]:
    def convert(value: Any) -> Mapping[Any, bytes]:
        if not value:
            return _EMPTY
        return MappingProxyType({convert_key(k): bytes(v) for k, v in value.items()})

    return convert


def _str_tuple(value: Any) -> tuple[str, ...]:
    return tuple(str(u) for u in value)


def _optional(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """None stays None (a record built in Python may say so; D-Bus has no None)."""
    return lambda value: None if value is None else convert(value)


# Record key → (Advertisement field, conversion of the unwrapped value). The
# conversions make plain, immutable values of whatever the D-Bus library gave
# (dbus-python's ``dbus.UInt16`` and ``dbus.ByteArray`` included). Plain dicts,
# typed read-only: looked up for every key of every item.
RECORD_FIELDS: Final[Mapping[str, tuple[str, Callable[[Any], Any]]]] = {
    "Address": ("address", str),
    "AddressType": ("address_type", str),
    "Adapter": ("adapter", str),
    "Path": ("path", str),
    "Rssi": ("rssi", _optional(int)),
    "Name": ("name", _optional(str)),
    "TxPower": ("tx_power", _optional(int)),
    "ManufacturerData": ("manufacturer_data", _mapping(int)),
    "ServiceData": ("service_data", _mapping(str)),
    "ServiceUuids": ("service_uuids", _str_tuple),
    "FirstSeen": ("first_seen", float),
    "LastSeen": ("last_seen", float),
    "Interval": ("interval", _optional(float)),
    "Restored": ("restored", bool),
    "Sources": ("sources", _sources),
}
# Each field's value when its key is absent from a record ("address" has none).
FIELD_DEFAULTS: Final[Mapping[str, Any]] = {
    "address_type": "public",
    "adapter": "",
    "path": "",
    "rssi": None,
    "name": None,
    "tx_power": None,
    "manufacturer_data": _EMPTY,
    "service_data": _EMPTY,
    "service_uuids": (),
    "first_seen": 0.0,
    "last_seen": 0.0,
    "interval": None,
    "restored": False,
    "sources": _EMPTY_SOURCES,
}


# Each field's slot, set directly by ``advertisement_of``: the frozen dataclass's
# own __init__ goes through object.__setattr__ per field, the larger part of
# rebuilding a record from a changed-keys item.
_SLOTS: Final = tuple(
    (f.name, Advertisement.__dict__[f.name].__set__) for f in dataclasses.fields(Advertisement)
)
_new_object = object.__new__


def advertisement_of(fields: Mapping[str, Any]) -> Advertisement:
    """``Advertisement(**fields)`` with every field given, at about two thirds of the cost.

    The same frozen object (the class has no __post_init__);
    ``tests/client/test_merge.py`` holds it equal to the constructor's.
    """
    adv = _new_object(Advertisement)
    for name, set_slot in _SLOTS:
        set_slot(adv, fields[name])
    return adv


def apply_keys(fields: dict[str, Any], record: Mapping[str, Any]) -> None:
    """Set the Advertisement ``fields`` that ``record``'s known keys carry, converted.

    ValueError if a value is of the wrong type; unknown keys are ignored.
    """
    try:
        for key, value in record.items():
            known = RECORD_FIELDS.get(key)
            if known is not None:
                fields[known[0]] = known[1](value)
    except (TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"malformed advertisement record: {exc!r}") from None


# What the shipped clients add to every Subscribe (docs/dbus-api.md): several
# reports per signal (``DevicesDiscovered``), each after a device's first as only
# the keys that changed; ``merge.RecordMerger`` rebuilds the full records.
BATCH_OPTIONS: Final[Mapping[str, tuple[str, Any]]] = MappingProxyType(
    {"Batch": ("b", True), "ChangedKeysOnly": ("b", True)}
)


def refuses_batch(error_name: str, text: str) -> bool:
    """True if a Subscribe error is a service's refusal of the batch options.

    A service older than ``Batch`` answers InvalidArgs naming the unknown key
    (``ble_scanner/core/filters.py``: "Batch: unknown key").
    """
    return error_name == ERROR_INVALID_ARGS and any(key in text for key in BATCH_OPTIONS)


def _listed(singular: Any, plural: Iterable[Any] | None) -> list[Any] | None:
    if singular is None and plural is None:
        return None
    if isinstance(plural, str | bytes):
        raise TypeError("pass a list for the plural form (e.g. addresses=[...])")
    items = ([] if singular is None else [singular]) + list(plural or ())
    if len(items) > MAX_FILTER_LIST_ENTRIES:
        raise ValueError(f"at most {MAX_FILTER_LIST_ENTRIES} entries per filter key")
    return items


@dataclass(slots=True, frozen=True)
class ScanFilter:
    """What a caller wants, in HA's matcher vocabulary; AND across keys, OR within one.

    Build it with :func:`make_filter`. ``to_dbus`` gives the ``a{sv}`` keys as
    ``{key: (signature, value)}`` for whichever D-Bus library wraps them.
    """

    addresses: tuple[str, ...] | None = None
    manufacturer_ids: tuple[int, ...] | None = None
    service_uuids: tuple[str, ...] | None = None
    service_data_uuids: tuple[str, ...] | None = None
    local_names: tuple[str, ...] | None = None
    min_rssi: int | None = None
    max_age: float | None = None
    all_reports: bool | None = None
    rssi_delta: int | None = None
    keep_alive: float | None = None
    _match: Filter = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The service's own filter, so the client's verdicts are the service's.
        match = Filter(
            addresses=_set(self.addresses),
            manufacturer_ids=_set(self.manufacturer_ids),
            service_uuids=_set(self.service_uuids),
            service_data_uuids=_set(self.service_data_uuids),
            names=(
                None
                if self.local_names is None
                else tuple(name_pattern(n) for n in self.local_names)
            ),
            min_rssi=self.min_rssi,
        )
        object.__setattr__(self, "_match", match)

    def to_dbus(self, subscription: bool) -> dict[str, tuple[str, Any]]:
        out: dict[str, tuple[str, Any]] = {}
        if self.addresses is not None:
            out["Addresses"] = ("as", list(self.addresses))
        if self.manufacturer_ids is not None:
            out["ManufacturerIds"] = ("aq", list(self.manufacturer_ids))
        if self.service_uuids is not None:
            out["ServiceUuids"] = ("as", list(self.service_uuids))
        if self.service_data_uuids is not None:
            out["ServiceDataUuids"] = ("as", list(self.service_data_uuids))
        if self.local_names is not None:
            out["Names"] = ("as", list(self.local_names))
        if self.min_rssi is not None:
            out["MinRssi"] = ("n", self.min_rssi)
        if subscription:
            if self.all_reports is not None:
                out["AllReports"] = ("b", self.all_reports)
            if self.rssi_delta is not None:
                out["RssiDelta"] = ("n", self.rssi_delta)
            if self.keep_alive is not None:
                out["KeepAlive"] = ("d", float(self.keep_alive))
        elif self.max_age is not None:
            out["MaxAge"] = ("d", float(self.max_age))
        return out

    def matches(self, adv: Advertisement) -> bool:
        """The service's matching rule, for when the client filters by itself (BlueZ fallback)."""
        return self._match.matches(adv)


def _set(items: tuple[Any, ...] | None) -> frozenset[Any] | None:
    return None if items is None else frozenset(items)


def make_filter(
    *,
    address: str | None = None,
    addresses: Iterable[str] | None = None,
    manufacturer_id: int | None = None,
    manufacturer_ids: Iterable[int] | None = None,
    service_uuid: str | None = None,
    service_uuids: Iterable[str] | None = None,
    service_data_uuid: str | None = None,
    service_data_uuids: Iterable[str] | None = None,
    local_name: str | None = None,
    local_names: Iterable[str] | None = None,
    min_rssi: int | None = None,
    max_age: float | None = None,
    all_reports: bool | None = None,
    rssi_delta: int | None = None,
    keep_alive: float | None = None,
) -> ScanFilter:
    """Check and normalise filter keyword arguments; singular and plural forms combine.

    ``local_name`` is a shell glob (``"SmartShunt*"``). Raises TypeError or
    ValueError naming the argument, before anything is sent.
    """
    addrs = _listed(address, addresses)
    ids = _listed(manufacturer_id, manufacturer_ids)
    uuids = _listed(service_uuid, service_uuids)
    sd_uuids = _listed(service_data_uuid, service_data_uuids)
    names = _listed(local_name, local_names)
    for company in ids or ():
        if (
            not isinstance(company, int)
            or isinstance(company, bool)
            or not 0 <= company <= MAX_COMPANY_ID
        ):
            raise ValueError(f"manufacturer_id: {company!r} is not a company id (0..0xFFFF)")
    for name in names or ():
        if not isinstance(name, str):
            raise TypeError(f"local_name: {name!r} is not a string")
    if min_rssi is not None and not RSSI_MIN <= min_rssi <= RSSI_MAX:
        raise ValueError(f"min_rssi: {min_rssi} is out of range ({RSSI_MIN}..{RSSI_MAX})")
    if rssi_delta is not None and not 0 <= rssi_delta <= RSSI_MAX - RSSI_MIN:
        raise ValueError(f"rssi_delta: {rssi_delta} is out of range (0..{RSSI_MAX - RSSI_MIN})")
    if keep_alive is not None and not keep_alive >= 0:
        raise ValueError(f"keep_alive: {keep_alive} must be >= 0 (0 = never)")
    if max_age is not None and not max_age > 0:
        raise ValueError(f"max_age: {max_age} must be > 0")
    return ScanFilter(
        addresses=None if addrs is None else tuple(normalize_address(a) for a in addrs),
        manufacturer_ids=None if ids is None else tuple(ids),
        service_uuids=None if uuids is None else tuple(normalize_uuid(u) for u in uuids),
        service_data_uuids=(
            None if sd_uuids is None else tuple(normalize_uuid(u) for u in sd_uuids)
        ),
        local_names=None if names is None else tuple(names),
        min_rssi=min_rssi,
        max_age=max_age,
        all_reports=all_reports,
        rssi_delta=rssi_delta,
        keep_alive=keep_alive,
    )


class DeliveryLedger:
    """What one subscription has handed to its user, so a change of source adds nothing new.

    When the service restarts (or the client switches between the service and
    BlueZ) the new source replays what it knows, and goes on to report devices
    it had not heard yet. Between ``begin_resync`` and ``end_resync``, and for
    the first report of each device the user knew but the replay lacked
    ("unconfirmed"), a record identical to the one last delivered (content and
    RSSI) is swallowed. ``end_resync`` returns the unconfirmed devices so that
    the caller can time them out: a freshly started service that has not heard
    a device *yet* does not know it is gone.
    """

    __slots__ = ("_delivered", "_resync", "_unconfirmed")

    def __init__(self) -> None:
        self._delivered: dict[str, Advertisement] = {}
        self._resync: set[str] | None = None
        self._unconfirmed: set[str] = set()

    def __len__(self) -> int:
        return len(self._delivered)

    def __contains__(self, address: object) -> bool:
        return address in self._delivered

    def discovered(self, adv: Advertisement) -> bool:
        """Record ``adv``; True if the user should get it."""
        address = adv.address
        last = self._delivered.get(address)
        # Stored even when swallowed: ``expire`` goes by identity, and the
        # device has been heard again.
        self._delivered[address] = adv
        if self._resync is not None:
            self._resync.add(address)
        elif address in self._unconfirmed:
            self._unconfirmed.discard(address)
        else:
            return True
        return last is None or not last.same_report(adv)

    def lost(self, address: str) -> bool:
        """Forget ``address``; True if the user knew it (and so should hear it is lost)."""
        self._unconfirmed.discard(address)
        return self._delivered.pop(address, None) is not None

    def begin_resync(self) -> None:
        """A new source is about to replay what it knows."""
        self._resync = set()

    def end_resync(self) -> list[Advertisement]:
        """The replay is over; return the delivered devices it did not contain."""
        replayed, self._resync = self._resync or set(), None
        missing = [adv for address, adv in self._delivered.items() if address not in replayed]
        self._unconfirmed = {adv.address for adv in missing}
        return missing

    def source_lost(self) -> list[Advertisement]:
        """The source went away: every known device is unconfirmed until heard again."""
        self._unconfirmed = set(self._delivered)
        return list(self._delivered.values())

    def expire(self, adv: Advertisement) -> bool:
        """Forget the device if ``adv`` is still the last record for it; True if forgotten."""
        if self._delivered.get(adv.address) is adv:
            del self._delivered[adv.address]
            self._unconfirmed.discard(adv.address)
            return True
        return False
