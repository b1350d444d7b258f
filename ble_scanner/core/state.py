"""Status snapshots of the service, for the Venus tree, GetStatus and the CLI. Pure data."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class AdapterStatus:
    """One adapter as a person would want to see it."""

    name: str  # hci0
    address: str
    powered: bool
    discovering: bool  # BlueZ's flag: someone scans (maybe not us)
    session: bool  # we hold a discovery session
    state: str  # in words: scanning, powered off, blocked by another scanner ...
    ingest: str = "dbus"  # where its reports come from: "mgmt" (the kernel's channel) or "dbus"
    listening: bool = False  # our session or monitor hears advertisements now (discovery.listening)


@dataclass(slots=True, frozen=True)
class ServiceStatus:
    version: str
    bluez_present: bool
    adapters: tuple[AdapterStatus, ...]
    devices: int
    subscriptions: int
    reports: int
    ignored: int
    malformed: int
    lost_timeout: float = 0.0
    shed: int = 0  # reports not delivered because the bus was not keeping up
    # Per subscription that shed any (signals or batched items): (path, count).
    subscriptions_shed: tuple[tuple[str, int], ...] = ()
    load_shedding: int = 0  # loadcap.ShedStep: 0 off .. 4 AllReports refused
    leases: int = 0
    users: int = 0  # Unix users holding subscriptions or leases

    @property
    def scanning(self) -> bool:
        return any(a.session for a in self.adapters)
