"""The load budget: every step up and down with hysteresis, what each step does, the sampler."""

from __future__ import annotations

from pathlib import Path

import pytest

from ble_scanner.core.filters import Filter, SubscriptionOptions
from ble_scanner.core.hub import HubSettings
from ble_scanner.core.loadcap import (
    COALESCE_WINDOW,
    RELEASE_SHARE,
    SHED_RSSI_DELTA,
    STEP_DOWN_HOLD,
    STEP_UP_INTERVAL,
    LoadPolicy,
    LoadSample,
    SheddingLoad,
    ShedStep,
)
from ble_scanner.core.loadguard import CLOCK_TICKS, ProcSampler
from tests.unit.test_hub import ADDR, heard, make

HOT = LoadSample(load5=7.0, cpu_percent=10.0)
CALM = LoadSample(load5=1.0, cpu_percent=5.0)


def policy() -> LoadPolicy:
    return LoadPolicy(load_average=4.5, cpu_percent=40)


def test_each_step_up_waits_for_the_previous_to_show() -> None:
    p = policy()
    assert p.update(HOT, 0.0) == ShedStep.COALESCE
    assert p.update(HOT, STEP_UP_INTERVAL / 2) == ShedStep.COALESCE
    steps = [p.update(HOT, STEP_UP_INTERVAL * n) for n in range(1, 6)]
    assert steps == [
        ShedStep.RSSI_DELTA,
        ShedStep.NO_KEEP_ALIVE,
        ShedStep.REFUSE_ALL_REPORTS,
        ShedStep.REFUSE_ALL_REPORTS,  # the top step stays
        ShedStep.REFUSE_ALL_REPORTS,
    ]


def test_own_cpu_share_alone_sheds() -> None:
    p = policy()
    assert p.update(LoadSample(load5=1.0, cpu_percent=40.0), 0.0) == ShedStep.COALESCE


def test_each_step_down_needs_the_hold_calm() -> None:
    p = policy()
    for n in range(4):
        p.update(HOT, STEP_UP_INTERVAL * n)
    assert p.step == ShedStep.REFUSE_ALL_REPORTS
    t = 10.0
    assert p.update(CALM, t) == ShedStep.REFUSE_ALL_REPORTS  # calm starts here
    assert p.update(CALM, t + STEP_DOWN_HOLD - 1) == ShedStep.REFUSE_ALL_REPORTS
    downs = [p.update(CALM, t + STEP_DOWN_HOLD * n) for n in range(1, 6)]
    assert downs == [
        ShedStep.NO_KEEP_ALIVE,
        ShedStep.RSSI_DELTA,
        ShedStep.COALESCE,
        ShedStep.NONE,
        ShedStep.NONE,
    ]


def test_between_the_marks_the_step_holds_and_the_calm_restarts() -> None:
    p = policy()
    p.update(HOT, 0.0)
    p.update(CALM, 10.0)
    # Under the threshold but over the release mark: neither up nor down.
    warm = LoadSample(load5=4.5 * RELEASE_SHARE + 0.1, cpu_percent=5.0)
    assert p.update(warm, 10.0 + STEP_DOWN_HOLD - 1) == ShedStep.COALESCE
    # The calm counts again from the next calm sample, not from 10 s.
    assert p.update(CALM, 10.0 + STEP_DOWN_HOLD + 1) == ShedStep.COALESCE
    assert p.update(CALM, 10.0 + 2 * STEP_DOWN_HOLD + 1) == ShedStep.NONE


def test_a_hot_sample_during_the_calm_restarts_it() -> None:
    p = policy()
    p.update(HOT, 0.0)
    p.update(CALM, 10.0)
    p.update(HOT, 10.0 + STEP_DOWN_HOLD / 2)  # one step up again
    assert p.step == ShedStep.RSSI_DELTA
    assert p.update(CALM, 10.0 + STEP_DOWN_HOLD) == ShedStep.RSSI_DELTA


