"""The silent-adapter ladder, on an injected clock: what a silence costs an adapter."""

from __future__ import annotations

import itertools

from ble_scanner.bluez.watchdog import SilenceLadder, WatchdogAction
from ble_scanner.const import WATCHDOG_LOOKS_PER_SILENCE, WATCHDOG_MAX_LOOK_INTERVAL

SILENCE = 90.0
LOOK = min(WATCHDOG_MAX_LOOK_INTERVAL, SILENCE / WATCHDOG_LOOKS_PER_SILENCE)  # as the service
MAX_INTERVAL = 900.0
DAY = 24 * 3600.0

RESTART, POWER_CYCLE = WatchdogAction.RESTART, WatchdogAction.POWER_CYCLE


def ladder(max_power_cycles_per_hour: int = 3) -> SilenceLadder:
    return SilenceLadder(SILENCE, SILENCE, max_power_cycles_per_hour, MAX_INTERVAL)


def run(
    watch: SilenceLadder,
    start: float,
    end: float,
    count: int,
    scanning: bool = True,
) -> list[tuple[float, WatchdogAction]]:
    """Looks from start to end with a fixed report count; the actions and when."""
    actions = []
    now = start
    while now < end:
        action = watch.look(count, now, scanning)
        if action is not None:
            actions.append((now, action))
        now += LOOK
    return actions


def test_an_adapter_that_never_heard_anything_is_left_alone() -> None:
    assert run(ladder(), 0.0, DAY, count=0) == []


def test_a_silence_gets_a_restart_then_one_power_cycle_then_slower_restarts() -> None:
    watch = ladder()
    watch.look(10, 0.0, True)
    actions = run(watch, LOOK, 3 * 3600.0, count=10)
    kinds = [a for _, a in actions]
    assert kinds[:3] == [RESTART, POWER_CYCLE, RESTART]
    assert kinds.count(POWER_CYCLE) == 1
    times = [0.0] + [t for t, _ in actions]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # One silence to each of the first two steps, then doubling up to the cap.
    assert gaps[:5] == [SILENCE, SILENCE, 2 * SILENCE, 4 * SILENCE, 8 * SILENCE]
    assert max(gaps) == MAX_INTERVAL
    assert gaps[-1] == MAX_INTERVAL


def test_a_quiet_day_costs_one_power_cycle_and_about_a_hundred_restarts() -> None:
    """The boat left the marina: nothing to hear, and nothing is stuck."""
    watch = ladder()
    watch.look(1, 0.0, True)
    kinds = [a for _, a in run(watch, LOOK, DAY, count=1)]
    assert kinds.count(POWER_CYCLE) == 1
    assert kinds.count(RESTART) <= DAY / MAX_INTERVAL + 5


def test_a_report_ends_the_silence_and_resets_the_ladder() -> None:
    watch = ladder()
    watch.look(1, 0.0, True)
    assert [a for _, a in run(watch, LOOK, 2 * SILENCE + LOOK, count=1)] == [RESTART, POWER_CYCLE]
    assert watch.step == 2
    assert watch.look(2, 200.0, True) is None
    assert (watch.step, watch.wait, watch.power_cycled) == (0, SILENCE, False)
    # The next silence climbs the same ladder from the bottom.
    kinds = [a for _, a in run(watch, 200.0 + LOOK, 200.0 + 2 * SILENCE + LOOK, count=2)]
    assert kinds == [RESTART, POWER_CYCLE]


def test_power_cycles_are_capped_per_hour_over_many_silences() -> None:
    watch = ladder(max_power_cycles_per_hour=3)
    count, now, cycles = 1, 0.0, []
    watch.look(count, now, True)
    while now < 3 * 3600.0:
        # Each silence lasts long enough for a power cycle, then a report ends it.
        for t, action in run(watch, now + LOOK, now + 2 * SILENCE + LOOK, count):
            if action is POWER_CYCLE:
                cycles.append(t)
        now += 2 * SILENCE + LOOK
        count += 1
        watch.look(count, now, True)
    assert len(cycles) > 3
    for t in cycles:
        assert sum(1 for u in cycles if t - 3600.0 < u <= t) <= 3


def test_not_scanning_stops_the_clock_without_resetting_the_ladder() -> None:
    """Our own power cycle takes the adapter down: that must not earn a second one."""
    watch = ladder()
    watch.look(1, 0.0, True)
    assert [a for _, a in run(watch, LOOK, 2 * SILENCE + LOOK, count=1)] == [RESTART, POWER_CYCLE]
    # Off and re-arming for ten minutes: no action, the ladder is kept.
    assert run(watch, 2 * SILENCE + LOOK, 800.0, count=1, scanning=False) == []
    assert watch.power_cycled
    kinds = [a for _, a in run(watch, 800.0, 800.0 + 3600.0, count=1)]
    assert POWER_CYCLE not in kinds
    assert kinds[0] is RESTART


def test_the_restart_and_the_power_cycle_wait_their_own_settings() -> None:
    watch = SilenceLadder(10.0, 25.0, 3, MAX_INTERVAL)
    watch.look(1, 0.0, True)
    assert watch.look(1, 9.9, True) is None
    assert watch.look(1, 10.0, True) is RESTART
    assert watch.look(1, 34.9, True) is None
    assert watch.look(1, 35.0, True) is POWER_CYCLE
    assert watch.look(1, 84.9, True) is None, "then doubling from the power cycle's wait"
    assert watch.look(1, 85.0, True) is RESTART


def test_new_timings_apply_to_the_step_under_way() -> None:
    watch = SilenceLadder(90.0, 90.0, 3, MAX_INTERVAL)
    watch.look(1, 0.0, True)
    watch.configure(5.0, 7.0)
    assert watch.look(1, 5.0, True) is RESTART
    watch.configure(5.0, 6.0)
    assert watch.look(1, 11.0, True) is POWER_CYCLE


def test_silence_that_does_not_count_stops_the_clock() -> None:
    """A connected device on the adapter (or a reset under way): no step comes due."""
    watch = ladder()
    watch.look(1, 0.0, True)
    assert run(watch, LOOK, DAY, count=1, scanning=False) == []
    assert watch.step == 0
