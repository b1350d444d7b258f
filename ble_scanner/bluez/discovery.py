"""One adapter's discovery as a state machine: pure logic, no I/O, no dbus-fast.

We listen on an adapter in up to two ways: our discovery session
(StartDiscovery, active scanning) and our advertisement monitor
(RegisterMonitor, passive scanning; bluetoothd -E). :class:`AdapterState` is
everything the machine knows about one adapter; :func:`step` takes it and one
:data:`Event` and returns the next state and the :data:`Action` s to take.
:func:`activity` names what the adapter is doing, and :attr:`Activity.value` is
the text users see in GetStatus ``Adapters`` → ``State``, in the Venus tree
(/Adapters/<hciN>/State) and in the CLI; being derived from the state, the text
cannot lag behind it.

``adapter.py`` runs the machine: it feeds events from BlueZ, the settings,
the leases and the watchdog, makes the calls the actions ask for, one at a
time, and feeds each answer back as :class:`Answered`.

We track our own session and never infer it from ``Discovering``, which
other clients (or a raw-HCI scanner) also move (BlueZ keeps one session per
D-Bus sender: src/adapter.c ``discovery_client``; tests/README.md "How the
service behaves against BlueZ").

A power cycle drops every link on the adapter, so ``adapter.py`` takes the
bt-claims drain and waits for other processes' links first (docs/behaviour.md "Other
processes' links and claims"); the machine only records where that stands:
waiting (:class:`DrainWait`), held off (:class:`ResetHeldOff`), or going
ahead (:class:`SilencePowerCycle`). While another process drains the adapter
(:class:`OtherDrain`) the machine makes no call at all: that process is about
to reset it, and starting again would only put new work on it.

Activities, and the events that lead out of them (every one also takes
:class:`WantsChanged` and :class:`PoweredChanged`, which lead to "not used",
"paused" or "powered off"):

=========================================================  =======================================
text (``Activity.value``)                                  left on
=========================================================  =======================================
starting                                                   Answered START (the first answer)
not used (settings)                                        WantsChanged (the adapter wanted again)
powered off                                                PoweredChanged(True)
waiting for bluetoothd                                     Answered START (the next answer)
scanning                                                   DiscoveringChanged(False), SilenceRestart
scanning (active window)                                   WantsChanged (the lease ends)
scanning (active: passive scanning unavailable)            ManagerChanged(True)
scanning (passive)                                         ManagerChanged(False), MonitorReleased
paused for a connection [(passive scanning)]               WantsChanged (the pause ends)
blocked by another scanner                                 Answered REGISTER ok, Answered START ok
scanning (passive: another scanner holds the controller)   Answered START ok (the scanner left)
waiting for the old bluetoothd's scan to end               Answered REGISTER ok, Answered START ok
scanning (passive until the old bluetoothd's scan ends)    Answered START ok (the kernel ended it)
restarting discovery (InProgress)                          Answered START (the next answer)
restarting discovery (adapter went silent)                 Answered REGISTER ok, Answered START ok
waiting for other links to close before a power cycle      SilencePowerCycle, ResetHeldOff
power-cycling (adapter went silent)                        PoweredChanged(False), PowerCycleDone
reset held off by <who> (a link we must not drop)          SilenceEnded, SilencePowerCycle
being reset by <service> (another process's drain)         OtherDrain("") (no calls until then)
error: BlueZ did not answer                                Answered START (the next answer)
error: <BlueZ's error text>                                Answered START (the next answer)
=========================================================  =======================================
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from ..const import (
    ORPHAN_SCAN_RETRY_FAILURES,
    ORPHAN_SCAN_WINDOW,
    REARM_BACKOFF_INITIAL,
    REARM_BACKOFF_MAX,
    STABLE_SESSION_SECONDS,
)
from ..modes import ScanMode


class Activity(enum.Enum):
    """What an adapter is doing; the value is the text users see."""

    STARTING = "starting"
    NOT_USED = "not used (settings)"
    POWERED_OFF = "powered off"
    WAITING_FOR_BLUETOOTHD = "waiting for bluetoothd"
    SCANNING = "scanning"
    ACTIVE_WINDOW = "scanning (active window)"
    ACTIVE_FALLBACK = "scanning (active: passive scanning unavailable)"
    PASSIVE = "scanning (passive)"
    PAUSED = "paused for a connection"
    PAUSED_PASSIVE = "paused for a connection (passive scanning)"
    BLOCKED = "blocked by another scanner"
    BLOCKED_PASSIVE = "scanning (passive: another scanner holds the controller)"
    OLD_SCAN = "waiting for the old bluetoothd's scan to end"
    OLD_SCAN_PASSIVE = "scanning (passive until the old bluetoothd's scan ends)"
    RESTARTING_IN_PROGRESS = "restarting discovery (InProgress)"
    RESTARTING_SILENT = "restarting discovery (adapter went silent)"
    DRAINING = "waiting for other links to close before a power cycle"
    POWER_CYCLING = "power-cycling (adapter went silent)"
    HELD_OFF = "reset held off by {}"  # who holds the link: "dbus-serialbattery pid 812"
    BEING_RESET = "being reset by {}"  # the service that holds the adapter's drain
    NO_ANSWER = "error: BlueZ did not answer"
    ERROR = "error: {}"  # with BlueZ's error text (or name)


class Blocker(enum.Enum):
    """Who holds the controller when the kernel refuses our StartDiscovery."""

    OTHER_SCANNER = "other scanner"  # a raw-HCI scanner (dbus-ble-sensors, venus#1597)
    OLD_BLUETOOTHD = "old bluetoothd"  # a crashed bluetoothd's scan, ended by the kernel


class Call(enum.Enum):
    """The calls the machine asks for; each is answered with :class:`Answered`."""

    START = "start"  # [StopDiscovery,] SetDiscoveryFilter, StartDiscovery
    STOP = "stop"  # StopDiscovery: end our session
    REGISTER = "register"  # RegisterMonitor of our application
    UNREGISTER = "unregister"  # UnregisterMonitor


class Outcome(enum.Enum):
    """How BlueZ answered a call, as far as the machine cares."""

    OK = "ok"  # also AlreadyExists for RegisterMonitor: the monitor is ours already
    IN_PROGRESS = "in progress"  # org.bluez.Error.InProgress
    NOT_READY = "not ready"  # org.bluez.Error.NotReady: the adapter is off
    ABSENT = "absent"  # bluetoothd is not on the bus
    TIMEOUT = "timeout"  # no answer within the call timeout
    REFUSED = "refused"  # any other error; its text goes with it


@dataclass(frozen=True, slots=True)
class Wants:
    """What the settings and the leases ask of one adapter."""

    enabled: bool = True  # listed in the Adapters setting, or the setting is empty
    mode: ScanMode = ScanMode.ACTIVE
    window: bool = False  # an active-scan lease covers the adapter
    paused: bool = False  # a pause lease covers it (a client is about to connect)


# --- events ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PoweredChanged:
    powered: bool


@dataclass(frozen=True, slots=True)
class DiscoveringChanged:
    discovering: bool
    now: float


@dataclass(frozen=True, slots=True)
class ManagerChanged:
    """AdvertisementMonitorManager1 was added to or removed from the adapter's object."""

    present: bool


