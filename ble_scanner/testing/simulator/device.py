"""Device1 state and how one report changes it (src/device.c of BlueZ 5.72)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from dbus_fast import Message, Variant

from ble_scanner.const import BLUEZ_DEVICE

from . import wire
from .const import ERR_INVALID_ARGS, ERR_NOT_SUPPORTED, RSSI_UNKNOWN, TX_POWER_UNKNOWN
from .names import ERROR_PROPERTY_READ_ONLY
from .report import Report

K = TypeVar("K", int, str)


def device_path(adapter_path: str, address: str) -> str:
    return f"{adapter_path}/dev_{address.upper().replace(':', '_')}"


class Device:
    """One ``org.bluez.Device1`` object. Optional properties are absent until known."""

    __slots__ = (
        "adapter_path",
        "address",
        "address_type",
        "alias",
        "blocked",
        "bonded",
        "connectable",
        "connected",
        "flags",
        "last_seen",
        "legacy_pairing",
        "manufacturer_data",
        "name",
        "notify",
        "paired",
        "path",
        "rssi",
        "service_data",
        "services_resolved",
        "temporary",
        "timer",
        "trusted",
        "tx_power",
        "uuids",
    )

    def __init__(
        self,
        adapter_path: str,
        address: str,
        address_type: str,
        notify: Callable[[Device, list[str]], None] | None = None,
    ) -> None:
        self.adapter_path = adapter_path
        self.notify = notify
        self.alias: str | None = None
        self.address = address
        self.address_type = address_type
        self.path = device_path(adapter_path, address)
        self.name: str | None = None
        self.rssi = RSSI_UNKNOWN
        self.tx_power = TX_POWER_UNKNOWN
        self.flags: int | None = None
        self.uuids: list[str] = []
        self.manufacturer_data: dict[int, bytes] = {}
        self.service_data: dict[str, bytes] = {}
        self.connectable = True
        self.temporary = True
        self.paired = self.bonded = self.trusted = self.blocked = False
        self.connected = self.services_resolved = self.legacy_pairing = False
        self.last_seen = 0.0
        self.timer: asyncio.TimerHandle | None = None

    # --- reading ------------------------------------------------------------

    def prop(self, name: str) -> Variant | None:
        """The property as BlueZ would return it, None when ``exists()`` is false."""
        if name == "Address":
            return Variant("s", self.address)
        if name == "AddressType":
            return Variant("s", self.address_type)
        if name == "Name":
            return None if self.name is None else Variant("s", self.name)
        if name == "Alias":
            return Variant(
                "s", self.name if self.name is not None else self.address.replace(":", "-")
            )
        if name == "RSSI":
            return None if self.rssi == RSSI_UNKNOWN else Variant("n", self.rssi)
        if name == "TxPower":
            return None if self.tx_power == TX_POWER_UNKNOWN else Variant("n", self.tx_power)
        if name == "ManufacturerData":
            if not self.manufacturer_data:
                return None
            return Variant(
                "a{qv}", {k: Variant("ay", v) for k, v in self.manufacturer_data.items()}
            )
        if name == "ServiceData":
            if not self.service_data:
                return None
            return Variant("a{sv}", {k: Variant("ay", v) for k, v in self.service_data.items()})
        if name == "UUIDs":
            return Variant("as", list(self.uuids))
        if name == "AdvertisingFlags":
            return None if self.flags is None else Variant("ay", bytes([self.flags]))
        if name == "Adapter":
            return Variant("o", self.adapter_path)
        if name in _BOOLEANS:
            return Variant("b", getattr(self, _BOOLEANS[name]))
        return None

    def properties(self) -> dict[str, Variant]:
        """GetAll: every property that exists, in BlueZ's table order."""
        out: dict[str, Variant] = {}
        for name in PROPERTY_ORDER:
            value = self.prop(name)
            if value is not None:
                out[name] = value
        return out

    # --- the D-Bus face (objects.SimObject) -------------------------------------

    def interface_names(self) -> list[str]:
        return [BLUEZ_DEVICE]

    def get_all(self, interface: str) -> dict[str, Variant] | None:
        return self.properties() if interface == BLUEZ_DEVICE else None

    def get(self, interface: str, name: str) -> Variant | None:
        return self.prop(name) if interface == BLUEZ_DEVICE else None

    def set_property(
        self, interface: str, name: str, value: Variant, msg: Message
    ) -> Message | bool | None:
        if name not in WRITABLE:
            if name in PROPERTY_ORDER:
                return Message.new_error(
                    msg, ERROR_PROPERTY_READ_ONLY, f"Property '{name}' is not writable"
                )
            return None
        if value.signature != WRITABLE[name]:
            return wire.error(msg, ERR_INVALID_ARGS)
        changed: list[str] = []
        if name == "Alias":
            if value.value != self.alias:
                self.alias = value.value
                changed.append("Alias")
        elif name in ("Trusted", "Blocked"):
            attr = name.lower()
            if getattr(self, attr) != value.value:
                setattr(self, attr, value.value)
                changed.append(name)
            # Trusting a device makes it permanent (btd_device_set_temporary).
            if name == "Trusted" and value.value:
                self.temporary = False
        if changed and self.notify is not None:
            self.notify(self, changed)
        return Message.new_method_return(msg)

    def call(self, interface: str, member: str, msg: Message) -> Message | bool | None:
        if member == "Disconnect" and msg.signature == "":
            return Message.new_method_return(msg)
        if member in ("Connect", "Pair", "CancelPairing") and msg.signature == "":
            # The simulator has no radio link to connect over.
            return wire.error(msg, ERR_NOT_SUPPORTED)
        if member in ("ConnectProfile", "DisconnectProfile") and msg.signature == "s":
            return wire.error(msg, ERR_NOT_SUPPORTED)
        return None

    # --- a report -----------------------------------------------------------

    def apply(
        self, report: Report, duplicate: bool, rssi_delta: int, service_data_uuids: bool = True
    ) -> list[str]:
        """Fold one report in; return the names BlueZ would emit PropertiesChanged for.

        ``service_data_uuids``: whether the UUIDs of service data join ``UUIDs``
        (not in 5.66; see ``const.SERVICE_DATA_UUIDS_NOT_IN_UUIDS``).
        """
        changed: list[str] = []
        self.connectable = report.connectable
        if report.address_type != self.address_type:
            self.address_type = report.address_type
            changed.append("AddressType")
        if report.name is not None and report.name != self.name:
            self.name = report.name
            changed.append("Name")
            changed.append("Alias")
        if self._set_rssi(report.rssi, rssi_delta):
            changed.append("RSSI")
        if report.tx_power is not None and report.tx_power != self.tx_power:
            self.tx_power = report.tx_power
            changed.append("TxPower")
        if report.flags is not None and report.flags != self.flags:
            self.flags = report.flags
            changed.append("AdvertisingFlags")
        uuids = report.all_uuids() if service_data_uuids else report.service_uuids
        if uuids:
            known = self.uuids
            added = False
            for uuid in uuids:
                if uuid not in known:
                    known.append(uuid)
                    added = True
            if added:
                changed.append("UUIDs")
        if report.manufacturer_data and _add_data(
            self.manufacturer_data, report.manufacturer_data, duplicate
        ):
            changed.append("ManufacturerData")
        if report.service_data and _add_data(self.service_data, report.service_data, duplicate):
            changed.append("ServiceData")
        return changed

    def _set_rssi(self, rssi: int, delta_threshold: int) -> bool:
        """``device_set_rssi_with_delta`` (src/device.c): compares with the last *emitted* value.

        ``delta_threshold`` 0 (filtered discovery) emits on every report, even
        unchanged: ``delta < 0`` is never true. RSSI 0 is "unknown" (no
        property); 127 from a controller without RSSI is a value like any other.
        """
        if rssi == RSSI_UNKNOWN or self.rssi == RSSI_UNKNOWN:
            if self.rssi == rssi:
                return False
            self.rssi = rssi
            return True
        if abs(self.rssi - rssi) < delta_threshold:
            return False
        self.rssi = rssi
        return True

    def invalidate_proximity(self) -> list[str]:
        """End of discovery: RSSI 0 and TxPower 127, so both drop out (``discovery_cleanup``)."""
        changed: list[str] = []
        if self.rssi != RSSI_UNKNOWN:
            self.rssi = RSSI_UNKNOWN
            changed.append("RSSI")
        if self.tx_power != TX_POWER_UNKNOWN:
            self.tx_power = TX_POWER_UNKNOWN
            changed.append("TxPower")
        return changed


def _add_data(store: dict[K, bytes], new: dict[K, bytes], duplicate: bool) -> bool:
    """``bt_ad_add_*_data``: per key replace; DuplicateData clears first, so it always emits."""
    if duplicate:
        store.clear()
        store.update(new)
        return True
    changed = False
    for key, data in new.items():
        old = store.get(key)
        if old is None or old != data:
            store[key] = data
            changed = True
    return changed


_BOOLEANS = {
    "Paired": "paired",
    "Bonded": "bonded",
    "Trusted": "trusted",
    "Blocked": "blocked",
    "LegacyPairing": "legacy_pairing",
    "Connected": "connected",
    "ServicesResolved": "services_resolved",
}

# device_properties[] order in src/device.c (the subset the simulator models).
PROPERTY_ORDER = (
    "Address",
    "AddressType",
    "Name",
    "Alias",
    "Paired",
    "Bonded",
    "Trusted",
    "Blocked",
    "LegacyPairing",
    "RSSI",
    "Connected",
    "UUIDs",
    "Adapter",
    "ManufacturerData",
    "ServiceData",
    "TxPower",
    "ServicesResolved",
    "AdvertisingFlags",
)
WRITABLE = {"Trusted": "b", "Blocked": "b", "Alias": "s"}
