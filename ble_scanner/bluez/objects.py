"""bluetoothd as we follow it on the bus: its owner, its adapters and devices, the calls.

One connection, explicit match rules, one message handler, no proxy objects
(as bleak's BlueZManager does). We follow NameOwnerChanged for org.bluez, read
GetManagedObjects when it appears, and InterfacesAdded / InterfacesRemoved /
PropertiesChanged from then on: an adapter's object may gain or lose an
interface (AdvertisementMonitorManager1) at any time. Each adapter's discovery
is an :class:`~.adapter.AdapterDiscovery`; Device1 objects become reports,
and their ``Connected`` is followed so that no power cycle drops a link.
D-Bus types are checked here, at the edge; anything malformed is counted and
logged (rate-limited), never passed on.

With management ingest (``ingest.py`` switches) reports come from the
channel's frames instead of Device1 ``PropertiesChanged``, and links from its
Device Connected / Disconnected. Device1 objects are still followed through
InterfacesAdded / Removed for what the channel lacks (a cached name, links at
start-up), never as a second report of what the channel reported.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from dbus_fast import Message, MessageFlag, MessageType, Variant
from dbus_fast.aio import MessageBus

from ..bus import calls
from ..bus.calls import BusGoneError, CallError
from ..claims import DEFAULT_DRAIN_TIMEOUT, other_drain
from ..claimsdir import ClaimsDir
from ..const import (
    BLUEZ_ADAPTER,
    BLUEZ_CALL_TIMEOUT,
    BLUEZ_DEVICE,
    BLUEZ_MONITOR_MANAGER,
    BLUEZ_ROOT_PATH,
    BLUEZ_SERVICE,
    DBUS_SERVICE,
    ERROR_UNKNOWN_OBJECT,
    OBJECT_MANAGER,
    PROPERTIES,
    WATCHDOG_LOOKS_PER_SILENCE,
    WATCHDOG_MAX_LOOK_INTERVAL,
    WATCHDOG_SILENCE,
)
from ..leases import LeaseKind, LeaseRegistry
from ..record import DeviceView, MalformedData, adapter_name, unwrap_device
from ..state import AdapterStatus
from ..watchdog import DEFAULT_SILENCE_POWER_CYCLE, WatchdogAction
from . import mgmt
from .adapter import AdapterDiscovery
from .discovery import Blocker, ScanMode, Wants
from .ingest import Ingest, IngestSwitch, properties_rule
from .monitors import is_call_for_monitor_app

__all__ = ["Bluez", "ScanMode"]

_LOGGER = logging.getLogger(__name__)

# At most one log line per kind of malformed data per this many seconds.
MALFORMED_LOG_INTERVAL: Final = 60.0


def is_adapter_path(path: str) -> bool:
    """``/org/bluez/hci0`` is an adapter's object; ``/org/bluez/hci0/dev_...`` is not."""
    prefix = BLUEZ_ROOT_PATH + "/"
    return path.startswith(prefix) and "/" not in path[len(prefix) :]


