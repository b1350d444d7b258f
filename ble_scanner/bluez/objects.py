"""The BlueZ side: follow org.bluez, keep every adapter discovering, turn Device1 into reports.

One connection, explicit match rules, one message handler, no proxy objects
(as bleak's BlueZManager does). D-Bus types are checked here, at the edge;
anything malformed is counted and logged (rate-limited), never passed on.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from dbus_fast import Message, MessageFlag, MessageType, Variant
from dbus_fast.aio import MessageBus

from ..const import (
    BLUEZ_ADAPTER,
    BLUEZ_CALL_TIMEOUT,
    BLUEZ_DEVICE,
    BLUEZ_ERROR_ALREADY_EXISTS,
    BLUEZ_ERROR_FAILED,
    BLUEZ_ERROR_IN_PROGRESS,
    BLUEZ_ERROR_NOT_READY,
    BLUEZ_MONITOR_MANAGER,
    BLUEZ_ROOT_PATH,
    BLUEZ_SERVICE,
    DBUS_INTERFACE,
    DBUS_PATH,
    DBUS_SERVICE,
    ERROR_NAME_HAS_NO_OWNER,
    ERROR_SERVICE_UNKNOWN,
    ERROR_SPAWN_CHILD_EXITED,
    OBJECT_MANAGER,
    PROPERTIES,
    REARM_BACKOFF_INITIAL,
    REARM_BACKOFF_MAX,
    WATCHDOG_MAX_INTERVAL,
    WATCHDOG_MAX_POWER_CYCLES_PER_HOUR,
    WATCHDOG_SILENCE,
)
from ..leases import LeaseKind, LeaseRegistry
from ..record import DeviceView, MalformedData, adapter_name
from ..record import unwrap_device as _unwrap_device
from ..state import AdapterStatus
from ..watchdog import SilenceLadder, WatchdogAction
from .monitors import MonitorApp, is_call_for_monitor_app

_LOGGER = logging.getLogger(__name__)

# The filter we always set (SPEC §6): a real filter so BlueZ neither pauses 5 s
# between scan rounds nor hides non-discoverable advertisers; DuplicateData so
# every advertisement reaches us; never a Pattern, which would hide devices
# from every other BlueZ client (notes §2.3).
DISCOVERY_FILTER: Final = {"Transport": Variant("s", "le"), "DuplicateData": Variant("b", True)}

# Errors that mean "bluetoothd is not on the bus right now".
_BLUEZ_ABSENT: Final = frozenset(
    {ERROR_SERVICE_UNKNOWN, ERROR_NAME_HAS_NO_OWNER, ERROR_SPAWN_CHILD_EXITED}
)
# A session that stayed up this long ends the backoff: the adapter works again.
STABLE_SESSION_SECONDS: Final = 10.0
# After bluetoothd (re)appears the kernel may still run the dead daemon's LE
# discovery and refuse ours with InProgress until it times out (DISCOV_LE_TIMEOUT
# 10.24 s; measured 10.0-10.4 s on 5.66 and 5.82, tests/realbluez): for this
# long after an adapter appears, InProgress is retried at a steady pace.
ORPHAN_SCAN_WINDOW: Final = 12.0
# The failure count whose backoff() is that pace: 0.5 s.
ORPHAN_SCAN_RETRY_FAILURES: Final = 3
# At most one log line per kind of malformed data per this many seconds.
MALFORMED_LOG_INTERVAL: Final = 60.0


class ScanMode(enum.Enum):
    """How an adapter listens (README "Scan modes")."""

    ACTIVE = "active"  # StartDiscovery: scan requests, names from scan responses
    PASSIVE = "passive"  # AdvertisementMonitor1: no scan requests, needs bluetoothd -E
    AUTO = "auto"  # passive, with active windows while a client holds a lease


class BluezError(Exception):
    def __init__(self, name: str, text: str) -> None:
        super().__init__(f"{name}: {text}")
        self.name = name
        self.text = text


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


class AdapterDiscovery:
    """Our discovery session on one adapter, kept alive by one task.

    We track our own session and never infer it from ``Discovering``, which
    other clients (or a raw-HCI scanner) also move (SPEC §6).
    """

    def __init__(self, bluez: Bluez, path: str, props: Mapping[str, Any]) -> None:
        self.bluez = bluez
        self.path = path
        self.name = adapter_name(path + "/")
        self.address: str = props.get("Address", "")
        self.powered: bool = bool(props.get("Powered", False))
        self.discovering: bool = bool(props.get("Discovering", False))
        self.session = False
        self.state = "starting"
        self.appeared = time.monotonic()
        self.failures = 0
        self.starts = 0  # StartDiscovery attempts, for the status and the tests
        self.session_since = 0.0
        self.stop_first = False
        # Discovering fell while our StartDiscovery was in flight (see _arm).
        self.dropped_while_starting = False
        # InProgress with Discovering false: another scanner holds the controller,
        # or (orphan) the kernel still runs the scan of a bluetoothd that died.
        self.blocked = False
        self.blocked_by_orphan = False
        # Passive scanning through our AdvertisementMonitor1 application.
        self.monitor_available = bool(props.get("_monitor_manager", False))
        self.monitor_registered = False
        self.monitor_active = False
        self.monitor = MonitorApp(self.name, self._monitor_activated, self._monitor_released)
        # Watchdog: what a silence costs this adapter (see watchdog.py).
        self.ladder = SilenceLadder(
            silence=bluez.watchdog_silence,
            max_power_cycles_per_hour=WATCHDOG_MAX_POWER_CYCLES_PER_HOUR,
            max_interval=WATCHDOG_MAX_INTERVAL,
        )
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        wanted = self.bluez.adapters_wanted
        return not wanted or self.name in wanted

    def status(self) -> AdapterStatus:
        return AdapterStatus(
            self.name, self.address, self.powered, self.discovering, self.session, self.state
        )

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"arm-{self.name}")
        self._wake.set()

    async def close(self, stop_session: bool) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if stop_session and self.session:
            await self.close_session()
        if stop_session and self.monitor_registered:
            await self._unregister_monitor()

    def poke(self) -> None:
        self._wake.set()

    def on_properties(self, changed: Mapping[str, Variant]) -> None:
        powered = changed.get("Powered")
        if powered is not None and powered.signature == "b":
            self.powered = powered.value
            if not self.powered:
                # BlueZ drops every session on power-off and does not restore
                # them on power-on (notes §2.1 adapter_stop).
                self.session = False
            self.bluez.status_changed()
            self.poke()
        discovering = changed.get("Discovering")
        if discovering is not None and discovering.signature == "b":
            was = self.discovering
            self.discovering = discovering.value
            if was and not self.discovering:
                self.dropped_while_starting = True
            if was and not self.discovering and self.session:
                # The kernel or BlueZ stopped the scan under us; BlueZ may still
                # count our session, so stop it before starting again.
                _LOGGER.warning("%s: discovery stopped under us; re-arming", self.name)
                self.session = False
                self.stop_first = True
                self._failed()
            self.bluez.status_changed()
            self.poke()

    def _failed(self) -> None:
        if self.session_since and time.monotonic() - self.session_since >= STABLE_SESSION_SECONDS:
            self.failures = 0
        self.session_since = 0.0
        self.failures += 1

    def backoff(self) -> float:
        if self.failures <= 1:
            return 0.0
        return float(min(REARM_BACKOFF_INITIAL * 2 ** (self.failures - 2), REARM_BACKOFF_MAX))

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            _LOGGER.info("%s: %s", self.name, state)
            self.bluez.status_changed()

    def wants(self) -> tuple[bool, bool]:
        """(discovery session, passive monitor) this adapter should have now."""
        bluez = self.bluez
        mode = bluez.scan_mode
        paused = bluez.leases.wants(self.name, LeaseKind.PAUSE)
        if mode is ScanMode.ACTIVE:
            session = True
            monitor = self.blocked and self.monitor_available
        elif mode is ScanMode.PASSIVE:
            # Without the monitor manager (bluetoothd without -E) passive is
            # impossible; scanning actively beats not scanning at all.
            session = not self.monitor_available
            monitor = self.monitor_available
        else:
            session = not self.monitor_available or bluez.leases.wants(self.name, LeaseKind.ACTIVE)
            monitor = self.monitor_available
        return session and not paused, monitor

    def describe(self) -> str:
        """The adapter's state in words, for /Adapters/<hciN>/State and the CLI."""
        session, monitor = self.session, self.monitor_registered
        if self.bluez.leases.wants(self.name, LeaseKind.PAUSE) and not session:
            return "paused for a connection" + (" (passive scanning)" if monitor else "")
        if self.blocked and not session:
            if self.blocked_by_orphan:
                if monitor:
                    return "scanning (passive until the old bluetoothd's scan ends)"
                return "waiting for the old bluetoothd's scan to end"
            if monitor:
                return "scanning (passive: another scanner holds the controller)"
            return "blocked by another scanner"
        mode = self.bluez.scan_mode
        if session and monitor:
            return "scanning (active window)" if mode is not ScanMode.ACTIVE else "scanning"
        if session:
            if mode is ScanMode.ACTIVE:
                return "scanning"
            return "scanning (active: passive scanning unavailable)"
        if monitor:
            return "scanning (passive)"
        return self.state

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._converge()
            except Exception:
                # A bug here must not end scanning on this adapter for good.
                _LOGGER.exception("%s: unexpected error; retrying", self.name)
                self._failed()
                self.poke()

    async def _converge(self) -> None:
        if not self.enabled:
            if self.session:
                await self.close_session()
            if self.monitor_registered:
                await self._unregister_monitor()
            self._set_state("not used (settings)")
            return
        if not self.powered:
            self._set_state("powered off")
            return
        want_session, want_monitor = self.wants()
        if self.session and not want_session:
            await self.close_session()
        if want_monitor and not self.monitor_registered:
            await self._register_monitor()
        elif self.monitor_registered and not want_monitor:
            await self._unregister_monitor()
        if want_session and not self.session:
            delay = self.backoff()
            if delay:
                self._set_state(self.describe())
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                    # Something changed meanwhile (power, settings, leases):
                    # look again, but keep the failure count.
                    self._wake.set()
                    return
                except TimeoutError:
                    pass
            await self._arm()
        self._set_state(self.describe())

    async def _register_monitor(self) -> None:
        try:
            await self.bluez.call(
                self.path, BLUEZ_MONITOR_MANAGER, "RegisterMonitor", "o", [self.monitor.root]
            )
        except BluezError as exc:
            if exc.name != BLUEZ_ERROR_ALREADY_EXISTS:
                # Passive scanning cannot work here (no -E, old kernel, refused):
                # say so once and let the mode fall back to active discovery.
                _LOGGER.warning("%s: passive scanning unavailable: %s", self.name, exc)
                self.monitor_available = False
                self.poke()
                return
        except TimeoutError:
            self._failed()
            self.poke()
            return
        self.monitor_registered = True

    async def _unregister_monitor(self) -> None:
        self.monitor_registered = False
        self.monitor_active = False
        try:
            await self.bluez.call(
                self.path, BLUEZ_MONITOR_MANAGER, "UnregisterMonitor", "o", [self.monitor.root]
            )
        except (BluezError, TimeoutError):
            pass

    @property
    def watchdog_armed(self) -> bool:
        return self.ladder.armed

    @property
    def watchdog_step(self) -> int:
        return self.ladder.step

    def watch(self, count: int, now: float) -> WatchdogAction | None:
        """One watchdog look at this adapter's report count; returns the action due."""
        scanning = self.enabled and self.powered and (self.session or self.monitor_registered)
        return self.ladder.look(count, now, scanning)

    async def restart_discovery(self) -> None:
        """Watchdog step 1: stop and start our session (and monitor) again."""
        _LOGGER.warning("%s: no reports for a while; restarting discovery", self.name)
        self._set_state("restarting discovery (adapter went silent)")
        if self.session:
            self.session = False
            self.stop_first = True
        if self.monitor_registered:
            await self._unregister_monitor()
        self.poke()

    async def power_cycle(self) -> None:
        """Watchdog step 2: power the adapter off and on; BlueZ then needs us to re-arm."""
        _LOGGER.warning("%s: still silent after a restart; power-cycling the adapter", self.name)
        self._set_state("power-cycling (adapter went silent)")
        for value in (False, True):
            try:
                await self.bluez.call(
                    self.path,
                    PROPERTIES,
                    "Set",
                    "ssv",
                    [BLUEZ_ADAPTER, "Powered", Variant("b", value)],
                )
            except (BluezError, TimeoutError) as exc:
                _LOGGER.warning("%s: power cycle failed: %s", self.name, exc)
                return

    def _monitor_activated(self) -> None:
        self.monitor_active = True
        self.bluez.status_changed()

    def _monitor_released(self) -> None:
        # BlueZ calls Release on each monitor, also when we unregistered them:
        # only the first Release of a registration we still hold is news.
        if not self.monitor_registered:
            return
        # BlueZ dropped our monitors (adapter reset, bluetoothd going away):
        # register again, with the backoff if it keeps happening.
        _LOGGER.warning("%s: BlueZ released our advertisement monitor", self.name)
        self.monitor_registered = False
        self.monitor_active = False
        self._failed()
        self.poke()

    async def close_session(self) -> None:
        self.session = False
        try:
            await self.bluez.call_adapter(self.path, "StopDiscovery")
        except (BluezError, TimeoutError):
            pass

    async def _arm(self) -> None:
        self.starts += 1
        try:
            if self.stop_first:
                self.stop_first = False
                try:
                    await self.bluez.call_adapter(self.path, "StopDiscovery")
                except BluezError as exc:
                    if exc.name == BLUEZ_ERROR_IN_PROGRESS:
                        # bluez#807: the stop was refused but our session is gone.
                        _LOGGER.warning("%s: StopDiscovery refused (InProgress)", self.name)
                    elif exc.name != BLUEZ_ERROR_FAILED:
                        raise
            await self.bluez.call_adapter(
                self.path, "SetDiscoveryFilter", "a{sv}", [DISCOVERY_FILTER]
            )
            self.dropped_while_starting = False
            await self.bluez.call_adapter(self.path, "StartDiscovery")
        except TimeoutError:
            self._failed()
            self._set_state("error: BlueZ did not answer")
        except BluezError as exc:
            self._on_start_error(exc)
        else:
            if self.dropped_while_starting and not self.discovering:
                # BlueZ replied, Discovering rose and fell again before this task
                # resumed, so on_properties could not tell the session was ours.
                _LOGGER.warning("%s: discovery stopped as it started; re-arming", self.name)
                self.stop_first = True
                self._failed()
            else:
                self.session = True
                self.blocked = False
                self.session_since = time.monotonic()
                return
        self.poke()  # try again after the backoff

    def _on_start_error(self, exc: BluezError) -> None:
        self._failed()
        if exc.name in _BLUEZ_ABSENT:
            self._set_state("waiting for bluetoothd")
            return
        if exc.name == BLUEZ_ERROR_NOT_READY:
            self.powered = False
            self._set_state("powered off")
            return
        if exc.name == BLUEZ_ERROR_IN_PROGRESS:
            if self.discovering:
                # Either we already hold a session BlueZ knows of and we do
                # not, or the controller refused: stop ours, then start.
                self.stop_first = True
                self._set_state("restarting discovery (InProgress)")
            else:
                # The kernel refused while nobody scans through BlueZ: a raw
                # HCI scanner (dbus-ble-sensors, venus#1597) holds the controller,
                # or, just after bluetoothd appeared, a crashed one's scan does.
                now = time.monotonic()
                restarted_at = self.bluez.restarted_at
                self.blocked = True
                self.blocked_by_orphan = (
                    restarted_at is not None and now - restarted_at < ORPHAN_SCAN_WINDOW
                )
                if now - self.appeared < ORPHAN_SCAN_WINDOW:
                    self.failures = min(self.failures, ORPHAN_SCAN_RETRY_FAILURES)
                self._set_state(self.describe())
            return
        self._set_state(f"error: {exc.text or exc.name}")


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
        watchdog_silence: float = WATCHDOG_SILENCE,
    ) -> None:
        self.bus = bus
        self.on_report = on_report
        self.on_status = on_status
        self.adapters_wanted = adapters_wanted
        self.call_timeout = call_timeout
        self.scan_mode = scan_mode
        self.leases = leases if leases is not None else LeaseRegistry()
        self._lease_timer: asyncio.TimerHandle | None = None
        self.report_counts = report_counts
        self.watchdog_silence = watchdog_silence
        self._watchdog: asyncio.Task[None] | None = None
        self.owner: str | None = None
        # When bluetoothd came back while we ran: a refusal soon after is most
        # likely the old daemon's scan, which the kernel ends by itself.
        self.restarted_at: float | None = None
        self.adapters: dict[str, AdapterDiscovery] = {}  # by object path
        self.views: dict[str, DeviceView] = {}  # by Device1 object path
        self.malformed = RateLimitedLog()
        self._generation = 0
        self._closing = False

    # --- life cycle --------------------------------------------------------------

    async def start(self) -> None:
        self.bus.add_message_handler(self._on_message)
        self.bus.add_message_handler(self._on_monitor_call)
        if self.report_counts is not None:
            self._watchdog = asyncio.get_running_loop().create_task(
                self._run_watchdog(), name="watchdog"
            )
        for rule in (
            f"type='signal',sender='{DBUS_SERVICE}',interface='{DBUS_INTERFACE}',"
            f"member='NameOwnerChanged',arg0='{BLUEZ_SERVICE}'",
            f"type='signal',sender='{BLUEZ_SERVICE}',interface='{OBJECT_MANAGER}',path='/'",
            f"type='signal',sender='{BLUEZ_SERVICE}',interface='{PROPERTIES}',"
            f"member='PropertiesChanged',path_namespace='{BLUEZ_ROOT_PATH}'",
        ):
            await self._call(DBUS_SERVICE, DBUS_PATH, DBUS_INTERFACE, "AddMatch", "s", [rule])
        try:
            owner = await self._call(
                DBUS_SERVICE, DBUS_PATH, DBUS_INTERFACE, "GetNameOwner", "s", [BLUEZ_SERVICE]
            )
        except BluezError:
            _LOGGER.warning("bluetoothd is not on the bus; waiting for it")
            return
        await self._bluez_appeared(owner[0])

    async def close(self, stop_sessions: bool = True) -> None:
        """Stop our sessions (bounded by the call timeout) and forget everything."""
        self._closing = True
        if self._lease_timer is not None:
            self._lease_timer.cancel()
        if self._watchdog is not None:
            self._watchdog.cancel()
        self.bus.remove_message_handler(self._on_message)
        adapters = list(self.adapters.values())
        self.adapters.clear()
        await asyncio.gather(*(a.close(stop_sessions) for a in adapters))

    def set_adapters_wanted(self, wanted: frozenset[str]) -> None:
        self.adapters_wanted = wanted
        self._poke_all()

    def set_scan_mode(self, mode: ScanMode) -> None:
        if mode is not self.scan_mode:
            _LOGGER.info("scan mode %s", mode.value)
            self.scan_mode = mode
            self._poke_all()

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
        self._poke_all()

    async def _run_watchdog(self) -> None:
        assert self.report_counts is not None
        interval = min(5.0, self.watchdog_silence / 4)
        while True:
            await asyncio.sleep(interval)
            counts = self.report_counts()
            now = time.monotonic()
            for adapter in list(self.adapters.values()):
                action = adapter.watch(counts.get(adapter.name, 0), now)
                try:
                    if action is WatchdogAction.RESTART:
                        await adapter.restart_discovery()
                    elif action is WatchdogAction.POWER_CYCLE:
                        await adapter.power_cycle()
                except Exception:
                    _LOGGER.exception("%s: watchdog action failed", adapter.name)

    def _poke_all(self) -> None:
        for adapter in self.adapters.values():
            adapter.poke()

    def _on_monitor_call(self, msg: Message) -> Message | bool:
        if not is_call_for_monitor_app(msg):
            return False
        for adapter in self.adapters.values():
            if adapter.monitor.owns(msg.path or ""):
                return adapter.monitor.handle(msg)
        if msg.flags & MessageFlag.NO_REPLY_EXPECTED:
            return True  # e.g. BlueZ's Release after we dropped the adapter
        return Message.new_error(
            msg, "org.freedesktop.DBus.Error.UnknownObject", f"no object {msg.path}"
        )

    def status_changed(self) -> None:
        self.on_status()

    # --- calls -------------------------------------------------------------------

    async def _call(
        self,
        destination: str,
        path: str,
        interface: str,
        member: str,
        signature: str = "",
        body: list[Any] | None = None,
    ) -> list[Any]:
        message = Message(
            destination=destination,
            path=path,
            interface=interface,
            member=member,
            signature=signature,
            body=body or [],
        )
        reply = await asyncio.wait_for(self.bus.call(message), self.call_timeout)
        assert reply is not None
        if reply.message_type == MessageType.ERROR:
            text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
            raise BluezError(reply.error_name or "", text)
        return list(reply.body)

    async def call_adapter(
        self, path: str, member: str, signature: str = "", body: list[Any] | None = None
    ) -> list[Any]:
        return await self._call(BLUEZ_SERVICE, path, BLUEZ_ADAPTER, member, signature, body)

    async def call(
        self,
        path: str,
        interface: str,
        member: str,
        signature: str = "",
        body: list[Any] | None = None,
    ) -> list[Any]:
        return await self._call(BLUEZ_SERVICE, path, interface, member, signature, body)

    # --- bluetoothd comes and goes -----------------------------------------------

    async def _bluez_appeared(self, owner: str) -> None:
        self.owner = owner
        self._generation += 1
        generation = self._generation
        try:
            (objects,) = await self._call(BLUEZ_SERVICE, "/", OBJECT_MANAGER, "GetManagedObjects")
        except (BluezError, TimeoutError) as exc:
            _LOGGER.warning("GetManagedObjects failed: %s", exc)
            return
        if generation != self._generation or self._closing:
            return  # bluetoothd went away (or we are stopping) meanwhile
        _LOGGER.info("bluetoothd is on the bus as %s", owner)
        for path, interfaces in sorted(objects.items()):
            self._interfaces_added(path, interfaces, initial=True)
        self.status_changed()

    def _bluez_vanished(self) -> None:
        _LOGGER.warning("bluetoothd left the bus; discovery will be re-armed when it returns")
        self.owner = None
        self._generation += 1
        for adapter in self.adapters.values():
            adapter.session = False
            if adapter._task is not None:
                adapter._task.cancel()
        self.adapters.clear()
        self.views.clear()
        self.status_changed()

    # --- signals -----------------------------------------------------------------

    def _on_message(self, msg: Message) -> bool:
        if msg.message_type != MessageType.SIGNAL:
            return False
        member = msg.member
        try:
            if member == "PropertiesChanged" and msg.sender == self.owner:
                self._properties_changed(msg)
            elif member == "InterfacesAdded" and msg.sender == self.owner and msg.path == "/":
                if msg.signature == "oa{sa{sv}}":
                    path, interfaces = msg.body
                    self._interfaces_added(path, interfaces)
                else:
                    self.malformed("signature", f"InterfacesAdded with signature {msg.signature}")
            elif member == "InterfacesRemoved" and msg.sender == self.owner and msg.path == "/":
                if msg.signature == "oas":
                    path, names = msg.body
                    self._interfaces_removed(path, names)
            elif (
                member == "NameOwnerChanged"
                and msg.sender == DBUS_SERVICE
                and msg.signature == "sss"
                and msg.body[0] == BLUEZ_SERVICE
            ):
                _, old, new = msg.body
                if old and self.owner is not None:
                    self._bluez_vanished()
                if new and not self._closing:
                    self.restarted_at = time.monotonic()
                    asyncio.get_running_loop().create_task(self._bluez_appeared(new))
        except Exception:
            # Nothing BlueZ sends may take the service down.
            _LOGGER.exception("error handling %s from %s", member, msg.path)
        return False

    def _properties_changed(self, msg: Message) -> None:
        if msg.signature != "sa{sv}as":
            self.malformed("signature", f"PropertiesChanged with signature {msg.signature}")
            return
        interface, changed, invalidated = msg.body
        path = msg.path or ""
        if interface == BLUEZ_DEVICE:
            view = self.views.get(path)
            if view is not None:
                self._update_view(view, changed, invalidated)
        elif interface == BLUEZ_ADAPTER:
            adapter = self.adapters.get(path)
            if adapter is not None:
                adapter.on_properties(changed)

    def _update_view(
        self, view: DeviceView, changed: Mapping[str, Variant], invalidated: list[str]
    ) -> None:
        try:
            is_report = view.update(_unwrap_device(changed), invalidated)
        except (MalformedData, AttributeError, TypeError, ValueError) as exc:
            self.malformed("device", f"malformed Device1 data from {view.path}: {exc}")
            return
        if is_report:
            self.on_report(view)

    def _interfaces_added(
        self, path: str, interfaces: Mapping[str, Mapping[str, Variant]], initial: bool = False
    ) -> None:
        adapter_props = interfaces.get(BLUEZ_ADAPTER)
        if BLUEZ_MONITOR_MANAGER in interfaces and path in self.adapters:
            self.adapters[path].monitor_available = True
            self.adapters[path].poke()
        if adapter_props is not None and path not in self.adapters:
            props = {k: v.value for k, v in adapter_props.items()}
            props["_monitor_manager"] = BLUEZ_MONITOR_MANAGER in interfaces
            adapter = AdapterDiscovery(self, path, props)
            self.adapters[path] = adapter
            _LOGGER.info("adapter %s (%s) appeared", adapter.name, adapter.address)
            adapter.start()
            self.status_changed()
        device_props = interfaces.get(BLUEZ_DEVICE)
        if device_props is not None:
            view = self.views.get(path)
            if view is None:
                view = DeviceView(path, adapter_name(path))
            try:
                is_report = view.update(_unwrap_device(device_props))
            except (MalformedData, AttributeError, TypeError, ValueError) as exc:
                self.malformed("device", f"malformed Device1 data from {path}: {exc}")
                return
            if not view.address:
                self.malformed("device", f"Device1 {path} without an Address")
                return
            self.views[path] = view
            # A new object is a fresh report; one found at start-up is only a
            # report if it carries an RSSI, i.e. was heard in a running discovery.
            if is_report and (not initial or view.rssi is not None):
                self.on_report(view)

    def _interfaces_removed(self, path: str, names: list[str]) -> None:
        if BLUEZ_DEVICE in names:
            # Presence is ours to decide (SPEC §6): BlueZ dropping its object
            # after 30 s says nothing about the device being gone.
            self.views.pop(path, None)
        if BLUEZ_MONITOR_MANAGER in names and path in self.adapters:
            self.adapters[path].monitor_available = False
            self.adapters[path].monitor_registered = False
            self.adapters[path].poke()
        if BLUEZ_ADAPTER in names:
            adapter = self.adapters.pop(path, None)
            if adapter is not None:
                _LOGGER.warning("adapter %s disappeared", adapter.name)
                adapter.session = False
                asyncio.get_running_loop().create_task(adapter.close(stop_session=False))
                prefix = path + "/"
                for view_path in [p for p in self.views if p.startswith(prefix)]:
                    del self.views[view_path]
                self.status_changed()

    def adapter_statuses(self) -> list[AdapterStatus]:
        return [a.status() for a in sorted(self.adapters.values(), key=lambda a: a.name)]