@dataclass(frozen=True, slots=True)
class WantsChanged:
    wants: Wants


@dataclass(frozen=True, slots=True)
class Answered:
    call: Call
    outcome: Outcome
    now: float
    text: str = ""  # BlueZ's error text, for REFUSED
    dropped: bool = False  # START: Discovering fell while StartDiscovery was in flight


@dataclass(frozen=True, slots=True)
class BackoffOver:
    """The :class:`Wait` asked for has passed."""


@dataclass(frozen=True, slots=True)
class MonitorReleased:
    """BlueZ called Release on our monitor (adapter reset, bluetoothd going away)."""

    now: float


@dataclass(frozen=True, slots=True)
class SilenceRestart:
    """Watchdog step 1: the adapter went silent; stop and start our listening."""


@dataclass(frozen=True, slots=True)
class SilencePowerCycle:
    """Watchdog step 2: still silent; the adapter is being powered off and on."""


@dataclass(frozen=True, slots=True)
class PowerCycleDone:
    """The power cycle's calls have returned (or failed)."""


@dataclass(frozen=True, slots=True)
class DrainWait:
    """Watchdog step 2 is due: we hold the adapter's drain and wait for other links to go."""


@dataclass(frozen=True, slots=True)
class ResetHeldOff:
    """The power cycle is not made: a link remains (``by`` says whose)."""

    by: str


@dataclass(frozen=True, slots=True)
class SilenceEnded:
    """The adapter was heard again: a held-off reset is no longer wanted."""


@dataclass(frozen=True, slots=True)
class OtherDrain:
    """Another process's live drain on the adapter appeared (``by``) or went (``""``)."""

    by: str


@dataclass(frozen=True, slots=True)
class SessionLost:
    """We no longer count a session BlueZ may still hold (a start that timed out here
    but ran in BlueZ); the next start meets InProgress and stops it first."""


