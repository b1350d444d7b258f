"""The kernel under bluetoothd: what its management channel hands every control socket,
and discovery that outlives a crashed bluetoothd.

Written from the kernel's ``net/bluetooth/mgmt.c`` (``mgmt_device_found``,
``mgmt_adv_monitor_device_found``, ``mgmt_device_connected``,
``mgmt_device_disconnected``) and ``net/bluetooth/hci_event.c``'s
``is_filter_match``. ``mgmt.py`` encodes and delivers the frames; this module
decides which reports and link changes become frames, and when the radio is
on at all. ``simulator.BluezSimulator`` owns one ``Kernel``.
"""

from __future__ import annotations

import asyncio

from . import mgmt
from .adapter import Adapter
from .device import Device
from .report import AD_NAME_COMPLETE, Report


def filter_match(rssi: int | None, uuids: frozenset[str] | None, report: Report) -> bool:
    """The kernel's ``is_filter_match`` for Start Service Discovery: an RSSI
    threshold drops weaker and unknown RSSI; UUIDs are looked for in the UUID
    lists only (not in service data)."""
    if rssi is not None and (report.rssi is None or report.rssi < rssi):
        return False
    return uuids is None or any(u in uuids for u in report.service_uuids)


class Kernel:
    """The management channel's events, and scans a crashed bluetoothd left running."""

    def __init__(self, channel: mgmt.MgmtChannel | None) -> None:
        self.channel = channel
        self._orphaned: dict[str, float] = {}  # adapter → loop time its orphan scan ends
        self._indexes: dict[str, int | None] = {}
        # The reason a Device Disconnected carries (``set_connected``'s ``reason``).
        self.link_reason = mgmt.DISCONNECT_LOCAL_HOST

    def orphan_scans(self, adapters: dict[str, Adapter], seconds: float) -> None:
        """bluetoothd crashed: each discovering adapter's scan runs on for ``seconds``."""
        ends = asyncio.get_running_loop().time() + seconds
        for name, adapter in adapters.items():
            if adapter.discovering:
                self._orphaned[name] = ends

    def take_orphan_scan(self, adapter: str) -> float:
        """When the orphaned scan of a returning ``adapter`` ends (0: none); forgotten after."""
        return self._orphaned.pop(adapter, 0.0)

    def listening(self, name: str, target: Adapter | None) -> bool:
        """The adapter's radio is on: bluetoothd's adapter scans or monitors, or,
        with bluetoothd down, a crashed one's scan still runs in the kernel."""
        now = asyncio.get_running_loop().time()
        if target is None:
            return self.channel is not None and self._orphaned.get(name, 0.0) > now
        if not target.powered:
            return False
        return (
            target.discovering
            or (target.monitors is not None and target.monitors.active)
            or (self.channel is not None and target.faults.busy_until > now)
        )

    def found(self, name: str, target: Adapter | None, report: Report) -> None:
        """``mgmt_device_found``: what the kernel hands every control socket.

        Before bluetoothd's own gating (discoverable flags, DuplicateData,
        Pattern, the RSSI delta): only the kernel's Start Service Discovery
        filter (merged RSSI threshold and UUID lists) applies. While discovering
        every report is a Device Found; with only monitors (passive scanning,
        no controller offload) every report is an Adv Monitor Device Found with
        handle 0, as ``mgmt_adv_monitor_device_found`` sends for software
        matching.
        """
        channel = self.channel
        if channel is None or not channel.clients:
            return
        index = self._indexes.get(name, -1)
        if index == -1:
            index = self._indexes[name] = mgmt.controller_index(name)
        if index is None:
            return
        now = asyncio.get_running_loop().time
        if target is None:
            # bluetoothd is down: only a crashed one's orphaned scan still runs.
            if self._orphaned.get(name, 0.0) > now():
                channel.send(mgmt.device_found(index, report), mgmt.EV_DEVICE_FOUND)
            return
        faults = target.faults
        # An external raw-HCI scanner does not hide reports: the controller's
        # events reach the kernel whoever enabled the scan, and bluetoothd gets
        # them from here (Adapter.advertise reports them over D-Bus too).
        if not target.powered or faults.silent:
            return
        if target.discovering or faults.busy_until > now():
            current = target.current
            if (
                current is not None
                and current.filtered
                and not filter_match(current.rssi, current.uuids, report)
            ):
                return
            channel.send(mgmt.device_found(index, report), mgmt.EV_DEVICE_FOUND)
        elif target.monitors is not None and target.monitors.active:
            frame = mgmt.device_found(index, report, mgmt.MONITOR_HANDLE_SOFTWARE)
            channel.send(frame, mgmt.EV_ADV_MONITOR_DEVICE_FOUND)

    def link_changed(self, target: Adapter, dev: Device, connected: bool) -> None:
        """``mgmt_device_connected`` / ``mgmt_device_disconnected`` for a link change."""
        channel = self.channel
        if channel is None or not channel.clients:
            return
        index = mgmt.controller_index(target.name)
        if index is None:
            return
        if connected:
            # The kernel sends the peer's name as EIR when it has no advertising data.
            name = dev.name
            eir = mgmt.ad_data([(AD_NAME_COMPLETE, name.encode())]) if name else b""
            frame = mgmt.device_connected(index, dev.address, dev.address_type, eir)
            channel.send(frame, mgmt.EV_DEVICE_CONNECTED)
        else:
            frame = mgmt.device_disconnected(index, dev.address, dev.address_type, self.link_reason)
            channel.send(frame, mgmt.EV_DEVICE_DISCONNECTED)