class RateLimitedLog:
    """Counts events and logs each kind at most once per interval."""

    def __init__(self, interval: float = MALFORMED_LOG_INTERVAL) -> None:
        self.interval = interval
        self.counts: dict[str, int] = {}
        self._last: dict[str, float] = {}

    def __call__(self, kind: str, message: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        now = time.monotonic()
        if now - self._last.get(kind, -self.interval) >= self.interval:
            self._last[kind] = now
            _LOGGER.warning("%s (%d so far)", message, self.counts[kind])


ReportCallback = Callable[[DeviceView], object]


class Bluez:
    """Follows org.bluez on one connection and keeps our discovery running."""

    def __init__(
        self,
        bus: MessageBus,
        on_report: ReportCallback,
        on_status: Callable[[], None] = lambda: None,
        adapters_wanted: frozenset[str] = frozenset(),
        call_timeout: float = BLUEZ_CALL_TIMEOUT,
        scan_mode: ScanMode = ScanMode.ACTIVE,
        leases: LeaseRegistry | None = None,
        report_counts: Callable[[], Mapping[str, int]] | None = None,
        silence_restart: float = WATCHDOG_SILENCE,
        silence_power_cycle: float = DEFAULT_SILENCE_POWER_CYCLE,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
        claims: ClaimsDir | None = None,
        ingest: Ingest = Ingest.DBUS,
        mgmt_socket: str = "",
    ) -> None:
        """``mgmt_socket``: read management frames from this Unix socket, not the kernel."""
        self.bus = bus
        self.on_report = on_report
        self.on_status = on_status
        self.adapters_wanted = adapters_wanted
        self.call_timeout = call_timeout
        self.scan_mode = scan_mode
        self.leases = leases if leases is not None else LeaseRegistry()
        self._lease_timer: asyncio.TimerHandle | None = None
        self.report_counts = report_counts
        self.silence_restart = silence_restart
        self.silence_power_cycle = silence_power_cycle
        self.drain_timeout = drain_timeout
        # The bt-claims directory (README "Other processes' links and claims");
        # None: no coordination with other processes, only our own Device1 view.
        self.claims = claims
        self._watchdog: asyncio.Task[None] | None = None
        self.owner: str | None = None
        # When bluetoothd came back while we ran: a refusal soon after is most
        # likely the old daemon's scan, which the kernel ends by itself.
        self.restarted_at: float | None = None
        self.adapters: dict[str, AdapterDiscovery] = {}  # by object path
        # Adapters (by name) another scanner held when they went away: the same
        # adapter coming back (bluetoothd restart, replug) starts from that, so
        # its state keeps naming the scanner and passive scanning resumes first.
        self.blocked: dict[str, Blocker] = {}
        # The interfaces on each adapter's object, as bluetoothd added and removed them.
        self.interfaces: dict[str, set[str]] = {}
        self.views: dict[str, DeviceView] = {}  # by Device1 object path
        # Device1 objects with Connected true → their address: links a power cycle would drop.
        self.links: dict[str, str] = {}
        # Reads of Connected under way (see _follow_link), by Device1 path.
        self._confirming: dict[str, asyncio.Task[None]] = {}
        self.malformed = RateLimitedLog()
        # bluetoothd's object signals held while our GetManagedObjects is out:
        # applied after its reply, so an older snapshot never undoes them.
        self._held: list[Message] | None = None
        self._sync: asyncio.Task[None] | None = None
        self._generation = 0
        self._closing = False
        self.ingest = IngestSwitch(
            bus, call_timeout, ingest, mgmt_socket,
            self._on_mgmt_event, self._resync, self.status_changed,
        )  # fmt: skip

    # --- life cycle --------------------------------------------------------------

    async def start(self) -> None:
        self.bus.add_message_handler(self._on_message)
        self.bus.add_message_handler(self._on_monitor_call)
        if self.report_counts is not None:
            self._watchdog = asyncio.get_running_loop().create_task(
                self._run_watchdog(), name="watchdog"
            )
        for rule in (
            calls.name_owner_rule(BLUEZ_SERVICE),
            calls.signal_rule(sender=BLUEZ_SERVICE, interface=OBJECT_MANAGER, path="/"),
            properties_rule(BLUEZ_ADAPTER),
        ):
            await calls.add_match(self.bus, rule, timeout=self.call_timeout)
        await self.ingest.start()
        owner = await calls.name_owner(self.bus, BLUEZ_SERVICE, timeout=self.call_timeout)
        if owner is None:
            _LOGGER.warning("bluetoothd is not on the bus; waiting for it")
            return
        await self._bluez_appeared(owner)

    async def close(self, stop_sessions: bool = True) -> None:
        """Stop our sessions (bounded by the call timeout) and forget everything."""
        self._closing = True
        if self._lease_timer is not None:
            self._lease_timer.cancel()
        self.ingest.close()
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._sync is not None:
            self._sync.cancel()
        for task in self._confirming.values():
            task.cancel()
        self.bus.remove_message_handler(self._on_message)
        adapters = list(self.adapters.values())
        self.adapters.clear()
        await asyncio.gather(*(a.close(stop_sessions) for a in adapters))

    def wants_for(self, adapter: str) -> Wants:
        """What the settings and the leases ask of ``adapter`` now."""
        wanted = self.adapters_wanted
        return Wants(
            enabled=not wanted or adapter in wanted,
            mode=self.scan_mode,
            window=self.leases.wants(adapter, LeaseKind.ACTIVE),
            paused=self.leases.wants(adapter, LeaseKind.PAUSE),
        )

    def set_adapters_wanted(self, wanted: frozenset[str]) -> None:
        self.adapters_wanted = wanted
        self._wants_changed()

    def set_scan_mode(self, mode: ScanMode) -> None:
        if mode is not self.scan_mode:
            _LOGGER.info("scan mode %s", mode.value)
            self.scan_mode = mode
            self._wants_changed()

    def leases_changed(self) -> None:
        """A lease was taken, released or dropped: converge, and wake at the next expiry."""
        self.leases.expire()
        if self._lease_timer is not None:
            self._lease_timer.cancel()
            self._lease_timer = None
        expiry = self.leases.next_expiry()
        if expiry is not None and not self._closing:
            loop = asyncio.get_running_loop()
            delay = max(0.0, expiry - self.leases.monotonic())
            self._lease_timer = loop.call_later(delay, self.leases_changed)
        self._wants_changed()

    def _wants_changed(self) -> None:
        for adapter in list(self.adapters.values()):
            adapter.wants_changed(self.wants_for(adapter.name))

    def set_watchdog(
        self, silence_restart: float, silence_power_cycle: float, drain_timeout: float
    ) -> None:
        """The watchdog's timings and the drain wait, live (the settings changed)."""
        self.silence_restart, self.silence_power_cycle = silence_restart, silence_power_cycle
        self.drain_timeout = drain_timeout
        for adapter in self.adapters.values():
            adapter.ladder.configure(silence_restart, silence_power_cycle)

    def connected_device(self, adapter_path: str) -> str | None:
        """The address of a device connected on the adapter, if any."""
        prefix = adapter_path + "/"
        return next((a for p, a in sorted(self.links.items()) if p.startswith(prefix)), None)

    async def _run_watchdog(self) -> None:
        assert self.report_counts is not None
        while True:
            silence = min(self.silence_restart, self.silence_power_cycle)
            await asyncio.sleep(
                min(WATCHDOG_MAX_LOOK_INTERVAL, silence / WATCHDOG_LOOKS_PER_SILENCE)
            )
            counts = self.report_counts()
            now = time.monotonic()
            for adapter in list(self.adapters.values()):
                try:
                    self._look_at_claims(adapter)
                    action = adapter.watch(counts.get(adapter.name, 0), now)
                    if action is WatchdogAction.RESTART:
                        await adapter.restart_discovery()
                    elif action is WatchdogAction.POWER_CYCLE:
                        adapter.begin_power_cycle()
                except Exception:
                    _LOGGER.exception("%s: watchdog action failed", adapter.name)

    def _look_at_claims(self, adapter: AdapterDiscovery) -> None:
        """Another process's drain on the adapter holds us off it until it goes."""
        if self.claims is None:
            return
        drain = other_drain(self.claims.read(adapter.claim_keys), self.claims.pid)
        adapter.other_drain(drain.service if drain is not None else "")

    def _on_monitor_call(self, msg: Message) -> Message | bool:
        if not is_call_for_monitor_app(msg):
            return False
        for adapter in self.adapters.values():
            if adapter.monitor.owns(msg.path or ""):
                return adapter.monitor.handle(msg)
        if msg.flags & MessageFlag.NO_REPLY_EXPECTED:
            return True  # e.g. BlueZ's Release after we dropped the adapter
        return Message.new_error(msg, ERROR_UNKNOWN_OBJECT, f"no object {msg.path}")

    def status_changed(self) -> None:
        self.on_status()

    # --- calls -------------------------------------------------------------------

    async def call(
        self,
        path: str,
        interface: str,
        member: str,
        signature: str = "",
        body: list[Any] | None = None,
    ) -> list[Any]:
        """A call to bluetoothd; raises CallError, TimeoutError or BusGoneError."""
        return await calls.call(
            self.bus, BLUEZ_SERVICE, path, interface, member, signature, body,
            timeout=self.call_timeout,
        )  # fmt: skip

    # --- bluetoothd comes and goes -----------------------------------------------

    async def _bluez_appeared(self, owner: str, report: bool = True) -> None:
        """Signals from ``owner`` count from now; the snapshot comes under them.

        ``report``: devices heard in a running discovery are reports (start-up);
        False reads Device1 state again without reporting it (after the channel).
        """
        self.owner = owner
        self._generation += 1
        generation = self._generation
        self._held = []
        try:
            (objects,) = await self.call("/", OBJECT_MANAGER, "GetManagedObjects")
        except (CallError, TimeoutError, BusGoneError) as exc:
            _LOGGER.warning("GetManagedObjects failed: %s", exc)
            objects = {}
        if generation != self._generation or self._closing:
            return  # bluetoothd went away (or we are stopping) meanwhile
        held, self._held = self._held, None
        _LOGGER.info("bluetoothd is on the bus as %s", owner)
        for path, interfaces in sorted(objects.items()):
            self._interfaces_added(path, interfaces, initial=True, report=report)
        for msg in held:
            self._on_bluez_signal(msg)
        self.status_changed()

    def _bluez_vanished(self) -> None:
        _LOGGER.warning("bluetoothd left the bus; discovery will be re-armed when it returns")
        self.owner = None
        self._held = None
        self._generation += 1
        for adapter in self.adapters.values():
            self._forget(adapter)
        self.adapters.clear()
        self.interfaces.clear()
        self.views.clear()
        self.links.clear()
        self.status_changed()

    # --- signals -----------------------------------------------------------------

    def _on_message(self, msg: Message) -> bool:
        if msg.message_type != MessageType.SIGNAL:
            return False
        try:
            if msg.member == "NameOwnerChanged" and msg.sender == DBUS_SERVICE:
                self._name_owner_changed(msg)
            elif msg.sender == self.owner and self.owner is not None:
                if self._held is not None:
                    self._held.append(msg)
                else:
                    self._on_bluez_signal(msg)
        except Exception:
            # Nothing BlueZ sends may take the service down.
            _LOGGER.exception("error handling %s from %s", msg.member, msg.path)
        return False

    def _name_owner_changed(self, msg: Message) -> None:
        if msg.signature != "sss" or msg.body[0] != BLUEZ_SERVICE:
            return
        _, old, new = msg.body
        if old and self.owner is not None:
            self._bluez_vanished()
        if new and not self._closing:
            self.restarted_at = time.monotonic()
            self._sync = asyncio.get_running_loop().create_task(self._bluez_appeared(new))

    def _on_bluez_signal(self, msg: Message) -> None:
        member = msg.member
        try:
            if member == "PropertiesChanged":
                self._properties_changed(msg)
            elif member == "InterfacesAdded" and msg.path == "/":
                if msg.signature == "oa{sa{sv}}":
                    path, interfaces = msg.body
                    self._interfaces_added(path, interfaces)
                else:
                    self.malformed("signature", f"InterfacesAdded with signature {msg.signature}")
            elif member == "InterfacesRemoved" and msg.path == "/":
                if msg.signature == "oas":
                    path, names = msg.body
                    self._interfaces_removed(path, names)
                else:
                    self.malformed("signature", f"InterfacesRemoved with signature {msg.signature}")
        except Exception:
            # Nothing BlueZ sends may take the service down.
            _LOGGER.exception("error handling %s from %s", member, msg.path)

    def _properties_changed(self, msg: Message) -> None:
        if msg.signature != "sa{sv}as":
            self.malformed("signature", f"PropertiesChanged with signature {msg.signature}")
            return
        interface, changed, invalidated = msg.body
        path = msg.path or ""
        if interface == BLUEZ_DEVICE:
            self._follow_link(path, changed, invalidated)
            view = self.views.get(path)
            # With the channel, its frames are the reports (and the match is going).
            if view is not None and not self.ingest.mgmt_active:
                self._update_view(view, changed, invalidated)
        elif interface == BLUEZ_ADAPTER:
            adapter = self.adapters.get(path)
            if adapter is not None:
                adapter.on_properties(changed)

    def _update_view(
        self, view: DeviceView, changed: Mapping[str, Variant], invalidated: list[str]
    ) -> None:
        try:
            is_report = view.update(unwrap_device(changed), invalidated)
        except (MalformedData, AttributeError, TypeError, ValueError) as exc:
            self.malformed("device", f"malformed Device1 data from {view.path}: {exc}")
            return
        if is_report:
            self.on_report(view)

    def _interfaces_added(
        self,
        path: str,
        interfaces: Mapping[str, Mapping[str, Variant]],
        initial: bool = False,
        report: bool = True,
    ) -> None:
        if is_adapter_path(path):
            self._adapter_interfaces_added(path, interfaces)
        device_props = interfaces.get(BLUEZ_DEVICE)
        if device_props is not None:
            self._follow_link(path, device_props, [])
            view = self.views.get(path)
            try:
                props = unwrap_device(device_props)
                if self.ingest.mgmt_active and view is not None:
                    # The channel reported this device: no second report, and no
                    # older content over its own; only a name bluetoothd remembered.
                    report = False
                    name = props.get("Name")
                    props = {} if name is None or view.content.name else {"Name": name}
                elif self.ingest.mgmt_active and not initial:
                    report = False  # the channel's frame that made this object reports it
                if view is None:
                    view = DeviceView(path, adapter_name(path))
                is_report = view.update(props)
            except (MalformedData, AttributeError, TypeError, ValueError) as exc:
                self.malformed("device", f"malformed Device1 data from {path}: {exc}")
                return
            if not view.address:
                self.malformed("device", f"Device1 {path} without an Address")
                return
            self.views[path] = view
            # A new object is a fresh report; one found at start-up is only a
            # report if it carries an RSSI, i.e. was heard in a running discovery.
            if report and is_report and (not initial or view.rssi is not None):
                self.on_report(view)

    def _follow_link(self, path: str, props: Mapping[str, Variant], invalidated: list[str]) -> None:
        """Device1's Connected, for "never drop a link"; a malformed value counts as none."""
        connected = props.get("Connected")
        if "Connected" in invalidated:
            self.links.pop(path, None)
        if not isinstance(connected, Variant) or connected.signature != "b":
            resolved = props.get("ServicesResolved")
            if isinstance(resolved, Variant) and resolved.value is True and path not in self.links:
                self._confirm_link(path)
            return
        if connected.value:
            address = props.get("Address")
            known = self.views.get(path)
            self.links[path] = (
                address.value
                if isinstance(address, Variant) and address.signature == "s"
                else known.address
                if known is not None and known.address
                else path.rsplit("/", 1)[-1]
            )
            _LOGGER.info("%s: connected (no power cycle while it is)", self.links[path])
        elif self.links.pop(path, None) is not None:
            _LOGGER.info("%s: disconnected", path.rsplit("/", 1)[-1])

    def _confirm_link(self, path: str) -> None:
        """ServicesResolved true on a device we hold no link for: read its Connected.

        bluetoothd 5.66 can set a Device1's Connected with no PropertiesChanged
        for it (seen in tests/realbluez/test_links.py: GATT objects, UUIDs and
        ServicesResolved came, Connected read true, its change never did). It
        resolves services only over a link (device_svc_resolved in
        src/device.c), so that is the moment to ask.
        """
        if path in self._confirming or self._closing:
            return
        task = asyncio.get_running_loop().create_task(self._read_connected(path))
        self._confirming[path] = task
        task.add_done_callback(lambda _: self._confirming.pop(path, None))

    async def _read_connected(self, path: str) -> None:
        generation = self._generation
        try:
            (value,) = await self.call(path, PROPERTIES, "Get", "ss", [BLUEZ_DEVICE, "Connected"])
        except (CallError, TimeoutError, BusGoneError) as exc:
            _LOGGER.debug("%s: Connected not readable: %s", path, exc)
            return
        if generation == self._generation and path not in self.links:
            self._follow_link(path, {"Connected": value}, [])

    async def refresh_links(self, adapter_path: str) -> None:
        """Links on the adapter read from bluetoothd itself, before anything would drop them.

        Signals can miss a link (see :meth:`_confirm_link`); a power cycle
        cannot be undone, so it asks first. Only adds links: one that ended
        is forgotten by its own signal, and a stale one only holds a power
        cycle off.
        """
        try:
            (objects,) = await self.call("/", OBJECT_MANAGER, "GetManagedObjects")
        except (CallError, TimeoutError, BusGoneError) as exc:
            _LOGGER.warning("links not re-read: %s", exc)
            return
        prefix = adapter_path + "/"
        for path, interfaces in objects.items():
            device = interfaces.get(BLUEZ_DEVICE)
            if device is not None and path.startswith(prefix) and path not in self.links:
                self._follow_link(path, device, [])

    def _adapter_interfaces_added(
        self, path: str, interfaces: Mapping[str, Mapping[str, Variant]]
    ) -> None:
        """Adapter1 makes the adapter; the monitor manager may come with it or later."""
        known = self.interfaces.setdefault(path, set())
        had_manager = BLUEZ_MONITOR_MANAGER in known
        known.update(interfaces)
        adapter = self.adapters.get(path)
        adapter_props = interfaces.get(BLUEZ_ADAPTER)
        if adapter is None and adapter_props is not None:
            props = {k: v.value for k, v in adapter_props.items()}
            name = adapter_name(path + "/")
            manager = BLUEZ_MONITOR_MANAGER in known
            adapter = AdapterDiscovery(self, path, props, manager, self.blocked.get(name))
            self.adapters[path] = adapter
            _LOGGER.info("adapter %s (%s) appeared", adapter.name, adapter.address)
            adapter.start()
            self.status_changed()
        elif adapter is not None and not had_manager and BLUEZ_MONITOR_MANAGER in known:
            _LOGGER.info("%s: advertisement monitor manager appeared", adapter.name)
            adapter.manager_changed(True)

    def _interfaces_removed(self, path: str, names: list[str]) -> None:
        if BLUEZ_DEVICE in names:
            # Presence is ours to decide (SPEC §6): BlueZ dropping its object
            # after 30 s says nothing about the device being gone.
            self.views.pop(path, None)
            self.links.pop(path, None)
        known = self.interfaces.get(path)
        if known is None:
            return
        had_manager = BLUEZ_MONITOR_MANAGER in known
        known.difference_update(names)
        adapter = self.adapters.get(path)
        if BLUEZ_ADAPTER in names:
            del self.interfaces[path]
            if adapter is not None:
                del self.adapters[path]
                _LOGGER.warning("adapter %s disappeared", adapter.name)
                self._forget(adapter)
                prefix = path + "/"
                for view_path in [p for p in self.views if p.startswith(prefix)]:
                    del self.views[view_path]
                for link_path in [p for p in self.links if p.startswith(prefix)]:
                    del self.links[link_path]
                self.status_changed()
        elif adapter is not None and had_manager and BLUEZ_MONITOR_MANAGER in names:
            _LOGGER.warning("%s: advertisement monitor manager disappeared", adapter.name)
            adapter.manager_changed(False)

    def _forget(self, adapter: AdapterDiscovery) -> None:
        blocker = adapter.machine.blocker
        if blocker is Blocker.OTHER_SCANNER:
            self.blocked[adapter.name] = blocker
        else:
            self.blocked.pop(adapter.name, None)
        adapter.forget()

    def adapter_statuses(self) -> list[AdapterStatus]:
        ingest = self.ingest.in_use
        return [
            dataclasses.replace(a.status(), ingest=ingest)
            for a in sorted(self.adapters.values(), key=lambda a: a.name)
        ]

    # --- the management channel -------------------------------------------------------

    async def _resync(self) -> None:
        """Back on D-Bus ingest: Device1 state read again, reporting nothing."""
        owner = self.owner
        if owner is not None and not self._closing:
            await self._bluez_appeared(owner, report=False)

    def _on_mgmt_event(self, event: mgmt.Event) -> None:
        if isinstance(event, mgmt.Found):
            self._found(event)
        elif isinstance(event, mgmt.Connected):
            if event.path not in self.links:
                _LOGGER.info("%s: connected (no power cycle while it is)", event.address)
            self.links[event.path] = event.address
        elif isinstance(event, mgmt.Disconnected):
            if self.links.pop(event.path, None) is not None:
                _LOGGER.info("%s: disconnected", event.address)
        elif isinstance(event, mgmt.Malformed):
            self.malformed("frame", f"malformed management frame: {event.reason}")

    def _found(self, found: mgmt.Found) -> None:
        """One advertising report: onto its Device1 view as bluetoothd would put it."""
        path = found.path
        view = self.views.get(path)
        adapter = self.adapters.get(mgmt.adapter_path(found.index))
        # Our session's filter asks for DuplicateData (discovery.py).
        duplicate = adapter is not None and adapter.session
        eir = (found.eir, duplicate)
        if (
            view is not None
            and view.eir == eir
            and found.address == view.address
            and found.address_type == view.address_type
        ):
            # The same advertisement again (a sensor between readings, a beacon):
            # bluetoothd would change nothing but RSSI, so only RSSI is applied.
            view.update({"RSSI": mgmt.rssi_value(found)})
            view.eir = eir
            self.on_report(view)
            return
        ad = mgmt.parse_eir(found.eir)
        if isinstance(ad, mgmt.Malformed):
            self.malformed("frame", f"malformed advertisement from {found.address}: {ad.reason}")
            return
        if view is None:
            if found.scan_response:
                return  # bluetoothd makes no device of a scan response alone
            view = DeviceView(path, adapter_name(path))
        try:
            view.update(mgmt.device_changes(view, found, ad, duplicate))
        except MalformedData as exc:
            self.malformed("device", f"malformed advertisement from {found.address}: {exc}")
            return
        view.eir = eir
        self.views[path] = view
        self.on_report(view)