Event = (
    PoweredChanged
    | DiscoveringChanged
    | ManagerChanged
    | WantsChanged
    | Answered
    | BackoffOver
    | MonitorReleased
    | SilenceRestart
    | SilencePowerCycle
    | PowerCycleDone
    | DrainWait
    | ResetHeldOff
    | SilenceEnded
    | OtherDrain
    | SessionLost
)


# --- actions --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    stop_first: bool  # BlueZ may hold a session of ours we no longer count: stop it


@dataclass(frozen=True, slots=True)
class Stop:
    pass


@dataclass(frozen=True, slots=True)
class Register:
    pass


@dataclass(frozen=True, slots=True)
class Unregister:
    pass


@dataclass(frozen=True, slots=True)
class Wait:
    """Feed :class:`BackoffOver` after this many seconds."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Warn:
    """A log line worth a person's attention."""

    message: str


Action = Start | Stop | Register | Unregister | Wait | Warn


# --- state ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdapterState:
    """Everything the machine knows about one adapter."""

    powered: bool
    discovering: bool  # BlueZ's flag: someone scans (maybe not us)
    manager: bool  # AdvertisementMonitorManager1 is on the adapter's object
    appeared: float  # when the adapter appeared (monotonic)
    restarted_at: float | None = None  # when bluetoothd came back while we ran
    wants: Wants = Wants()
    session: bool = False  # we hold a discovery session
    monitor: bool = False  # our monitor is registered
    passive_refused: bool = False  # RegisterMonitor refused; until the manager comes again
    busy: Call | None = None  # the call in flight: one at a time
    waiting: bool = False  # a backoff Wait runs
    waited: bool = False  # ... and is over: the next start goes ahead
    stop_first: bool = False  # the next start stops a session BlueZ may hold for us
    restart_monitor: bool = False  # the watchdog wants the monitor off and on again
    cycling: bool = False  # the watchdog's power cycle runs
    draining: bool = False  # we hold the drain and wait for other links before a power cycle
    held_off: str = ""  # who kept the last power cycle from happening, until heard again
    drained_by: str = ""  # the service whose drain is on the adapter: we keep off it
    blocker: Blocker | None = None  # who refused our last start, until one succeeds
    note: Activity = Activity.STARTING  # shown while we neither scan nor wait on a cause
    error: str = ""  # the text of Activity.ERROR
    failures: int = 0  # consecutive failures, for the backoff
    session_since: float = 0.0  # when our current session started

    @property
    def passive_available(self) -> bool:
        return self.manager and not self.passive_refused


def wanted(state: AdapterState) -> tuple[bool, bool]:
    """(discovery session, passive monitor) the adapter should have now."""
    wants = state.wants
    passive = state.passive_available
    if wants.mode is ScanMode.ACTIVE:
        # Passive only as the fallback while another scanner holds the controller.
        session, monitor = True, state.blocker is not None and passive
    elif wants.mode is ScanMode.PASSIVE:
        # Without the monitor manager (bluetoothd without -E) passive is
        # impossible; scanning actively beats not scanning at all.
        session, monitor = not passive, passive
    else:
        session, monitor = not passive or wants.window, passive
    return session and not wants.paused, monitor


def backoff(failures: int) -> float:
    """Seconds before the next start: none after one failure, then doubling."""
    if failures <= 1:
        return 0.0
    return float(min(REARM_BACKOFF_INITIAL * 2 ** (failures - 2), REARM_BACKOFF_MAX))


def activity(state: AdapterState) -> Activity:
    """What the adapter is doing, from the state alone."""
    wants = state.wants
    if not wants.enabled:
        return Activity.NOT_USED
    if state.drained_by:
        return Activity.BEING_RESET  # also while its reset has the adapter off
    if not state.powered:
        return Activity.POWERED_OFF
    if state.cycling:
        return Activity.POWER_CYCLING
    if state.draining:
        return Activity.DRAINING
    session, monitor = state.session, state.monitor
    if wants.paused and not session:
        return Activity.PAUSED_PASSIVE if monitor else Activity.PAUSED
    if state.held_off and (session or monitor):
        return Activity.HELD_OFF
    if state.blocker is Blocker.OLD_BLUETOOTHD and not session:
        return Activity.OLD_SCAN_PASSIVE if monitor else Activity.OLD_SCAN
    if state.blocker is Blocker.OTHER_SCANNER and not session:
        return Activity.BLOCKED_PASSIVE if monitor else Activity.BLOCKED
    if session and monitor:
        return Activity.SCANNING if wants.mode is ScanMode.ACTIVE else Activity.ACTIVE_WINDOW
    if session:
        return Activity.SCANNING if wants.mode is ScanMode.ACTIVE else Activity.ACTIVE_FALLBACK
    if monitor:
        return Activity.PASSIVE
    return state.note


