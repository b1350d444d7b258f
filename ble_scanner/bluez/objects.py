"""bluetoothd as we follow it on the bus: its owner, its adapters and devices, the calls.

One connection, explicit match rules, one message handler, no proxy objects
(as bleak's BlueZManager does). We follow NameOwnerChanged for org.bluez, read
GetManagedObjects when it appears, and InterfacesAdded / InterfacesRemoved /
PropertiesChanged from then on: an adapter's object may gain or lose an
interface (AdvertisementMonitorManager1) at any time. Each adapter's discovery
is an :class:`~.adapter.AdapterDiscovery`; Device1 objects and the
management channel's frames become reports in ``reports.py``, and links
(Device1's ``Connected``, the channel's Device Connected / Disconnected) are
followed in ``links.py`` so that no power cycle drops one. This module routes
what bluetoothd and the channel say to those pieces. D-Bus types are checked
here and there, at the edge; anything malformed is counted and logged
(rate-limited), never passed on.

With management ingest (``ingest.py`` switches) reports come from the
channel's frames instead of Device1 ``PropertiesChanged``. Device1 objects are
still followed through InterfacesAdded / Removed for what the channel lacks (a
cached name, links at start-up), never as a second report of what the channel
reported.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from dbus_fast import Message, MessageFlag, MessageType, Variant
from dbus_fast.aio import MessageBus

from ..bus import calls
from ..bus.calls import BusGoneError, CallError
from ..bus.owner import owner_change
from ..const import (
    BLUEZ_ADAPTER,
    BLUEZ_CALL_TIMEOUT,
    BLUEZ_DEVICE,
    BLUEZ_MONITOR_MANAGER,
    BLUEZ_ROOT_PATH,
    BLUEZ_SERVICE,
    ERROR_UNKNOWN_OBJECT,
    OBJECT_MANAGER,
    WATCHDOG_LOOKS_PER_SILENCE,
    WATCHDOG_MAX_LOOK_INTERVAL,
    WATCHDOG_SILENCE,
)
from ..core.leases import LeaseKind, LeaseRegistry
from ..core.record import adapter_name
from ..core.state import AdapterStatus
from ..modes import Ingest, ScanMode
from ..tasks import Periodic
from . import mgmt
from .adapter import AdapterDiscovery
from .claims import DEFAULT_DRAIN_TIMEOUT, other_drain
from .claimsdir import ClaimsDir
from .discovery import Blocker, Wants
from .ingest import IngestSwitch, properties_rule
from .links import Links
from .mgmtchannel import WakeUp
from .monitors import is_call_for_monitor_app
from .reports import RateLimitedLog, Reports, ReportSink
from .watchdog import DEFAULT_SILENCE_POWER_CYCLE, WatchdogAction

_LOGGER = logging.getLogger(__name__)


def is_adapter_path(path: str) -> bool:
    """``/org/bluez/hci0`` is an adapter's object; ``/org/bluez/hci0/dev_...`` is not."""
    prefix = BLUEZ_ROOT_PATH + "/"
    return path.startswith(prefix) and "/" not in path[len(prefix) :]


