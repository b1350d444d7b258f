"""Presence: the advertising interval each device shows, and DeviceLost timed by it (injected clock)."""

from __future__ import annotations

import pytest

from ble_scanner.config import ScannerConfig
from ble_scanner.core.cache import Device
from ble_scanner.core.hub import Hub
from ble_scanner.core.presence import (
    INTERVAL_FACTOR,
    INTERVAL_HISTORY,
    INTERVAL_SLACK,
    IntervalLearner,
    lost_after,
)
from ble_scanner.service import record_variants
from tests.unit.test_hub import ADDR, Clock, Recorder, heard, make


def advertise(hub: Hub, clock: Clock, every: float, times: int) -> Device:
    """``times`` reports, ``every`` seconds apart (the first one now); the cached device."""
    for n in range(times):
        if n:
            clock.now += every
        heard(hub)
    device = hub.cache.get(ADDR)
    assert device is not None
    return device


def lost_at(hub: Hub, clock: Clock, rec: Recorder, step: float = 0.5, limit: float = 1e5) -> float:
    """Seconds after the last report until the hub reports the device lost (swept every ``step``)."""
    device = hub.cache.get(ADDR)
    assert device is not None
    start = device.heard
    rec.take()
    while clock.now - start < limit:
        clock.now += step
        if hub.sweep():
            assert rec.take() == [("lost", ADDR, True, [])]
            return clock.now - start
    raise AssertionError("never lost")


def test_a_1_s_advertiser_is_lost_seconds_after_it_stops_not_after_the_lost_timeout() -> None:
    hub, rec, clock = make(ScannerConfig(lost_timeout=180))
    device = advertise(hub, clock, 1.0, INTERVAL_HISTORY + 1)
    assert device.interval == 1.0
    assert record_variants(device)["Interval"].value == 1.0
    expected = 1.0 * INTERVAL_FACTOR + INTERVAL_SLACK  # 8 s
    assert lost_at(hub, clock, rec) == expected


def test_no_interval_until_a_whole_history_is_heard_and_the_lost_timeout_applies_till_then() -> (
    None
):
    hub, rec, clock = make(ScannerConfig(lost_timeout=60))
    device = advertise(hub, clock, 1.0, INTERVAL_HISTORY)  # one gap short
    assert device.interval is None
    assert "Interval" not in record_variants(device)
    assert lost_at(hub, clock, rec) == 60.0


def test_a_60_s_advertiser_stays_present_and_is_lost_after_three_intervals() -> None:
    hub, rec, clock = make(ScannerConfig(lost_timeout=600))
    device = advertise(hub, clock, 60.0, INTERVAL_HISTORY + 1)
    assert device.interval == 60.0
    assert lost_at(hub, clock, rec, step=1.0) == 60.0 * INTERVAL_FACTOR + INTERVAL_SLACK  # 185 s


def test_the_lost_timeout_stays_the_upper_bound() -> None:
    hub, rec, clock = make(ScannerConfig(lost_timeout=180))
    advertise(hub, clock, 60.0, INTERVAL_HISTORY + 1)
    assert lost_at(hub, clock, rec, step=1.0) == 180.0


def test_one_late_report_does_not_make_a_device_lost() -> None:
    """Two advertisements missed in a row (3 s gap) after a 1 s history: still present."""
    hub, rec, clock = make()
    device = advertise(hub, clock, 1.0, INTERVAL_HISTORY + 1)
    clock.now += 3.0
    assert hub.sweep() == []
    heard(hub)
    assert device.interval == 3.0  # a longer gap counts at once


def test_an_advertiser_that_speeds_up_is_judged_by_its_new_rate_after_one_block() -> None:
    hub, rec, clock = make(ScannerConfig(lost_timeout=600))
    device = advertise(hub, clock, 10.0, INTERVAL_HISTORY + 1)
    assert device.interval == 10.0
    for _ in range(INTERVAL_HISTORY - 1):
        clock.now += 1.0
        heard(hub)
        assert device.interval == 10.0  # the 10 s block still counts
    clock.now += 1.0
    heard(hub)
    assert device.interval == 1.0
    assert lost_at(hub, clock, rec) == 1.0 * INTERVAL_FACTOR + INTERVAL_SLACK


def test_an_advertiser_that_slows_down_is_lost_then_found_again_and_learned_anew() -> None:
    """A 1 s advertiser that switches to every 20 s: lost after 8 s of its old pace, then
    back as new (DeviceDiscovered), kept for the lost timeout until 20 s is learned."""
    hub, rec, clock = make(ScannerConfig(lost_timeout=180, broadcast_keep_alive=0))
    advertise(hub, clock, 1.0, INTERVAL_HISTORY + 1)
    assert lost_at(hub, clock, rec) == 8.0
    clock.now += 12.0  # its next advertisement, 20 s after the last one
    heard(hub)
    assert rec.take() == [("discovered", ADDR, True, [])]
    device = hub.cache.get(ADDR)
    assert device is not None and device.interval is None
    for _ in range(INTERVAL_HISTORY):
        clock.now += 20.0
        assert hub.sweep() == []  # not lost between reports while it is learned
        heard(hub)
    assert device.interval == 20.0
    assert rec.take() == []
    assert lost_at(hub, clock, rec) == 20.0 * INTERVAL_FACTOR + INTERVAL_SLACK  # 65 s


def test_reports_of_one_advertising_event_are_not_gaps() -> None:
    """Three channels (or two adapters) report the same event ms apart."""
    hub, _, clock = make()
    for _ in range(INTERVAL_HISTORY + 1):
        for _ in range(3):
            heard(hub)
            clock.now += 0.005
        clock.now += 2.0 - 0.015
    device = hub.cache.get(ADDR)
    assert device is not None and device.interval == pytest.approx(2.0 - 0.01)


def test_sweep_finds_a_quiet_device_behind_one_with_a_longer_lost_time() -> None:
    """Expiry is per device: the least recently heard one is not always the first lost."""
    hub, rec, clock = make(ScannerConfig(lost_timeout=180))
    heard(hub, address="C0:00:00:00:00:01")  # no interval: 180 s
    clock.now += 1.0
    advertise(hub, clock, 1.0, INTERVAL_HISTORY + 1)  # ADDR: 8 s
    clock.now += 8.0
    assert [d.address for d in hub.sweep()] == [ADDR]
    assert [d.address for d in hub.cache] == ["C0:00:00:00:00:01"]


def test_lost_after_is_the_interval_times_the_factor_plus_slack_bounded_by_the_timeout() -> None:
    assert lost_after(None, 180.0) == 180.0
    assert lost_after(1.0, 180.0) == 8.0
    assert lost_after(100.0, 180.0) == 180.0


def test_a_learner_given_an_interval_keeps_it_until_a_block_replaces_it() -> None:
    learner = IntervalLearner(30.0)
    for _ in range(INTERVAL_HISTORY - 1):
        learner.gap(1.0)
    assert learner.interval == 30.0
    learner.gap(1.0)
    assert learner.interval == 1.0


def test_a_lost_timeout_shorter_than_the_slack_still_applies() -> None:
    """Tests and impatient users set a lost timeout of a second."""
    hub, rec, clock = make(ScannerConfig(lost_timeout=1.0))
    heard(hub)
    assert lost_at(hub, clock, rec, step=0.25) == 1.0
