"""``BluezSimulator``: bluetoothd 5.72 on a real bus, driven by a test or a scene."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from dbus_fast import Variant
from dbus_fast.aio import MessageBus

from ble_scanner.const import BLUEZ_DEVICE

from . import bluetoothd, mgmt, wire
from .adapter import Adapter
from .bluetoothd import SimulatorError
from .const import (
    DEFAULT_TEMPORARY_TIMEOUT,
    DRAIN_HIGH_WATER,
    MONITOR_CRASH_PATTERNS,
    SUPPORTED_VERSIONS,
)
from .device import device_path
from .kernel import Kernel
from .monitor import MonitorManager
from .objects import CallRecord, ObjectServer
from .radio import Radio, ReportFactory
from .raw import RawObject
from .report import Report

# What ``mgmt_sent`` counts ``mgmt_send_raw`` under: no event has this code.
MGMT_RAW = -1


@dataclass(slots=True)
class _AdapterConfig:
    address: str
    monitor_manager: bool
    le_only: bool


class BluezSimulator:
    """BlueZ's D-Bus API with scripted adapters, devices and faults. See the package doc."""

    def __init__(
        self,
        bus_address: str | None = None,
        version: str = "5.72",
        experimental: bool = True,
        temporary_timeout: float = DEFAULT_TEMPORARY_TIMEOUT,
        kernel_delay: float = 0.0,
        orphan_scan: float = 0.0,
        monitor_crash_patterns: int | None = MONITOR_CRASH_PATTERNS,
        mgmt_socket: str | None = None,
    ) -> None:
        """``orphan_scan``: after a crash (``graceful=False``), an adapter that was
        discovering stays busy in the "kernel" this long and the next bluetoothd's
        starts get InProgress, as the real kernel does for up to
        ``const.KERNEL_LE_DISCOVERY_TIMEOUT`` (10.24 s). 0 leaves it out, so that
        tests not about it need not wait.

        ``monitor_crash_patterns``: bluetoothd crashes (as with ``graceful=False``)
        when RegisterMonitor finds a monitor with this many patterns or more, as
        5.66 and 5.82 do from ``const.MONITOR_CRASH_PATTERNS`` (8, the default) on.
        None: off.

        ``mgmt_socket``: serve the kernel's management channel on a Unix
        SOCK_SEQPACKET socket at this path, from ``start`` to ``stop`` (see
        ``mgmt_*`` and the package doc). A Unix socket path has at most 107
        bytes: pytest's ``tmp_path`` can be longer, a ``/tmp`` directory is not.
        """
        if version not in SUPPORTED_VERSIONS:
            raise ValueError(f"version must be one of {SUPPORTED_VERSIONS}")
        self.bus_address = bus_address
        self.version = version
        self.experimental = experimental
        self.temporary_timeout = temporary_timeout
        self.kernel_delay = kernel_delay
        self.orphan_scan = orphan_scan
        self.monitor_crash_patterns = monitor_crash_patterns
        self._crashing: set[asyncio.Task[None]] = set()
        self.adapters: dict[str, Adapter] = {}
        self.radio = Radio(self)
        self._configs: dict[str, _AdapterConfig] = {}
        self._log: list[CallRecord] = []
        self._delays: dict[tuple[str | None, str], float] = {}
        self._bus: MessageBus | None = None
        self._server: ObjectServer | None = None
        self.mgmt = mgmt.MgmtChannel(mgmt_socket) if mgmt_socket is not None else None
        self.kernel = Kernel(self.mgmt)

    # --- lifetime ------------------------------------------------------------

    async def start(self) -> BluezSimulator:
        if self.mgmt is not None:
            try:
                self.mgmt.start_listening()
            except OSError as exc:
                raise SimulatorError(f"cannot listen on {self.mgmt.path}: {exc}") from exc
        try:
            await self._connect()
        except SimulatorError:
            if self.mgmt is not None:
                self.mgmt.close()
            raise
        return self

    async def stop(self) -> None:
        """Release monitors, drop the name and the connection (the next owner can start).

        The management socket closes last: the kernel's channel outlives bluetoothd.
        """
        await self.radio.stop()
        await self._disconnect(graceful=True)
        if self.mgmt is not None:
            self.mgmt.close()

    async def __aenter__(self) -> BluezSimulator:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def server(self) -> ObjectServer:
        if self._server is None:
            raise SimulatorError("simulator is not running")
        return self._server

    @property
    def bus(self) -> MessageBus:
        return self.server.bus

    @property
    def unique_name(self) -> str:
        return self.bus.unique_name or ""

    async def _connect(self, before_name: Callable[[], None] | None = None) -> None:
        """Connect and own org.bluez; ``before_name`` publishes objects before the name is
        taken (bluetoothd takes it first; other implementations export first)."""
        server = await bluetoothd.connect(
            self.bus_address, self._log, self._delays, self._sender_gone
        )
        self._bus, self._server = server.bus, server
        if before_name is not None:
            before_name()
        try:
            await bluetoothd.take_name(server.bus)
        except SimulatorError:
            self._bus, self._server = None, None
            raise

    async def _disconnect(self, graceful: bool) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        adapters, self.adapters = list(self.adapters.values()), {}
        await bluetoothd.leave(server, adapters, graceful)

    async def restart_bluetoothd(
        self, downtime: float = 0.0, graceful: bool = True, monitor_manager_later: bool = False
    ) -> None:
        """bluetoothd exits and comes back as a new connection with fresh adapters.

        ``graceful`` sends Release to monitors and InterfacesRemoved first (a
        clean exit); False is a crash: the connection just drops. Adapters come
        back powered, with no sessions, devices or monitors.
        ``monitor_manager_later``: see :meth:`start_bluetoothd`.
        """
        await self.stop_bluetoothd(graceful)
        if downtime > 0:
            await asyncio.sleep(downtime)
        await self.start_bluetoothd(monitor_manager_later=monitor_manager_later)

    async def stop_bluetoothd(self, graceful: bool = True) -> None:
        """bluetoothd exits (``graceful``) or crashes; ``org.bluez`` loses its owner.

        The adapters stay known, to come back with :meth:`start_bluetoothd`. A
        crash leaves each discovering adapter's kernel scan running for
        ``orphan_scan`` seconds.
        """
        if not graceful and self.orphan_scan > 0:
            self.kernel.orphan_scans(self.adapters, self.orphan_scan)
        await self._disconnect(graceful)

    async def start_bluetoothd(
        self, experimental: bool | None = None, monitor_manager_later: bool = False
    ) -> None:
        """bluetoothd starts (with ``-E`` if ``experimental``, default: as before).

        Every known adapter appears powered, with no sessions, devices or monitors,
        all its interfaces in one InterfacesAdded as bluetoothd publishes them.
        ``monitor_manager_later`` (opt-in, for clients' robustness; bluetoothd
        itself does neither): each adapter is exported with Adapter1 alone before
        the name is taken, and gains AdvertisementMonitorManager1 in an
        InterfacesAdded of its own right after bluetoothd answers the next
        GetManagedObjects, whose reply lacks it. D-Bus allows both; another
        implementation of org.bluez did this, and a client that ignores
        interfaces added later never sees the manager.
        """
        if self._server is not None:
            raise SimulatorError("bluetoothd is already running")
        if experimental is not None:
            self.experimental = experimental
        later: list[Adapter] = []

        def publish() -> None:
            for name, config in self._configs.items():
                adapter = self._create_adapter(
                    name, config, powered=True, monitor_manager=not monitor_manager_later
                )
                adapter.faults.busy_until = self.kernel.take_orphan_scan(name)
                if monitor_manager_later and self.experimental and config.monitor_manager:
                    later.append(adapter)
            if later:
                self.server.after_managed_objects.append(publish_managers)

        def publish_managers() -> None:
            for adapter in later:
                if adapter.alive:
                    self._add_monitor_manager(adapter)

        if monitor_manager_later:
            await self._connect(before_name=publish)
        else:
            await self._connect()
            publish()

    # --- adapters ------------------------------------------------------------

    async def add_adapter(
        self,
        name: str,
        address: str | None = None,
        powered: bool = True,
        monitor_manager: bool = True,
        le_only: bool = False,
    ) -> str:
        """Hot-plug an adapter (InterfacesAdded from ``/``); returns its object path."""
        if name in self.adapters:
            raise ValueError(f"adapter {name} exists")
        if address is None:
            crc = zlib.crc32(name.encode())
            address = "00:1A:7D:" + ":".join(f"{(crc >> s) & 0xFF:02X}" for s in (16, 8, 0))
        config = _AdapterConfig(address, monitor_manager, le_only)
        self._configs[name] = config
        return self._create_adapter(name, config, powered).path

    def _create_adapter(
        self, name: str, config: _AdapterConfig, powered: bool, monitor_manager: bool = True
    ) -> Adapter:
        adapter = Adapter(
            self.server,
            name,
            config.address,
            powered=powered,
            version=self.version,
            temporary_timeout=self.temporary_timeout,
            monitor_manager=monitor_manager and self.experimental and config.monitor_manager,
            le_only=config.le_only,
            kernel_delay=self.kernel_delay,
        )
        self.adapters[name] = adapter
        adapter.on_link = self.kernel.link_changed
        self.server.add(adapter)
        if adapter.monitors is not None:
            self._configure_monitors(adapter.monitors)
        return adapter

    def _add_monitor_manager(self, adapter: Adapter) -> None:
        if adapter.monitors is None:
            self._configure_monitors(adapter.add_monitor_manager())

    def _configure_monitors(self, manager: MonitorManager) -> None:
        if self.monitor_crash_patterns is not None:
            manager.crash_patterns = self.monitor_crash_patterns
            manager.on_crash = self._crash_soon

    def _crash_soon(self) -> None:
        task = asyncio.get_running_loop().create_task(self.stop_bluetoothd(graceful=False))
        self._crashing.add(task)
        task.add_done_callback(self._crashing.discard)

    async def remove_adapter(self, name: str) -> None:
        """Unplug: its devices are removed, then the adapter (monitors get Release)."""
        self._configs.pop(name, None)
        self.adapter(name).shutdown()
        del self.adapters[name]

    def add_monitor_manager(self, adapter: str) -> None:
        """The adapter gains AdvertisementMonitorManager1, in an InterfacesAdded of its own."""
        self._add_monitor_manager(self.adapter(adapter))

    def remove_monitor_manager(self, adapter: str) -> None:
        """The adapter loses AdvertisementMonitorManager1 alone (InterfacesRemoved of that
        one interface); its monitors get Release first. The adapter stays."""
        self.adapter(adapter).remove_monitor_manager()

    async def set_powered(self, name: str, powered: bool) -> None:
        """Power change from outside D-Bus (rfkill, kernel); off drops every session."""
        self.adapter(name).set_powered(powered)

    def adapter(self, name: str) -> Adapter:
        try:
            return self.adapters[name]
        except KeyError:
            raise KeyError(f"no adapter {name}") from None

    # --- advertising ---------------------------------------------------------

    async def advertise(
        self,
        adapter: str,
        address: str,
        address_type: str = "public",
        rssi: int = -60,
        name: str | None = None,
        manufacturer_data: dict[int, bytes] | None = None,
        service_data: dict[str, bytes] | None = None,
        service_uuids: list[str] | None = None,
        tx_power: int | None = None,
        flags: int | None = 0x06,
        connectable: bool = True,
        scan_response: bool = False,
    ) -> bool:
        """One advertising report reaching ``adapter``; True if BlueZ would report it."""
        report = Report.build(
            address,
            address_type=address_type,
            rssi=rssi,
            name=name,
            manufacturer_data=manufacturer_data,
            service_data=service_data,
            service_uuids=service_uuids,
            tx_power=tx_power,
            flags=flags,
            connectable=connectable,
            scan_response=scan_response,
        )
        reported = self.advertise_report(adapter, report)
        if self.server.backlog() > DRAIN_HIGH_WATER:
            await self.server.drain()
        if self.mgmt is not None and self.mgmt.backlog() > DRAIN_HIGH_WATER:
            await self.mgmt.drain()
        return reported

    def advertise_report(self, adapter: str, report: Report) -> bool:
        """The cheap synchronous path for bulk senders; call ``drain()`` now and then.

        While bluetoothd is down, only the management channel can hear it (an
        orphaned kernel scan); True still means "reached Device1".
        """
        target = self.adapters.get(adapter)
        self.kernel.found(adapter, target, report)
        return target.advertise(report) if target is not None else False

    def kernel_listening(self, adapter: str) -> bool:
        """The adapter's radio is on (``kernel.Kernel.listening``)."""
        return self.kernel.listening(adapter, self.adapters.get(adapter))

    async def drain(self) -> None:
        """Wait until every signal emitted so far is on the socket, and every
        management frame in its client's socket."""
        self.server.flush()
        await self.server.drain()
        if self.mgmt is not None:
            await self.mgmt.drain()

    def add_advertiser(
        self,
        adapter: str,
        address: str,
        period: float = 1.0,
        factory: ReportFactory | None = None,
        **advertise_kwargs: Any,
    ) -> None:
        """Re-advertise periodically while ``adapter`` scans (or monitors)."""
        if factory is None:
            report = Report.build(address, **advertise_kwargs)

            def factory() -> Report:
                return report

        self.radio.add(adapter, address.upper(), factory, period)

    def add_shared_advertiser(
        self,
        address: str,
        rssi: Mapping[str, int],
        period: float = 1.0,
        **advertise_kwargs: Any,
    ) -> None:
        """One device heard by several adapters (a GX's built-in radio and a USB
        dongle): each adapter in ``rssi`` hears every advertising event, at its own
        RSSI. ``set_silent`` quiets one adapter's radio; ``remove_advertiser`` per
        adapter makes one stop hearing it."""
        factories = {
            adapter: _constant(Report.build(address, rssi=level, **advertise_kwargs))
            for adapter, level in rssi.items()
        }
        self.radio.add_shared(address.upper(), factories, period)

    def remove_advertiser(self, adapter: str, address: str) -> None:
        self.radio.remove(adapter, address.upper())

    def set_connected(
        self,
        adapter: str,
        address: str,
        connected: bool = True,
        reason: int = mgmt.DISCONNECT_LOCAL_HOST,
        announce: bool = True,
    ) -> None:
        """Another process connected to (or left) a device the adapter has seen.

        Connected goes true on its Device1 and, as a connected peripheral
        usually does, it stops advertising until the link ends. The management
        channel gets Device Connected, or Device Disconnected with ``reason``.
        ``announce`` False: no PropertiesChanged for Connected, only
        ServicesResolved (a fault of bluetoothd 5.66, see ``Adapter.set_connected``).
        """
        target = self.adapter(adapter)
        dev = target.devices.get(address.upper())
        if dev is None:
            raise KeyError(f"{adapter} has no device {address}")
        self.kernel.link_reason = reason
        try:
            target.set_connected(dev, connected, announce)
        finally:
            self.kernel.link_reason = mgmt.DISCONNECT_LOCAL_HOST
        self.radio.set_muted(adapter, address.upper(), connected)

    # --- faults --------------------------------------------------------------

    def refuse_start_discovery(self, adapter: str, count: int = 1) -> None:
        """The kernel refuses the next ``count`` starts: deferred InProgress, session removed."""
        self.adapter(adapter).faults.refuse_starts += count

    def set_external_scanner(self, adapter: str, active: bool = True) -> None:
        """A raw-HCI scanner holds the controller: every start fails until cleared."""
        self.adapter(adapter).faults.external_scanner = active

    def refuse_stop_discovery(self, adapter: str, count: int = 1) -> None:
        """bluez#807: InProgress on stop, session removed, Discovering stuck true."""
        self.adapter(adapter).faults.refuse_stops += count

    def drop_discovering(self, adapter: str, keep_sessions: bool = True) -> None:
        """The kernel stopped scanning: Discovering false; sessions kept unless told not to."""
        target = self.adapter(adapter)
        if keep_sessions:
            target.drop_discovering()
        else:
            target.stop_all_discovery()

    def set_silent(self, adapter: str, silent: bool = True) -> None:
        """Discovering stays as it is but no report reaches bluetoothd."""
        self.adapter(adapter).faults.silent = silent

    def set_reply_delay(self, member: str, seconds: float, adapter: str | None = None) -> None:
        """Hold calls of ``member`` (on one adapter, or any path) this long before handling."""
        path = self.adapter(adapter).path if adapter is not None else None
        if seconds > 0:
            self._delays[(path, member)] = seconds
        else:
            self._delays.pop((path, member), None)

    def inject_object(self, path: str, interfaces: dict[str, dict[str, Variant]]) -> None:
        """Publish any object with any values (InterfacesAdded from ``/``)."""
        self.server.add(RawObject(path, interfaces))

    def inject_device(self, adapter: str, address: str, properties: dict[str, Variant]) -> str:
        """A Device1 with exactly ``properties`` (see ``malformed``); returns its path."""
        path = device_path(self.adapter(adapter).path, address)
        self.inject_object(path, {BLUEZ_DEVICE: properties})
        return path

    def inject_properties_changed(
        self,
        path: str,
        changed: dict[str, Variant],
        invalidated: list[str] | None = None,
        interface: str = BLUEZ_DEVICE,
    ) -> None:
        """Send a PropertiesChanged as given, whether or not it makes sense."""
        self.server.send(wire.properties_changed(path, interface, changed, invalidated or []))

    def remove_object(self, path: str) -> None:
        """Unpublish an injected object (InterfacesRemoved from ``/``)."""
        self.server.remove(path)

    # --- the management channel ----------------------------------------------

    def _channel(self) -> mgmt.MgmtChannel:
        if self.mgmt is None:
            raise SimulatorError("no management socket (BluezSimulator(mgmt_socket=...))")
        return self.mgmt

    def mgmt_send_raw(self, data: bytes) -> None:
        """Any bytes, as one datagram, to every client (malformed-frame tests)."""
        self._channel().send(bytes(data), MGMT_RAW)

    def mgmt_disconnect_clients(self) -> None:
        """Every client's connection ends, as when the channel fails."""
        self._channel().disconnect_clients()

    def mgmt_stop_listening(self) -> None:
        """The channel cannot be opened: the socket file goes, clients stay connected."""
        self._channel().stop_listening()

    def mgmt_start_listening(self) -> None:
        """The channel can be opened again."""
        self._channel().start_listening()

    def mgmt_clients(self) -> int:
        """How many clients are connected."""
        return self._channel().clients

    def mgmt_sent(self, code: int) -> int:
        """Events of ``code`` sent while at least one client was connected
        (``MGMT_RAW``: ``mgmt_send_raw`` calls)."""
        return self._channel().sent[code]

    def mgmt_dropped(self) -> int:
        """Frames dropped because a client's queue was full (summed over clients)."""
        return self._channel().dropped

    # --- introspection for tests ---------------------------------------------

    def sessions(self, adapter: str) -> dict[str, dict[str, Any]]:
        """Discovering senders → their filter as Python values (``{}`` = no filter)."""
        return self.adapter(adapter).sessions()

    def preset_filters(self, adapter: str) -> dict[str, dict[str, Any]]:
        """Filters set by senders that are not discovering (kept for their next start)."""
        return self.adapter(adapter).preset_filters()

    def is_discovering(self, adapter: str) -> bool:
        return self.adapter(adapter).discovering

    def is_powered(self, adapter: str) -> bool:
        return self.adapter(adapter).powered

    def device_path(self, adapter: str, address: str) -> str | None:
        target = self.adapters.get(adapter)
        return target.device_path(address) if target is not None else None

    def devices(self, adapter: str) -> list[str]:
        return list(self.adapter(adapter).devices)

    def monitors(self, adapter: str) -> list[tuple[str, str]]:
        """Active monitors as (owner, object path)."""
        manager = self.adapter(adapter).monitors
        if manager is None:
            return []
        return [(app.owner, path) for app in manager.apps.values() for path in app.monitors]

    def calls(
        self, member: str | None = None, adapter: str | None = None, sender: str | None = None
    ) -> list[CallRecord]:
        path = f"/org/bluez/{adapter}" if adapter is not None else None
        return [
            c
            for c in self._log
            if (member is None or c.member == member)
            and (path is None or c.path == path)
            and (sender is None or c.sender == sender)
        ]

    def call_count(self, member: str, adapter: str | None = None, sender: str | None = None) -> int:
        return len(self.calls(member, adapter, sender))

    def clear_calls(self) -> None:
        self._log.clear()

    def _sender_gone(self, owner: str) -> None:
        for adapter in list(self.adapters.values()):
            adapter.disconnect_sender(owner)


__all__ = ["BluezSimulator", "SimulatorError"]


def _constant(report: Report) -> ReportFactory:
    """A factory that gives the same report every time (the same advertisement again)."""

    def factory() -> Report:
        return report

    return factory