def test_a_threshold_of_zero_is_no_trigger_and_unknown_readings_shed_nothing() -> None:
    p = LoadPolicy(load_average=0, cpu_percent=0)
    assert p.update(LoadSample(load5=50.0, cpu_percent=100.0), 0.0) == ShedStep.NONE
    p = policy()
    assert p.update(LoadSample(load5=None, cpu_percent=None), 0.0) == ShedStep.NONE


def test_new_thresholds_apply_from_the_next_sample() -> None:
    p = policy()
    assert p.update(LoadSample(load5=3.0, cpu_percent=None), 0.0) == ShedStep.NONE
    p.configure(load_average=2.0, cpu_percent=40)
    assert p.update(LoadSample(load5=3.0, cpu_percent=None), 1.0) == ShedStep.COALESCE


def test_every_step_has_words() -> None:
    assert ShedStep.NONE.text == "off"
    assert [s.text[0] for s in ShedStep if s] == ["1", "2", "3", "4"]


# --- what each step does to the hub --------------------------------------------


def test_coalescing_sends_each_device_once_per_window_in_its_latest_state() -> None:
    hub, rec, clock = make()
    path, _ = hub.subscribe(":1.5", Filter(addresses=frozenset({ADDR})), SubscriptionOptions())
    hub.shed(ShedStep.COALESCE)
    for reading in range(5):
        heard(hub, mfr={0x0499: bytes([reading])})
        clock.now += 0.01
    assert rec.take() == []
    hub.flush()
    assert rec.take() == [("discovered", ADDR, True, [path.path])]
    device = hub.cache.get(ADDR)
    assert device is not None and device.content is not None
    assert device.content.manufacturer_data == {0x0499: bytes([4])}
    hub.flush()
    assert rec.take() == []  # nothing new in this window


def test_all_reports_is_coalesced_too() -> None:
    hub, rec, _ = make()
    hub.subscribe(":1.5", Filter(), SubscriptionOptions(all_reports=True))
    hub.shed(ShedStep.COALESCE)
    for _ in range(3):
        heard(hub)
    hub.flush()
    assert len(rec.take()) == 1


def test_a_device_lost_within_the_window_is_not_sent() -> None:
    hub, rec, clock = make(HubSettings(lost_timeout=10))
    heard(hub)
    hub.shed(ShedStep.COALESCE)
    heard(hub, rssi=-30)
    clock.now += 11
    hub.sweep()
    rec.take()
    hub.flush()
    assert rec.take() == []


def test_ending_the_coalescing_sends_what_it_held() -> None:
    hub, rec, _ = make()
    hub.shed(ShedStep.COALESCE)
    heard(hub)
    assert rec.take() == []
    hub.shed(ShedStep.NONE)
    assert rec.take() == [("discovered", ADDR, True, [])]
    heard(hub, mfr={0x0499: b"\x07"})
    assert rec.take() == [("discovered", ADDR, True, [])]  # at once again


def test_step_two_raises_the_broadcast_rssi_delta_only() -> None:
    hub, rec, _ = make(HubSettings(broadcast_rssi_delta=8))
    sub, _ = hub.subscribe(":1.5", Filter(), SubscriptionOptions(rssi_delta=8))
    hub.shed(ShedStep.RSSI_DELTA)
    assert hub.broadcast.rssi_delta == SHED_RSSI_DELTA
    assert sub.listener.rssi_delta == 8
    hub.configure(HubSettings(broadcast_rssi_delta=10))  # a settings change keeps the step
    assert hub.broadcast.rssi_delta == SHED_RSSI_DELTA
    hub.shed(ShedStep.COALESCE)
    assert hub.broadcast.rssi_delta == 10
    rec.take()


def test_a_broadcast_rssi_delta_above_the_shed_one_stays() -> None:
    hub, _, _ = make(HubSettings(broadcast_rssi_delta=SHED_RSSI_DELTA + 10))
    hub.shed(ShedStep.RSSI_DELTA)
    assert hub.broadcast.rssi_delta == SHED_RSSI_DELTA + 10


