"""One adapter's discovery on the bus: runs its state machine and makes the calls it asks for.

The decisions are :mod:`.discovery`'s; this module only feeds it events
(Adapter1 properties, the monitor manager coming and going, settings and
leases, our monitor's Activate and Release, the watchdog) and turns its
actions into calls to BlueZ, one at a time, each answer fed back as an event.

It also makes the watchdog's power cycle, which drops every link on the
adapter: never while a Device1 on it is connected, and only after taking the
adapter's bt-claims drain and waiting for other processes' links and uses
to go (:mod:`..claims`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

from dbus_fast import Variant

from ..bus.calls import BusGoneError, CallError
from ..const import (
    BLUEZ_ADAPTER,
    BLUEZ_ERROR_ALREADY_EXISTS,
    BLUEZ_ERROR_FAILED,
    BLUEZ_ERROR_IN_PROGRESS,
    BLUEZ_ERROR_NOT_READY,
    BLUEZ_MONITOR_MANAGER,
    ERROR_NAME_HAS_NO_OWNER,
    ERROR_SERVICE_UNKNOWN,
    ERROR_SPAWN_CHILD_EXITED,
    PROPERTIES,
    WATCHDOG_MAX_INTERVAL,
    WATCHDOG_MAX_POWER_CYCLES_PER_HOUR,
)
from ..core.record import adapter_name
from ..core.state import AdapterStatus
from . import claims
from .claimsdir import ClaimsDir, Drain, DrainHeld
from .discovery import (
    Action,
    AdapterState,
    Answered,
    BackoffOver,
    Blocker,
    Call,
    DiscoveringChanged,
    DrainWait,
    Event,
    ManagerChanged,
    MonitorReleased,
    OtherDrain,
    Outcome,
    PowerCycleDone,
    PoweredChanged,
    Register,
    ResetHeldOff,
    SilenceEnded,
    SilencePowerCycle,
    SilenceRestart,
    Start,
    Stop,
    Unregister,
    Wait,
    Wants,
    WantsChanged,
    Warn,
    begin,
    listening,
    step,
    text,
)
from .links import Links
from .monitors import MonitorApp
from .watchdog import SilenceLadder, WatchdogAction

_LOGGER = logging.getLogger(__name__)

# How often the claims and links are looked at while we wait to power-cycle:
# a link that goes is noticed within a second, and a directory listing of a
# few files a second costs nothing.
DRAIN_POLL_INTERVAL: Final = 1.0

# The filter we always set (docs/behaviour.md "Against BlueZ"): a real filter so
# BlueZ neither pauses 5 s between scan rounds nor hides non-discoverable
# advertisers; DuplicateData so every advertisement reaches us; never a Pattern,
# which would hide devices from every other BlueZ client. BlueZ src/adapter.c:
# IDLE_DISCOV_TIMEOUT, filtered_discovery, filter_duplicate_data and
# device_is_discoverable.
DISCOVERY_FILTER: Final = {"Transport": Variant("s", "le"), "DuplicateData": Variant("b", True)}

# Errors that mean "bluetoothd is not on the bus right now".
_BLUEZ_ABSENT: Final = frozenset(
    {ERROR_SERVICE_UNKNOWN, ERROR_NAME_HAS_NO_OWNER, ERROR_SPAWN_CHILD_EXITED}
)


def outcome_of(exc: CallError) -> Outcome:
    if exc.name == BLUEZ_ERROR_IN_PROGRESS:
        return Outcome.IN_PROGRESS
    if exc.name == BLUEZ_ERROR_NOT_READY:
        return Outcome.NOT_READY
    if exc.name in _BLUEZ_ABSENT:
        return Outcome.ABSENT
    return Outcome.REFUSED


class BluezCall(Protocol):
    """A call to bluetoothd (``Bluez.call``); raises CallError, TimeoutError or BusGoneError."""

    async def __call__(
        self,
        path: str,
        interface: str,
        member: str,
        signature: str = "",
        body: list[Any] | None = None,
    ) -> list[Any]: ...


class AdapterDiscovery:
    """Our discovery session and passive monitor on one adapter."""

    def __init__(
        self,
        path: str,
        props: Mapping[str, Any],
        monitor_manager: bool,
        wants: Wants,
        *,
        call: BluezCall,
        links: Links,
        claims: ClaimsDir | None,
        on_listening: Callable[[str, bool], None],
        silence_restart: float,
        silence_power_cycle: float,
        drain_timeout: float,
        restarted_at: float | None = None,
        blocker: Blocker | None = None,
    ) -> None:
        """``links``: bluetoothd's links, none of which a power cycle may drop;
        ``claims``: the bt-claims directory (None: no other process to coordinate with);
        ``on_listening``: told (adapter name, listening) whenever ``listening`` changes,
        first at ``start`` (the hub: devices lose no time while nothing listens);
        ``restarted_at``: when bluetoothd came back while we ran (discovery.py);
        ``blocker``: who held the controller when this adapter was last seen."""
        self.call = call
        self.on_listening = on_listening
        self.listening = False
        self.links = links
        self.claims = claims
        self.drain_timeout = drain_timeout
        self.path = path
        self.name = adapter_name(path + "/")
        self.address: str = props.get("Address", "")
        self.machine = AdapterState(
            powered=bool(props.get("Powered", False)),
            discovering=bool(props.get("Discovering", False)),
            manager=monitor_manager,
            appeared=time.monotonic(),
            restarted_at=restarted_at,
            wants=wants,
            blocker=blocker,
        )
        self.state = text(self.machine)
        self.starts = 0  # StartDiscovery attempts, for the status and the tests
        self.monitor = MonitorApp(self.name, self._monitor_activated, self._monitor_released)
        self.monitor_active = False  # BlueZ called Activate on our monitor
        # Watchdog: what a silence costs this adapter (see watchdog.py).
        self.ladder = SilenceLadder(
            restart_after=silence_restart,
            power_cycle_after=silence_power_cycle,
            max_power_cycles_per_hour=WATCHDOG_MAX_POWER_CYCLES_PER_HOUR,
            max_interval=WATCHDOG_MAX_INTERVAL,
        )
        self._falls = 0  # Discovering true → false, counted for the start in flight
        self._call: asyncio.Task[None] | None = None
        self._reset: asyncio.Task[None] | None = None  # the power cycle, drain wait included
        self._backoff: asyncio.TimerHandle | None = None
        self._closed = False

    # --- what the service shows ------------------------------------------------------

    @property
    def powered(self) -> bool:
        return self.machine.powered

    @property
    def discovering(self) -> bool:
        return self.machine.discovering

    @property
    def session(self) -> bool:
        return self.machine.session

    @property
    def monitor_registered(self) -> bool:
        return self.machine.monitor

    @property
    def enabled(self) -> bool:
        return self.machine.wants.enabled

    def status(self) -> AdapterStatus:
        return AdapterStatus(
            self.name,
            self.address,
            self.powered,
            self.discovering,
            self.session,
            self.state,
            listening=self.listening,
        )

    # --- events in -------------------------------------------------------------------

    def start(self) -> None:
        """The first state is logged as every change after it is (``feed``)."""
        _LOGGER.info("%s: %s", self.name, self.state)
        self.machine, actions = begin(self.machine)
        self.on_listening(self.name, False)  # until our session or monitor is up
        self._tell_listening()
        self._act(actions)

    def feed(self, event: Event) -> None:
        """One event into the machine; its actions are taken at once."""
        if self._closed:
            return
        before = self.state
        self.machine, actions = step(self.machine, event)
        self.state = text(self.machine)
        if not self.machine.monitor:
            self.monitor_active = False
        if self.state != before:
            _LOGGER.info("%s: %s", self.name, self.state)
        self._tell_listening()
        self._act(actions)

    def _tell_listening(self) -> None:
        now = listening(self.machine)
        if now != self.listening:
            self.listening = now
            self.on_listening(self.name, now)

    def on_properties(self, changed: Mapping[str, Variant]) -> None:
        """Adapter1's PropertiesChanged; Powered first, as a power-off also ends Discovering."""
        powered = changed.get("Powered")
        if powered is not None and powered.signature == "b":
            self.feed(PoweredChanged(powered.value))
        discovering = changed.get("Discovering")
        if discovering is not None and discovering.signature == "b":
            if self.discovering and not discovering.value:
                self._falls += 1
            self.feed(DiscoveringChanged(discovering.value, time.monotonic()))

    def manager_changed(self, present: bool) -> None:
        """AdvertisementMonitorManager1 was added to or removed from the adapter's object."""
        self.feed(ManagerChanged(present))

    def wants_changed(self, wants: Wants) -> None:
        if wants != self.machine.wants:
            self.feed(WantsChanged(wants))

    def _monitor_activated(self) -> None:
        self.monitor_active = True

    def _monitor_released(self) -> None:
        self.feed(MonitorReleased(time.monotonic()))

    # --- actions out -----------------------------------------------------------------

    def _act(self, actions: tuple[Action, ...]) -> None:
        for action in actions:
            if isinstance(action, Warn):
                _LOGGER.warning("%s: %s", self.name, action.message)
            elif isinstance(action, Wait):
                loop = asyncio.get_running_loop()
                self._backoff = loop.call_later(action.seconds, self.feed, BackoffOver())
            else:
                self._call = asyncio.get_running_loop().create_task(
                    self._make(action), name=f"{self.name}-{type(action).__name__}"
                )

    async def _make(self, action: Start | Stop | Register | Unregister) -> None:
        try:
            answer = await self._answer(action)
        except Exception:
            # A bug here must not end scanning on this adapter for good.
            _LOGGER.exception("%s: unexpected error; retrying", self.name)
            answer = Answered(_CALLS[type(action)], Outcome.TIMEOUT, time.monotonic())
        self.feed(answer)

    async def _answer(self, action: Start | Stop | Register | Unregister) -> Answered:
        if isinstance(action, Start):
            return await self._start(action.stop_first)
        if isinstance(action, Register):
            return await self._register()
        call, member = (
            (Call.STOP, "StopDiscovery") if isinstance(action, Stop) else (Call.UNREGISTER, "")
        )
        try:
            if member:
                await self.call(self.path, BLUEZ_ADAPTER, member)
            else:
                await self._unregister()
        except (CallError, TimeoutError, BusGoneError):
            pass  # our side is off either way
        return Answered(call, Outcome.OK, time.monotonic())

    async def _start(self, stop_first: bool) -> Answered:
        self.starts += 1
        try:
            if stop_first:
                try:
                    await self.call(self.path, BLUEZ_ADAPTER, "StopDiscovery")
                except CallError as exc:
                    if exc.name == BLUEZ_ERROR_IN_PROGRESS:
                        # bluez#807: the stop was refused but our session is gone.
                        _LOGGER.warning("%s: StopDiscovery refused (InProgress)", self.name)
                    elif exc.name != BLUEZ_ERROR_FAILED:
                        raise
            await self.call(
                self.path, BLUEZ_ADAPTER, "SetDiscoveryFilter", "a{sv}", [DISCOVERY_FILTER]
            )
            falls = self._falls
            await self.call(self.path, BLUEZ_ADAPTER, "StartDiscovery")
        except TimeoutError:
            return Answered(Call.START, Outcome.TIMEOUT, time.monotonic())
        except CallError as exc:
            return Answered(Call.START, outcome_of(exc), time.monotonic(), exc.text or exc.name)
        except BusGoneError as exc:
            return Answered(Call.START, Outcome.REFUSED, time.monotonic(), str(exc))
        return Answered(Call.START, Outcome.OK, time.monotonic(), dropped=self._falls != falls)

    async def _register(self) -> Answered:
        root = self.monitor.root
        try:
            await self.call(self.path, BLUEZ_MONITOR_MANAGER, "RegisterMonitor", "o", [root])
        except CallError as exc:
            if exc.name != BLUEZ_ERROR_ALREADY_EXISTS:
                return Answered(Call.REGISTER, Outcome.REFUSED, time.monotonic(), str(exc))
        except TimeoutError:
            return Answered(Call.REGISTER, Outcome.TIMEOUT, time.monotonic())
        except BusGoneError as exc:
            return Answered(Call.REGISTER, Outcome.REFUSED, time.monotonic(), str(exc))
        return Answered(Call.REGISTER, Outcome.OK, time.monotonic())

    async def _unregister(self) -> None:
        root = self.monitor.root
        await self.call(self.path, BLUEZ_MONITOR_MANAGER, "UnregisterMonitor", "o", [root])

    # --- the watchdog ------------------------------------------------------------------

    @property
    def watchdog_armed(self) -> bool:
        return self.ladder.armed

    @property
    def watchdog_step(self) -> int:
        return self.ladder.step

    @property
    def claim_keys(self) -> tuple[str, ...]:
        """The bt-claims keys of this adapter: its address (convention 0.4), its name (0.3)."""
        return claims.keys_for(self.address, self.name)

    def watch(self, count: int, now: float) -> WatchdogAction | None:
        """One watchdog look at this adapter's report count; returns the action due.

        Silence while a device on the adapter is connected is no fault (a
        connected peripheral usually stops advertising), and neither is
        silence while a reset (ours or another process's) is under way.
        """
        machine = self.machine
        scanning = (
            machine.wants.enabled
            and machine.powered
            and (machine.session or machine.monitor)
            and not (machine.drained_by or machine.draining or machine.cycling)
            and self.links.on(self.path) is None
        )
        action = self.ladder.look(count, now, scanning)
        if machine.held_off and self.ladder.step == 0:
            self.feed(SilenceEnded())
        return action

    def other_drain(self, by: str) -> None:
        """Another process's live drain on the adapter (``by``), or none (``""``)."""
        if by != self.machine.drained_by:
            self.feed(OtherDrain(by))

    async def restart_discovery(self) -> None:
        """Watchdog step 1: stop and start our session (and monitor) again."""
        self.feed(SilenceRestart())

    def begin_power_cycle(self) -> None:
        """Watchdog step 2, in the background: the drain wait may take DrainTimeout seconds."""
        if self._reset is None or self._reset.done():
            self._reset = asyncio.get_running_loop().create_task(
                self.power_cycle(), name=f"{self.name}-power-cycle"
            )

    async def power_cycle(self) -> None:
        """Power the adapter off and on, unless that would drop someone's link.

        The adapter's drain is taken first (exclusive, heartbeated) and other
        owners' ``.link.*`` / ``.use.*`` claims and connected Device1 objects
        get up to DrainTimeout seconds to go; whatever remains holds the
        power cycle off. Another process's drain means it resets the adapter
        itself: we make no call then.
        """
        directory = self.claims
        drain: Drain | None = None
        if directory is not None:
            try:
                drain = directory.take_drain(self.claim_keys[0])
            except DrainHeld as held:
                self.other_drain(held.claim.service)
                return
        heartbeat = asyncio.get_running_loop().create_task(self._heartbeat(drain))
        try:
            self.feed(DrainWait())
            deadline = time.monotonic() + self.drain_timeout
            # Polled: the links are files of other processes and BlueZ's objects.
            link = self._link_in_the_way()
            while link and time.monotonic() < deadline:
                await asyncio.sleep(DRAIN_POLL_INTERVAL)
                link = self._link_in_the_way()
            if not link:
                # The last look asks bluetoothd itself: a link's signal can be missing.
                await self.links.refresh(self.path)
                link = self._link_in_the_way()
            if link:
                self.feed(ResetHeldOff(link))
                return
            await self._power_off_and_on()
        finally:
            heartbeat.cancel()
            if drain is not None:
                drain.release()

    def _link_in_the_way(self) -> str:
        """Whose link a power cycle would drop now, in words; "" when none."""
        address = self.links.on(self.path)
        if address is not None:
            return f"a connection to {address}"
        directory = self.claims
        if directory is None:
            return ""
        veto = claims.vetoes(directory.read(self.claim_keys), directory.pid)
        return str(veto[0]) if veto else ""

    async def _heartbeat(self, drain: Drain | None) -> None:
        while drain is not None:
            await asyncio.sleep(claims.HEARTBEAT)
            drain.touch()

    async def _power_off_and_on(self) -> None:
        self.feed(SilencePowerCycle())
        try:
            for value in (False, True):
                await self.call(
                    self.path,
                    PROPERTIES,
                    "Set",
                    "ssv",
                    [BLUEZ_ADAPTER, "Powered", Variant("b", value)],
                )
        except (CallError, TimeoutError, BusGoneError) as exc:
            _LOGGER.warning("%s: power cycle failed: %s", self.name, exc)
        finally:
            self.feed(PowerCycleDone())

    # --- the end -----------------------------------------------------------------------

    def forget(self) -> None:
        """The adapter or bluetoothd is gone: no more calls, nothing to undo."""
        self._closed = True
        if self.listening:
            self.listening = False
            self.on_listening(self.name, False)
        if self._reset is not None:
            self._reset.cancel()  # its finally releases our drain
        if self._backoff is not None:
            self._backoff.cancel()
        if self._call is not None:
            self._call.cancel()

    async def close(self, stop_session: bool) -> None:
        """Stop (if asked) what we hold on the adapter; bounded by the call timeout."""
        self.forget()
        if self._call is not None:
            try:
                await self._call
            except asyncio.CancelledError:
                pass
            self._call = None
        if not stop_session:
            return
        busy = self.machine.busy
        if self.machine.session or busy is Call.START:
            try:
                await self.call(self.path, BLUEZ_ADAPTER, "StopDiscovery")
            except (CallError, TimeoutError, BusGoneError):
                pass
        if self.machine.monitor or busy is Call.REGISTER:
            try:
                await self._unregister()
            except (CallError, TimeoutError, BusGoneError):
                pass


_CALLS: Final = {
    Start: Call.START,
    Stop: Call.STOP,
    Register: Call.REGISTER,
    Unregister: Call.UNREGISTER,
}
