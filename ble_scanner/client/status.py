"""The service's ``GetStatus`` answer as a typed record."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any


@dataclass(slots=True, frozen=True)
class AdapterState:
    """One adapter as the service sees it."""

    name: str
    address: str
    powered: bool
    discovering: bool  # BlueZ's flag: someone scans, maybe not the service
    session: bool  # the service holds a discovery session on it
    state: str  # in words: scanning, powered off, blocked by another scanner...
    ingest: str = ""  # where the service's reports come from: "mgmt" or "dbus" ("" before 15)
    # The service hears the adapter's advertisements now (None: a service before Listening).
    listening: bool | None = None


@dataclass(slots=True, frozen=True)
class ScannerStatus:
    version: str
    bluez_present: bool
    scanning: bool
    adapters: Mapping[str, AdapterState]
    devices: int
    subscriptions: int
    reports: int
    raw: Mapping[str, Any]  # every key, including ones this client does not know
    # The service's load-shedding step: 0 off, 1 coalescing, 2 + broadcast RssiDelta
    # raised, 3 + no keep-alives, 4 + new AllReports subscriptions refused.
    load_shedding: int = 0

    @classmethod
    def from_dbus(cls, raw: Mapping[str, Any]) -> ScannerStatus:
        """From the unwrapped ``a{sv}``; nested adapter dicts may still hold variants."""

        def plain(value: Any) -> Any:
            return getattr(value, "value", value)

        plain_adapters = {
            str(name): {str(k): plain(v) for k, v in props.items()}
            for name, props in dict(raw.get("Adapters", {})).items()
        }
        adapters = {
            name: AdapterState(
                name=name,
                address=str(props.get("Address", "")),
                powered=bool(props.get("Powered", False)),
                discovering=bool(props.get("Discovering", False)),
                session=bool(props.get("Session", False)),
                state=str(props.get("State", "")),
                ingest=str(props.get("Ingest", "")),
                listening=None if "Listening" not in props else bool(props["Listening"]),
            )
            for name, props in plain_adapters.items()
        }
        return cls(
            version=str(raw.get("Version", "")),
            bluez_present=bool(raw.get("BluezPresent", False)),
            scanning=bool(raw.get("Scanning", False)),
            adapters=MappingProxyType(adapters),
            devices=int(raw.get("Devices", 0)),
            subscriptions=int(raw.get("Subscriptions", 0)),
            reports=int(raw.get("Reports", 0)),
            load_shedding=int(raw.get("LoadShedding", 0)),
            raw=MappingProxyType({**raw, "Adapters": plain_adapters}),
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with the service's own key names."""
        return dict(self.raw)