def listening(state: AdapterState) -> bool:
    """Our discovery session or monitor hears the adapter's advertisements now.

    Not while paused (active mode), restarting, powered off or power-cycling,
    while another process resets the adapter, or while another scanner holds
    the controller and no passive fallback runs: devices heard only here lose
    no time then (core/sources.py ``Listening``).
    """
    return (
        state.wants.enabled
        and state.powered
        and not state.drained_by
        and not state.cycling
        and (state.session or state.monitor)
    )


def text(state: AdapterState) -> str:
    """The adapter's state in words, for GetStatus, /Adapters/<hciN>/State and the CLI."""
    now = activity(state)
    words: str = now.value
    if now is Activity.ERROR:
        return words.format(state.error)
    if now is Activity.HELD_OFF:
        return words.format(state.held_off)
    if now is Activity.BEING_RESET:
        return words.format(state.drained_by)
    return words


def begin(state: AdapterState) -> tuple[AdapterState, tuple[Action, ...]]:
    """The first actions for a new adapter."""
    return _plan(state)


def step(state: AdapterState, event: Event) -> tuple[AdapterState, tuple[Action, ...]]:
    """The state after ``event``, and what to do now."""
    state, actions = _apply(state, event)
    state, planned = _plan(state)
    return state, actions + planned


def _apply(s: AdapterState, event: Event) -> tuple[AdapterState, tuple[Action, ...]]:
    if isinstance(event, PoweredChanged):
        # BlueZ drops every session on power-off and does not restore them on
        # power-on (BlueZ src/adapter.c ``adapter_stop``).
        powered = event.powered
        return replace(
            s,
            powered=powered,
            session=s.session and powered,
            cycling=s.cycling and powered,
        ), ()
    if isinstance(event, DiscoveringChanged):
        was, s = s.discovering, replace(s, discovering=event.discovering)
        if not (was and not event.discovering):
            return s, ()
        if not s.session:
            return s, ()
        # The kernel or BlueZ stopped the scan under us; BlueZ may still count
        # our session, so stop it before starting again.
        s = _failed(replace(s, session=False, stop_first=True), event.now)
        return s, (Warn("discovery stopped under us; re-arming"),)
    if isinstance(event, ManagerChanged):
        if event.present:
            # A manager that (re)appears gets a fresh chance, whatever an
            # earlier one answered.
            return replace(s, manager=True, passive_refused=False), ()
        # BlueZ releases the monitors with the manager.
        return replace(s, manager=False, monitor=False), ()
    if isinstance(event, WantsChanged):
        return replace(s, wants=event.wants), ()
    if isinstance(event, Answered):
        return _answered(replace(s, busy=None), event)
    if isinstance(event, BackoffOver):
        return replace(s, waiting=False, waited=True), ()
    if isinstance(event, MonitorReleased):
        # BlueZ calls Release on each monitor, also when we unregistered them:
        # only the first Release of a registration we still hold is news.
        if not s.monitor or s.busy is Call.UNREGISTER:
            return s, ()
        s = _failed(replace(s, monitor=False), event.now)
        return s, (Warn("BlueZ released our advertisement monitor"),)
    if isinstance(event, SilenceRestart):
        if s.drained_by:
            return s, ()  # the other process's reset re-arms us
        s = replace(
            s,
            note=Activity.RESTARTING_SILENT,
            session=False,
            stop_first=s.stop_first or s.session,
            restart_monitor=s.monitor,
        )
        return s, (Warn("no reports for a while; restarting discovery"),)
    if isinstance(event, SilencePowerCycle):
        return replace(s, cycling=True, draining=False, held_off=""), (
            Warn("still silent after a restart; power-cycling the adapter"),
        )
    if isinstance(event, PowerCycleDone):
        return replace(s, cycling=False), ()
    if isinstance(event, DrainWait):
        return replace(s, draining=True), ()
    if isinstance(event, ResetHeldOff):
        return replace(s, draining=False, held_off=event.by), (
            Warn(f"still silent, but not power-cycling: {event.by} holds a link"),
        )
    if isinstance(event, SilenceEnded):
        return replace(s, held_off=""), ()
    if isinstance(event, OtherDrain):
        if event.by and event.by != s.drained_by:
            return replace(s, drained_by=event.by), (
                Warn(f"{event.by} is about to reset the adapter; keeping off it"),
            )
        return replace(s, drained_by=event.by), ()
    return replace(s, session=False), ()  # SessionLost