class Bluez:
    """Follows org.bluez on one connection and keeps our discovery running."""

    def __init__(
        self,
        bus: MessageBus,
        sink: ReportSink,
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
        wake_up: WakeUp | None = None,
    ) -> None:
        """``sink``: where reports go (the hub); ``report_counts``: each adapter's
        reports so far, for the silence watchdog (none: no watchdog);
        ``mgmt_socket``: read management frames from this Unix socket, not the kernel;
        ``wake_up``: told around each wake-up's management frames (the outbox)."""
        self.bus = bus
        self.sink = sink
        self.adapters_wanted = adapters_wanted
        self.call_timeout = call_timeout
        self.scan_mode = scan_mode
        self.leases = leases if leases is not None else LeaseRegistry()
        self.report_counts = report_counts
        self.silence_restart = silence_restart
        self.silence_power_cycle = silence_power_cycle
        self.drain_timeout = drain_timeout
        # The bt-claims directory (docs/behaviour.md "Other processes' links and claims");
        # None: no coordination with other processes, only our own Device1 view.
        self.claims = claims
        self._watchdog = Periodic("watchdog look", self._look_interval, self._watch, _LOGGER)
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
        self.malformed = RateLimitedLog()
        self.reports = Reports(sink, self.malformed)
        self.links = Links(call=self.call)
        # bluetoothd's object signals held while our GetManagedObjects is out:
        # applied after its reply, so an older snapshot never undoes them.
        self._held: list[Message] | None = None
        self._sync: asyncio.Task[None] | None = None
        self._generation = 0
        self._closing = False
        self.ingest = IngestSwitch(
            bus, call_timeout, ingest, mgmt_socket, self._on_mgmt_event, self._resync, wake_up
        )  # fmt: skip

    # --- life cycle --------------------------------------------------------------

    async def start(self) -> None:
        self.bus.add_message_handler(self._on_message)
        self.bus.add_message_handler(self._on_monitor_call)
        if self.report_counts is not None:
            self._watchdog.start()
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
        self.ingest.close()
        self.links.clear()  # reads of a link under way end with us
        self._watchdog.cancel()
        if self._sync is not None:
            self._sync.cancel()
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
        """Leases were taken, released, dropped or expired (the hub's timer, core/timer.py):
        each adapter converges on what they now ask."""
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
            adapter.drain_timeout = drain_timeout

    def connected_device(self, adapter_path: str) -> str | None:
        """The address of a device connected on the adapter, if any."""
        return self.links.on(adapter_path)

    def _look_interval(self) -> float:
        silence = min(self.silence_restart, self.silence_power_cycle)
        return min(WATCHDOG_MAX_LOOK_INTERVAL, silence / WATCHDOG_LOOKS_PER_SILENCE)

    async def _watch(self) -> None:
        """One look of the silence watchdog at every adapter (bluez/watchdog.py)."""
        assert self.report_counts is not None
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

    def _bluez_vanished(self) -> None:
        _LOGGER.warning("bluetoothd left the bus; discovery will be re-armed when it returns")
        self.owner = None
        self._held = None
        self._generation += 1
        for adapter in self.adapters.values():
            self._forget(adapter)
        self.adapters.clear()
        self.interfaces.clear()
        self.reports.clear()
        self.links.clear()

    # --- signals -----------------------------------------------------------------

    def _on_message(self, msg: Message) -> bool:
        if msg.message_type != MessageType.SIGNAL:
            return False
        try:
            change = owner_change(msg)
            if change is not None:
                self._name_owner_changed(*change)
            elif msg.sender == self.owner and self.owner is not None:
                if self._held is not None:
                    self._held.append(msg)
                else:
                    self._on_bluez_signal(msg)
        except Exception:
            # Nothing BlueZ sends may take the service down.
            _LOGGER.exception("error handling %s from %s", msg.member, msg.path)
        return False

    def _name_owner_changed(self, name: str, new: str) -> None:
        if name != BLUEZ_SERVICE:
            return
        # The owner we follow is gone (an exit, or a hand-over to a new one); the
        # signal for the owner we already know from GetNameOwner changes nothing.
        if self.owner is not None and new != self.owner:
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
            self.links.follow(path, changed, invalidated, self.reports.address_of(path))
            # With the channel, its frames are the reports (and the match is going).
            if not self.ingest.mgmt_active:
                self.reports.device_changed(path, changed, invalidated)
        elif interface == BLUEZ_ADAPTER:
            adapter = self.adapters.get(path)
            if adapter is not None:
                adapter.on_properties(changed)

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
            self.links.follow(path, device_props, [], self.reports.address_of(path))
            self.reports.device_added(path, device_props, initial, report, self.ingest.mgmt_active)

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
            adapter = AdapterDiscovery(
                path,
                props,
                manager,
                self.wants_for(name),
                call=self.call,
                links=self.links,
                claims=self.claims,
                on_listening=self.sink.listening,
                silence_restart=self.silence_restart,
                silence_power_cycle=self.silence_power_cycle,
                drain_timeout=self.drain_timeout,
                restarted_at=self.restarted_at,
                blocker=self.blocked.get(name),
            )
            self.adapters[path] = adapter
            _LOGGER.info("adapter %s (%s) appeared", adapter.name, adapter.address)
            adapter.start()
        elif adapter is not None and not had_manager and BLUEZ_MONITOR_MANAGER in known:
            _LOGGER.info("%s: advertisement monitor manager appeared", adapter.name)
            adapter.manager_changed(True)

    def _interfaces_removed(self, path: str, names: list[str]) -> None:
        if BLUEZ_DEVICE in names:
            # Presence is ours (docs/behaviour.md "Presence"): BlueZ dropping its object
            # after 30 s says nothing about the device being gone.
            self.reports.removed(path)
            self.links.drop(path)
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
                self.reports.drop_under(path)
                self.links.drop_under(path)
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
            adapter = self.adapters.get(mgmt.adapter_path(event.index))
            self.reports.found(event, duplicate=adapter is not None and adapter.session)
        elif isinstance(event, mgmt.Connected):
            self.links.connected(event.path, event.address)
        elif isinstance(event, mgmt.Disconnected):
            self.links.disconnected(event.path, event.address)
        elif isinstance(event, mgmt.Malformed):
            self.malformed("frame", f"malformed management frame: {event.reason}")