def test_step_three_drops_keep_alives_and_step_two_restores_them() -> None:
    hub, rec, clock = make(HubSettings(broadcast_keep_alive=60))
    sub, _ = hub.subscribe(":1.5", Filter(), SubscriptionOptions(keep_alive=30))
    heard(hub)
    hub.shed(ShedStep.NO_KEEP_ALIVE)
    late, _ = hub.subscribe(":1.6", Filter(), SubscriptionOptions(keep_alive=30))
    assert (hub.broadcast.keep_alive, sub.listener.keep_alive, late.listener.keep_alive) == (
        0,
        0,
        0,
    )
    rec.take()
    clock.now += 120
    heard(hub)
    hub.flush()
    assert rec.take() == []  # still advertising, unchanged: no keep-alive
    hub.shed(ShedStep.RSSI_DELTA)
    assert (hub.broadcast.keep_alive, sub.listener.keep_alive, late.listener.keep_alive) == (
        60,
        30,
        30,
    )


def test_step_four_refuses_new_all_reports_and_nothing_else() -> None:
    hub, _, _ = make()
    hub.shed(ShedStep.REFUSE_ALL_REPORTS)
    with pytest.raises(SheddingLoad, match="shedding load"):
        hub.subscribe(":1.5", Filter(), SubscriptionOptions(all_reports=True))
    assert len(hub.subscriptions) == 0  # the refusal changed nothing
    hub.subscribe(":1.5", Filter(addresses=frozenset({ADDR})), SubscriptionOptions())
    hub.shed(ShedStep.NO_KEEP_ALIVE)
    hub.subscribe(":1.5", Filter(), SubscriptionOptions(all_reports=True))
    assert len(hub.subscriptions) == 2


def test_specific_subscribers_get_their_device_at_every_step() -> None:
    hub, rec, clock = make()
    wanted = "C0:11:22:33:44:66"
    by_address, _ = hub.subscribe(
        ":1.5", Filter(addresses=frozenset({wanted})), SubscriptionOptions()
    )
    by_company, _ = hub.subscribe(
        ":1.6", Filter(manufacturer_ids=frozenset({0x02E1})), SubscriptionOptions()
    )
    for step in ShedStep:
        hub.shed(step)
        rec.take()
        heard(hub, address=wanted, mfr={0x02E1: bytes([step, 1])})
        heard(hub, address=ADDR, mfr={0x0499: bytes([step])})
        clock.now += COALESCE_WINDOW
        hub.flush()
        told = {(address, tuple(paths)) for kind, address, _, paths in rec.take()}
        assert (wanted, (by_address.path, by_company.path)) in told, step


# --- the sampler ----------------------------------------------------------------


def test_sampler_reads_load_and_cpu_share_from_the_files_given(tmp_path: Path) -> None:
    loadavg, stat = tmp_path / "loadavg", tmp_path / "stat"
    loadavg.write_text("0.50 5.25 3.00 2/300 4242\n")
    ticks = CLOCK_TICKS
    # pid (comm with ") " in it) state ... utime stime at fields 14, 15
    fields = ["S"] + ["0"] * 10 + [str(ticks * 2), str(ticks * 1)] + ["0"] * 30
    stat.write_text("4242 (a) b) " + " ".join(fields) + "\n")
    clock = [100.0]
    sampler = ProcSampler(str(loadavg), str(stat), monotonic=lambda: clock[0])
    first = sampler.sample()
    assert first == LoadSample(load5=5.25, cpu_percent=None)
    fields[11] = str(ticks * 3)  # one more CPU second ...
    stat.write_text("4242 (a) b) " + " ".join(fields) + "\n")
    clock[0] += 4.0  # ... over four seconds
    assert sampler.sample() == LoadSample(load5=5.25, cpu_percent=25.0)


def test_sampler_turns_unreadable_files_into_no_reading(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage"
    garbage.write_text("not a load average")
    sampler = ProcSampler(str(tmp_path / "missing"), str(garbage))
    assert sampler.sample() == LoadSample(load5=None, cpu_percent=None)


def test_sampler_reads_this_machine() -> None:
    sampler = ProcSampler()
    sampler.sample()
    sample = sampler.sample()
    assert sample.load5 is not None and sample.load5 >= 0
    assert sample.cpu_percent is not None and sample.cpu_percent >= 0