def _answered(s: AdapterState, event: Answered) -> tuple[AdapterState, tuple[Action, ...]]:
    call, outcome, now = event.call, event.outcome, event.now
    if call is Call.REGISTER:
        if outcome is Outcome.OK:
            return replace(s, monitor=True), ()
        if outcome is Outcome.TIMEOUT:
            return _failed(s, now), ()
        # Passive scanning cannot work here (no -E, old kernel, refused): say
        # so once and let the mode fall back to active discovery until the
        # manager appears again.
        reason = event.text or outcome.value
        return replace(s, passive_refused=True), (Warn(f"passive scanning unavailable: {reason}"),)
    if call is not Call.START:
        return s, ()  # STOP and UNREGISTER: our side is already off
    if outcome is Outcome.OK:
        if event.dropped and not s.discovering:
            # BlueZ replied, Discovering rose and fell again before the answer
            # reached us, so DiscoveringChanged could not tell the session was ours.
            s = _failed(replace(s, stop_first=True), now)
            return s, (Warn("discovery stopped as it started; re-arming"),)
        return replace(s, session=True, blocker=None, session_since=now, note=Activity.SCANNING), ()
    s = _failed(s, now)
    if outcome is Outcome.ABSENT:
        return replace(s, note=Activity.WAITING_FOR_BLUETOOTHD), ()
    if outcome is Outcome.NOT_READY:
        return replace(s, powered=False), ()
    if outcome is Outcome.TIMEOUT:
        return replace(s, note=Activity.NO_ANSWER), ()
    if outcome is Outcome.REFUSED:
        return replace(s, note=Activity.ERROR, error=event.text), ()
    if s.discovering:
        # IN_PROGRESS while Discovering: either BlueZ holds a session of ours we
        # do not count, or the controller refused: stop ours, then start.
        return replace(s, stop_first=True, note=Activity.RESTARTING_IN_PROGRESS), ()
    # The kernel refused while nobody scans through BlueZ: a raw HCI scanner
    # holds the controller or, just after bluetoothd appeared, a crashed one's
    # scan does, which the kernel ends by itself.
    # A scanner known to hold the controller before bluetoothd came back is
    # still the likelier cause: a blocked bluetoothd had no scan to leave behind.
    orphan = (
        s.blocker is not Blocker.OTHER_SCANNER
        and s.restarted_at is not None
        and now - s.restarted_at < ORPHAN_SCAN_WINDOW
    )
    failures = s.failures
    if now - s.appeared < ORPHAN_SCAN_WINDOW:
        failures = min(failures, ORPHAN_SCAN_RETRY_FAILURES)
    blocker = Blocker.OLD_BLUETOOTHD if orphan else Blocker.OTHER_SCANNER
    return replace(s, blocker=blocker, failures=failures), ()


def _failed(s: AdapterState, now: float) -> AdapterState:
    """One more failure; a session that stayed up long enough ends the backoff first."""
    failures = s.failures
    if s.session_since and now - s.session_since >= STABLE_SESSION_SECONDS:
        failures = 0
    return replace(s, failures=failures + 1, session_since=0.0)


def _plan(s: AdapterState) -> tuple[AdapterState, tuple[Action, ...]]:
    """The next call towards what the adapter should have, if none is in flight."""
    if s.busy is not None:
        return s, ()
    if not s.wants.enabled:
        if s.session:
            return replace(s, session=False, busy=Call.STOP), (Stop(),)
        if s.monitor:
            return replace(s, monitor=False, busy=Call.UNREGISTER), (Unregister(),)
        return s, ()
    if not s.powered or s.drained_by:
        return s, ()
    if s.restart_monitor:
        s = replace(s, restart_monitor=False)
        if s.monitor:
            return replace(s, monitor=False, busy=Call.UNREGISTER), (Unregister(),)
    want_session, want_monitor = wanted(s)
    if s.session and not want_session:
        return replace(s, session=False, busy=Call.STOP), (Stop(),)
    if want_monitor and not s.monitor:
        return replace(s, busy=Call.REGISTER), (Register(),)
    if s.monitor and not want_monitor:
        return replace(s, monitor=False, busy=Call.UNREGISTER), (Unregister(),)
    if not want_session or s.session or s.waiting:
        return s, ()
    delay = backoff(s.failures)
    if delay and not s.waited:
        return replace(s, waiting=True), (Wait(delay),)
    start = Start(s.stop_first)
    return replace(s, waited=False, stop_first=False, busy=Call.START), (start,)
