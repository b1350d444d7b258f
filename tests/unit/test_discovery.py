"""One adapter's discovery state machine, driven directly: events in, state, text and calls out."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ble_scanner.bluez import discovery
from ble_scanner.bluez.discovery import (
    Action,
    Activity,
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
    SessionLost,
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
    step,
    text,
)
from ble_scanner.const import (
    ORPHAN_SCAN_RETRY_FAILURES,
    ORPHAN_SCAN_WINDOW,
    REARM_BACKOFF_INITIAL,
    REARM_BACKOFF_MAX,
    STABLE_SESSION_SECONDS,
)
from ble_scanner.modes import ScanMode

T0 = 1000.0  # the adapter appears
LATER = T0 + ORPHAN_SCAN_WINDOW + 1  # past every window that starts when it appears

ACTIVE, PASSIVE, AUTO = ScanMode.ACTIVE, ScanMode.PASSIVE, ScanMode.AUTO


def adapter(
    mode: ScanMode = ACTIVE, manager: bool = True, restarted_at: float | None = None, **kw: object
) -> AdapterState:
    state = AdapterState(
        powered=True,
        discovering=False,
        manager=manager,
        appeared=T0,
        restarted_at=restarted_at,
        wants=Wants(mode=mode),
    )
    return replace(state, **kw)  # type: ignore[arg-type]


def run(state: AdapterState, *events: Event) -> tuple[AdapterState, list[Action]]:
    """All events in turn; the last state and every action taken on the way."""
    actions: list[Action] = []
    for event in events:
        state, taken = step(state, event)
        actions += taken
    return state, actions


def first(state: AdapterState) -> tuple[AdapterState, list[Action]]:
    state, actions = discovery.begin(state)
    return state, list(actions)


def ok(call: Call, now: float = LATER, **kw: object) -> Answered:
    return Answered(call, Outcome.OK, now, **kw)  # type: ignore[arg-type]


def in_progress(now: float = LATER) -> Answered:
    return Answered(Call.START, Outcome.IN_PROGRESS, now)


def calls(actions: list[Action]) -> list[Action]:
    return [a for a in actions if not isinstance(a, Warn)]


# --- the texts users see -------------------------------------------------------------

TEXTS = {
    Activity.STARTING: "starting",
    Activity.NOT_USED: "not used (settings)",
    Activity.POWERED_OFF: "powered off",
    Activity.WAITING_FOR_BLUETOOTHD: "waiting for bluetoothd",
    Activity.SCANNING: "scanning",
    Activity.ACTIVE_WINDOW: "scanning (active window)",
    Activity.ACTIVE_FALLBACK: "scanning (active: passive scanning unavailable)",
    Activity.PASSIVE: "scanning (passive)",
    Activity.PAUSED: "paused for a connection",
    Activity.PAUSED_PASSIVE: "paused for a connection (passive scanning)",
    Activity.BLOCKED: "blocked by another scanner",
    Activity.BLOCKED_PASSIVE: "scanning (passive: another scanner holds the controller)",
    Activity.OLD_SCAN: "waiting for the old bluetoothd's scan to end",
    Activity.OLD_SCAN_PASSIVE: "scanning (passive until the old bluetoothd's scan ends)",
    Activity.RESTARTING_IN_PROGRESS: "restarting discovery (InProgress)",
    Activity.RESTARTING_SILENT: "restarting discovery (adapter went silent)",
    Activity.DRAINING: "waiting for other links to close before a power cycle",
    Activity.POWER_CYCLING: "power-cycling (adapter went silent)",
    Activity.HELD_OFF: "reset held off by {}",
    Activity.BEING_RESET: "being reset by {}",
    Activity.NO_ANSWER: "error: BlueZ did not answer",
    Activity.ERROR: "error: {}",
}

# One state showing each activity.
SHOWING = {
    Activity.STARTING: adapter(),
    Activity.NOT_USED: adapter(wants=Wants(enabled=False), session=True),
    Activity.POWERED_OFF: adapter(powered=False, monitor=True),
    Activity.WAITING_FOR_BLUETOOTHD: adapter(note=Activity.WAITING_FOR_BLUETOOTHD),
    Activity.SCANNING: adapter(session=True),
    Activity.ACTIVE_WINDOW: adapter(AUTO, session=True, monitor=True),
    Activity.ACTIVE_FALLBACK: adapter(PASSIVE, manager=False, session=True),
    Activity.PASSIVE: adapter(PASSIVE, monitor=True),
    Activity.PAUSED: adapter(wants=Wants(paused=True)),
    Activity.PAUSED_PASSIVE: adapter(wants=Wants(mode=AUTO, paused=True), monitor=True),
    Activity.BLOCKED: adapter(blocker=Blocker.OTHER_SCANNER),
    Activity.BLOCKED_PASSIVE: adapter(blocker=Blocker.OTHER_SCANNER, monitor=True),
    Activity.OLD_SCAN: adapter(blocker=Blocker.OLD_BLUETOOTHD),
    Activity.OLD_SCAN_PASSIVE: adapter(blocker=Blocker.OLD_BLUETOOTHD, monitor=True),
    Activity.RESTARTING_IN_PROGRESS: adapter(note=Activity.RESTARTING_IN_PROGRESS),
    Activity.RESTARTING_SILENT: adapter(note=Activity.RESTARTING_SILENT),
    Activity.DRAINING: adapter(draining=True, session=True),
    Activity.POWER_CYCLING: adapter(cycling=True, session=True),
    Activity.HELD_OFF: adapter(held_off="{}", session=True),
    Activity.BEING_RESET: adapter(drained_by="{}", powered=False),
    Activity.NO_ANSWER: adapter(note=Activity.NO_ANSWER),
    Activity.ERROR: adapter(note=Activity.ERROR, error="{}"),
}


def test_every_activity_has_its_text_and_a_state_that_shows_it() -> None:
    assert {a: a.value for a in Activity} == TEXTS
    for shown, state in SHOWING.items():
        assert discovery.activity(state) is shown, (shown, state)
        assert text(state) == TEXTS[shown]


def test_active_mode_with_both_ways_up_is_just_scanning() -> None:
    """Between the other scanner leaving and our monitor going: not an "active window"."""
    assert text(adapter(session=True, monitor=True)) == "scanning"


def test_an_error_shows_bluez_s_text() -> None:
    state, _ = run(
        adapter(busy=Call.START),
        Answered(Call.START, Outcome.REFUSED, LATER, "Operation not permitted"),
    )
    assert text(state) == "error: Operation not permitted"


# --- active mode ---------------------------------------------------------------------


def test_a_new_adapter_starts_discovery_and_scans_once_bluez_answers() -> None:
    state, actions = first(adapter())
    assert actions == [Start(stop_first=False)]
    assert state.busy is Call.START and text(state) == "starting"
    state, actions = run(state, ok(Call.START))
    assert actions == [] and state.session and text(state) == "scanning"


def test_one_call_at_a_time() -> None:
    state, _ = first(adapter())
    state, actions = run(
        state, PoweredChanged(True), WantsChanged(Wants(mode=PASSIVE)), ManagerChanged(True)
    )
    assert actions == [], "a second call while StartDiscovery is out"
    state, actions = run(state, ok(Call.START))
    assert actions == [Stop()], "passive now: our session goes first"
    state, actions = run(state, ok(Call.STOP))
    assert actions == [Register()]


def test_power_off_ends_the_session_and_power_on_starts_again() -> None:
    state, _ = run(adapter(session=True), PoweredChanged(False))
    assert not state.session and text(state) == "powered off"
    state, actions = run(state, PoweredChanged(True))
    assert actions == [Start(stop_first=False)]


def test_discovering_dropped_under_us_is_rearmed_with_a_stop_first() -> None:
    state = adapter(session=True, discovering=True, session_since=LATER)
    state, actions = run(state, DiscoveringChanged(False, LATER + 1))
    assert actions == [Warn("discovery stopped under us; re-arming"), Start(stop_first=True)]
    assert state.failures == 1


def test_discovering_falling_while_our_start_was_out_counts_as_a_drop() -> None:
    state, actions = run(adapter(busy=Call.START), ok(Call.START, dropped=True))
    assert not state.session
    assert actions == [Warn("discovery stopped as it started; re-arming"), Start(stop_first=True)]


def test_failures_back_off_doubling_to_the_maximum() -> None:
    state, _ = first(adapter())
    waits = []
    for _ in range(10):
        state, actions = run(state, Answered(Call.START, Outcome.TIMEOUT, LATER))
        if actions == [Start(stop_first=False)]:
            waits.append(0.0)
            continue
        assert len(actions) == 1 and isinstance(actions[0], Wait), actions
        waits.append(actions[0].seconds)
        assert text(state) == "error: BlueZ did not answer"
        state, actions = run(state, BackoffOver())
        assert actions == [Start(stop_first=False)]
    expected = [0.0] + [
        min(REARM_BACKOFF_INITIAL * 2**n, REARM_BACKOFF_MAX) for n in range(len(waits) - 1)
    ]
    assert waits == expected


def test_a_session_that_stayed_up_ends_the_backoff() -> None:
    state = adapter(session=True, discovering=True, failures=5, session_since=LATER)
    state, _ = run(state, DiscoveringChanged(False, LATER + STABLE_SESSION_SECONDS))
    assert state.failures == 1


def test_in_progress_while_discovering_stops_our_forgotten_session_first() -> None:
    state, actions = run(adapter(discovering=True, busy=Call.START), in_progress())
    assert actions == [Start(stop_first=True)]
    assert text(state) == "restarting discovery (InProgress)"


def test_a_lost_session_is_started_again() -> None:
    state, actions = run(adapter(session=True), SessionLost())
    assert actions == [Start(stop_first=False)]


@pytest.mark.parametrize(
    ("answer", "shown"),
    [
        (Outcome.ABSENT, "waiting for bluetoothd"),
        (Outcome.NOT_READY, "powered off"),
        (Outcome.TIMEOUT, "error: BlueZ did not answer"),
    ],
)
def test_start_failures_are_named(answer: Outcome, shown: str) -> None:
    state, _ = run(adapter(busy=Call.START), Answered(Call.START, answer, LATER))
    assert text(state) == shown and state.failures == 1


# --- another scanner, the old bluetoothd's scan --------------------------------------


def test_another_scanner_blocks_and_passive_scanning_takes_over_until_it_leaves() -> None:
    state, actions = run(adapter(busy=Call.START), in_progress())
    assert state.blocker is Blocker.OTHER_SCANNER
    assert text(state) == "blocked by another scanner"
    assert actions == [Register()]
    state, actions = run(state, ok(Call.REGISTER))
    assert text(state) == "scanning (passive: another scanner holds the controller)"
    assert actions == [Start(stop_first=False)]  # one failure: no wait yet
    state, actions = run(state, in_progress())
    assert actions == [Wait(REARM_BACKOFF_INITIAL)]
    assert text(state) == "scanning (passive: another scanner holds the controller)"
    state, actions = run(state, BackoffOver(), ok(Call.START))
    assert state.blocker is None and text(state) == "scanning"
    assert actions == [Start(stop_first=False), Unregister()]


def test_blocked_without_a_monitor_manager_backs_off_without_passive() -> None:
    state, actions = run(adapter(manager=False, busy=Call.START), in_progress())
    assert actions == [Start(stop_first=False)]
    assert text(state) == "blocked by another scanner"


def test_refusal_just_after_bluetoothd_came_back_is_the_old_daemon_s_scan() -> None:
    state = adapter(restarted_at=T0, busy=Call.START)
    state, _ = run(state, in_progress(T0 + 1))
    assert state.blocker is Blocker.OLD_BLUETOOTHD
    assert text(state) == "waiting for the old bluetoothd's scan to end"
    state, _ = run(state, ok(Call.REGISTER, T0 + 1))
    assert text(state) == "scanning (passive until the old bluetoothd's scan ends)"


def test_a_known_other_scanner_is_not_taken_for_the_old_daemon_s_scan() -> None:
    state = adapter(restarted_at=T0, blocker=Blocker.OTHER_SCANNER)
    assert text(state) == "blocked by another scanner"
    state, actions = first(state)
    assert actions == [Register()], "passive first, as before the restart"
    state, _ = run(state, ok(Call.REGISTER, T0 + 1), in_progress(T0 + 1))
    assert state.blocker is Blocker.OTHER_SCANNER
    assert text(state) == "scanning (passive: another scanner holds the controller)"


def test_refusals_just_after_the_adapter_appeared_are_retried_at_a_steady_pace() -> None:
    state = adapter(restarted_at=T0, failures=8, busy=Call.START)
    state, actions = run(state, in_progress(T0 + 1), ok(Call.REGISTER, T0 + 1))
    assert state.failures <= ORPHAN_SCAN_RETRY_FAILURES
    assert actions[-1] == Wait(discovery.backoff(state.failures))


# --- passive and auto modes, the monitor manager -------------------------------------


def test_passive_mode_registers_the_monitor_and_never_starts_discovery() -> None:
    state, actions = first(adapter(PASSIVE))
    assert actions == [Register()]
    state, actions = run(state, ok(Call.REGISTER))
    assert actions == [] and text(state) == "scanning (passive)"


def test_passive_mode_without_a_manager_scans_actively_until_one_is_added() -> None:
    state, actions = first(adapter(PASSIVE, manager=False))
    assert actions == [Start(stop_first=False)]
    state, _ = run(state, ok(Call.START))
    assert text(state) == "scanning (active: passive scanning unavailable)"
    state, actions = run(state, ManagerChanged(True), ok(Call.STOP))
    assert actions == [Stop(), Register()]
    state, _ = run(state, ok(Call.REGISTER))
    assert text(state) == "scanning (passive)" and not state.session


def test_the_manager_removed_alone_falls_back_to_active() -> None:
    state, actions = run(adapter(PASSIVE, monitor=True), ManagerChanged(False))
    assert not state.monitor
    assert actions == [Start(stop_first=False)]


def test_a_refused_registration_falls_back_until_the_manager_comes_again() -> None:
    state, actions = run(
        adapter(PASSIVE, busy=Call.REGISTER),
        Answered(Call.REGISTER, Outcome.REFUSED, LATER, "Failed"),
    )
    assert actions == [Warn("passive scanning unavailable: Failed"), Start(stop_first=False)]
    state, _ = run(state, ok(Call.START))
    assert text(state) == "scanning (active: passive scanning unavailable)"
    state, actions = run(state, ManagerChanged(False), ManagerChanged(True))
    assert actions == [Stop()] and not state.passive_refused


def test_auto_mode_opens_an_active_window_for_a_lease() -> None:
    state, _ = run(adapter(AUTO, monitor=True), WantsChanged(Wants(mode=AUTO, window=True)))
    state, actions = run(state, ok(Call.START))
    assert text(state) == "scanning (active window)" and actions == []
    state, actions = run(state, WantsChanged(Wants(mode=AUTO)))
    assert actions == [Stop()] and text(state) == "scanning (passive)"


def test_a_pause_stops_our_session_and_names_the_connection() -> None:
    state, actions = run(adapter(session=True), WantsChanged(Wants(paused=True)))
    assert actions == [Stop()] and text(state) == "paused for a connection"


def test_an_adapter_not_in_the_settings_is_let_go() -> None:
    state, actions = run(adapter(session=True, monitor=True), WantsChanged(Wants(enabled=False)))
    assert actions == [Stop()] and text(state) == "not used (settings)"
    state, actions = run(state, ok(Call.STOP))
    assert actions == [Unregister()]


def test_a_release_from_bluez_registers_again() -> None:
    state, actions = run(adapter(PASSIVE, monitor=True), MonitorReleased(LATER))
    assert actions == [Warn("BlueZ released our advertisement monitor"), Register()]


def test_the_release_that_follows_our_unregistration_is_not_news() -> None:
    state, actions = run(adapter(monitor=True, busy=Call.UNREGISTER), MonitorReleased(LATER))
    assert actions == [] and state.failures == 0


# --- the watchdog --------------------------------------------------------------------


def test_a_silence_restart_stops_and_starts_session_and_monitor() -> None:
    state = adapter(AUTO, session=True, monitor=True, wants=Wants(mode=AUTO, window=True))
    state, actions = run(state, SilenceRestart())
    assert calls(actions) == [Unregister()]
    assert text(state) == "restarting discovery (adapter went silent)"
    state, actions = run(state, ok(Call.UNREGISTER), ok(Call.REGISTER))
    assert actions == [Register(), Start(stop_first=True)]


def test_a_power_cycle_is_named_until_the_adapter_goes_off() -> None:
    state, actions = run(adapter(session=True), SilencePowerCycle())
    assert calls(actions) == [] and text(state) == "power-cycling (adapter went silent)"
    state, _ = run(state, PoweredChanged(False))
    assert text(state) == "powered off"
    state, actions = run(state, PoweredChanged(True), PowerCycleDone())
    assert actions == [Start(stop_first=False)] and not state.cycling


# --- other processes' links and claims -------------------------------------------------


def scanning_state() -> AdapterState:
    state, _ = run(first(adapter())[0], ok(Call.START))
    assert state.session
    return state


def test_a_power_cycle_waits_for_the_drain_then_goes_ahead() -> None:
    state, actions = run(scanning_state(), DrainWait())
    assert actions == [] and text(state) == "waiting for other links to close before a power cycle"
    state, _ = run(state, SilencePowerCycle())
    assert text(state) == "power-cycling (adapter went silent)" and not state.draining


def test_a_held_off_reset_says_whose_link_and_keeps_scanning() -> None:
    state, actions = run(scanning_state(), DrainWait(), ResetHeldOff("dbus-serialbattery pid 812"))
    assert calls(actions) == [], "no call: the session we hold goes on"
    assert any(isinstance(a, Warn) for a in actions)
    assert state.session and text(state) == "reset held off by dbus-serialbattery pid 812"
    state, _ = run(state, SilenceEnded())
    assert text(state) == "scanning"


def test_a_power_cycle_after_a_held_off_one_clears_the_words() -> None:
    state, _ = run(scanning_state(), ResetHeldOff("a connection to AA:BB:CC:DD:EE:FF"))
    state, _ = run(state, SilencePowerCycle())
    assert state.held_off == "" and state.cycling


def test_another_process_s_drain_stops_every_start_until_it_goes() -> None:
    state, _ = run(scanning_state(), OtherDrain("dbus-serialbattery"))
    assert text(state) == "being reset by dbus-serialbattery"
    # Its reset: power off (our session ends) and on again; we make no call.
    state, actions = run(state, PoweredChanged(False), PoweredChanged(True))
    assert calls(actions) == [] and not state.session
    assert text(state) == "being reset by dbus-serialbattery"
    # The watchdog's restart is not made on a drained adapter either.
    state, actions = run(state, SilenceRestart())
    assert calls(actions) == []
    # The drain goes: re-armed at once.
    state, actions = run(state, OtherDrain(""))
    assert calls(actions) == [Start(stop_first=False)]
    state, _ = run(state, ok(Call.START))
    assert text(state) == "scanning"


def test_another_drain_is_shown_even_while_the_adapter_is_off_and_not_when_unused() -> None:
    state, _ = run(scanning_state(), OtherDrain("svc"), PoweredChanged(False))
    assert text(state) == "being reset by svc"
    state, _ = run(state, WantsChanged(Wants(enabled=False)))
    assert text(state) == "not used (settings)"


# --- listening: whether devices heard here lose time (core/sources.py) -------------------


def scanning(mode: ScanMode = ACTIVE) -> AdapterState:
    """The adapter after its first start and registration were answered."""
    state, _ = first(adapter(mode))
    state = run(state, ok(Call.START) if mode is ACTIVE else ok(Call.REGISTER))[0]
    assert state.session == (mode is ACTIVE) and state.monitor == (mode is not ACTIVE)
    return state


@pytest.mark.parametrize("mode", [ACTIVE, PASSIVE, AUTO])
def test_an_adapter_listens_once_its_session_or_monitor_runs(mode: ScanMode) -> None:
    state, _ = first(adapter(mode))
    assert not discovery.listening(state)  # starting
    assert discovery.listening(scanning(mode))


def test_a_pause_in_active_mode_is_not_listening_but_the_passive_monitor_is() -> None:
    paused = Wants(mode=ACTIVE, paused=True)
    state, _ = run(scanning(ACTIVE), WantsChanged(paused), ok(Call.STOP))
    assert text(state) == "paused for a connection"
    assert not discovery.listening(state)
    state, _ = run(scanning(AUTO), WantsChanged(replace(paused, mode=AUTO)))
    assert text(state) == "paused for a connection (passive scanning)"
    assert discovery.listening(state)


@pytest.mark.parametrize(
    "event",
    [
        PoweredChanged(False),
        DiscoveringChanged(False, LATER),
        SilenceRestart(),
        SilencePowerCycle(),
        OtherDrain("dbus-serialbattery"),
        WantsChanged(Wants(enabled=False)),
    ],
)
def test_an_adapter_that_cannot_hear_is_not_listening(event: Event) -> None:
    state = run(scanning(ACTIVE), DiscoveringChanged(True, LATER))[0]
    assert discovery.listening(state)
    assert not discovery.listening(run(state, event)[0])


def test_blocked_by_another_scanner_listens_only_with_the_passive_fallback() -> None:
    state, _ = first(adapter(ACTIVE, manager=False))
    state, _ = run(state, in_progress())
    assert text(state) == "blocked by another scanner"
    assert not discovery.listening(state)
    state, _ = first(adapter(ACTIVE))
    state, _ = run(state, in_progress(), ok(Call.REGISTER))
    assert text(state) == "scanning (passive: another scanner holds the controller)"
    assert discovery.listening(state)
