"""The broadcast's interval (emission.Broadcast): at most once per device per interval,
the latest state when it ends, subscriptions untouched; on an injected clock."""

from __future__ import annotations

import random

import pytest

from ble_scanner.config import ScannerConfig
from ble_scanner.core.emission import Broadcast
from ble_scanner.core.filters import Filter, SubscriptionOptions
from ble_scanner.core.hub import Hub, HubSettings
from ble_scanner.core.loadcap import ShedStep
from tests.unit.test_hub import ADDR, Clock, Recorder, heard, make

OTHER = "C0:11:22:33:44:66"
EVERY_SECOND = HubSettings(broadcast_interval=1.0, broadcast_keep_alive=0)
NO_REPLAY = SubscriptionOptions(replay=False, keep_alive=0)


def reading(value: int) -> dict[int, bytes]:
    """Manufacturer data whose every value is new content (a counter, like Ruuvi's)."""
    return {0x0499: value.to_bytes(2, "little")}


def run(clock: Clock, hub: Hub, seconds: float, step: float) -> None:
    """Report a new reading every ``step`` for ``seconds``, flushing as loadguard's loop does."""
    value = 0
    end = clock.now + seconds
    while clock.now < end - 1e-9:
        heard(hub, mfr=reading(value))
        hub.flush()
        value += 1
        clock.now += step


def broadcasts(recorder: Recorder) -> list[tuple[str, str, bool, list[str]]]:
    return [e for e in recorder.take() if e[2]]


def test_default_interval_is_one_second() -> None:
    assert ScannerConfig().broadcast_interval == 1.0


def test_first_sighting_is_broadcast_at_once() -> None:
    hub, rec, _ = make(EVERY_SECOND)
    heard(hub)
    assert rec.take() == [("discovered", ADDR, True, [])]


def test_a_device_new_on_every_report_is_broadcast_once_a_second() -> None:
    hub, rec, clock = make(EVERY_SECOND)
    run(clock, hub, seconds=5.0, step=0.1)
    sent = broadcasts(rec)
    # the first sighting at 0, then one at each of 1, 2, 3, 4 s
    assert len(sent) == 5


def test_a_held_change_goes_out_when_the_interval_ends_in_its_latest_state() -> None:
    hub, rec, clock = make(EVERY_SECOND)
    start = clock.now
    heard(hub, mfr=reading(0))
    rec.take()
    clock.now = start + 0.3
    heard(hub, mfr=reading(1))
    clock.now = start + 0.6
    heard(hub, mfr=reading(2))
    hub.flush()
    assert rec.take() == []  # held
    assert hub.next_due() == start + 1.0
    clock.now = start + 0.99
    hub.flush()
    assert rec.take() == []  # not yet due
    clock.now = start + 1.0
    hub.flush()
    assert rec.take() == [("discovered", ADDR, True, [])]
    device = hub.cache.get(ADDR)
    assert device is not None and device.content is not None
    assert device.content.manufacturer_data == reading(2)
    assert hub.next_due() is None
    hub.flush()
    assert rec.take() == []  # sent once


def test_a_change_after_the_interval_is_broadcast_at_once() -> None:
    hub, rec, clock = make(EVERY_SECOND)
    heard(hub, mfr=reading(0))
    rec.take()
    clock.now += 1.0
    heard(hub, mfr=reading(1))
    assert rec.take() == [("discovered", ADDR, True, [])]


def test_subscriptions_get_every_change_while_the_broadcast_holds() -> None:
    hub, rec, clock = make(EVERY_SECOND)
    plain, _ = hub.subscribe(":1.5", Filter(), NO_REPLAY)
    every, _ = hub.subscribe(":1.6", Filter(), SubscriptionOptions(replay=False, all_reports=True))
    heard(hub, mfr=reading(0))
    assert rec.take() == [("discovered", ADDR, True, [plain.path, every.path])]
    for value in range(1, 6):
        clock.now += 0.1
        heard(hub, mfr=reading(value))
        hub.flush()
        assert rec.take() == [("discovered", ADDR, False, [plain.path, every.path])]
    clock.now += 0.1
    heard(hub, mfr=reading(5))  # the same reading again: only AllReports hears it
    assert rec.take() == [("discovered", ADDR, False, [every.path])]


def test_a_lost_device_loses_its_held_change_and_its_loss_is_not_delayed() -> None:
    hub, rec, clock = make(HubSettings(broadcast_interval=1.0, lost_timeout=10))
    heard(hub, mfr=reading(0))
    clock.now += 0.5
    heard(hub, mfr=reading(1))
    rec.take()
    clock.now += 10.0
    hub.sweep()
    assert rec.take() == [("lost", ADDR, True, [])]
    assert hub.next_due() is None
    hub.flush()
    assert rec.take() == []
    heard(hub, mfr=reading(2))  # back: a first sighting again, at once
    assert rec.take() == [("discovered", ADDR, True, [])]


def test_an_rssi_move_held_and_gone_back_sends_nothing() -> None:
    hub, rec, clock = make(HubSettings(broadcast_interval=1.0, broadcast_rssi_delta=8))
    heard(hub, rssi=-60)
    rec.take()
    clock.now += 0.2
    heard(hub, rssi=-75)  # news, held
    clock.now += 0.2
    heard(hub, rssi=-62)  # back within the delta of what was sent
    clock.now += 1.0
    hub.flush()
    assert rec.take() == []
    heard(hub, rssi=-75)  # the interval is over: news at once
    assert rec.take() == [("discovered", ADDR, True, [])]


def test_an_rssi_move_still_there_when_the_interval_ends_is_sent() -> None:
    hub, rec, clock = make(HubSettings(broadcast_interval=1.0, broadcast_rssi_delta=8))
    heard(hub, rssi=-60)
    rec.take()
    clock.now += 0.2
    heard(hub, rssi=-75)
    clock.now += 0.8
    hub.flush()
    assert rec.take() == [("discovered", ADDR, True, [])]


def test_a_keep_alive_shorter_than_the_interval_comes_once_per_interval() -> None:
    hub, rec, clock = make(HubSettings(broadcast_interval=1.0, broadcast_keep_alive=0.25))
    heard(hub)
    rec.take()
    for _ in range(20):  # unchanged reports every 0.1 s for 2 s
        clock.now += 0.1
        heard(hub)
        hub.flush()
    assert len(broadcasts(rec)) == 2


def test_interval_zero_broadcasts_every_change() -> None:
    hub, rec, clock = make(HubSettings(broadcast_interval=0))
    run(clock, hub, seconds=1.0, step=0.1)
    assert len(broadcasts(rec)) == 10


def test_the_interval_changes_live() -> None:
    hub, rec, clock = make(HubSettings(broadcast_interval=10.0))
    start = clock.now
    heard(hub, mfr=reading(0))
    clock.now = start + 0.5
    heard(hub, mfr=reading(1))
    rec.take()
    assert hub.next_due() == start + 10.0
    hub.configure(HubSettings(broadcast_interval=1.0))  # the held device is re-timed
    assert hub.next_due() == start + 1.0
    hub.configure(HubSettings(broadcast_interval=0))  # due at once
    hub.flush()
    assert rec.take() == [("discovered", ADDR, True, [])]
    clock.now = start + 0.51
    heard(hub, mfr=reading(2))
    assert rec.take() == [("discovered", ADDR, True, [])]


def test_each_device_has_its_own_interval() -> None:
    hub, rec, clock = make(EVERY_SECOND)
    heard(hub, address=ADDR, mfr=reading(0))
    clock.now += 0.5
    heard(hub, address=OTHER, mfr=reading(0))
    rec.take()
    clock.now += 0.1
    heard(hub, address=ADDR, mfr=reading(1))
    heard(hub, address=OTHER, mfr=reading(1))
    clock.now += 0.4  # ADDR's interval ends (1.0), OTHER's not (1.5)
    hub.flush()
    assert rec.take() == [("discovered", ADDR, True, [])]
    clock.now += 0.5
    hub.flush()
    assert rec.take() == [("discovered", OTHER, True, [])]


def test_coalescing_and_the_interval_combine() -> None:
    hub, rec, clock = make(EVERY_SECOND)
    sub, _ = hub.subscribe(":1.5", Filter(), NO_REPLAY)
    heard(hub, mfr=reading(0))
    rec.take()
    hub.shed(ShedStep.COALESCE)
    value = 1
    for _ in range(4):  # two coalescing windows of 0.5 s, a report every 0.25 s
        clock.now += 0.25
        heard(hub, mfr=reading(value))
        value += 1
        if value % 2 == 1:
            hub.flush()
    # the subscription once per window; the broadcast once, when its interval ends
    assert rec.take() == [
        ("discovered", ADDR, False, [sub.path]),
        ("discovered", ADDR, False, [sub.path]),
        ("discovered", ADDR, True, []),
    ]


def test_wake_is_called_for_a_new_earliest_deadline_only() -> None:
    woken: list[float] = []
    clock = Clock()
    hub = Hub(Recorder(), EVERY_SECOND, clock, clock, wake=lambda: woken.append(clock.now))
    heard(hub, address=ADDR, mfr=reading(0))
    clock.now += 0.5
    heard(hub, address=OTHER, mfr=reading(0))
    clock.now += 0.1
    heard(hub, address=OTHER, mfr=reading(1))  # held, due 1.5: the earliest
    assert len(woken) == 1
    heard(hub, address=ADDR, mfr=reading(1))  # held, due 1.0: earlier still
    assert len(woken) == 2
    heard(hub, address=ADDR, mfr=reading(2))  # already held: nothing new
    assert len(woken) == 2


def test_due_hands_back_each_held_address_once_and_skips_forgotten_ones() -> None:
    """The pure part alone: holds, deadlines and what ``forget`` leaves behind."""
    hub, _, clock = make(EVERY_SECOND)
    heard(hub, address=ADDR, mfr=reading(0))
    heard(hub, address=OTHER, mfr=reading(0))
    clock.now += 0.5
    heard(hub, address=ADDR, mfr=reading(1))
    heard(hub, address=OTHER, mfr=reading(1))
    broadcast: Broadcast = hub.broadcast
    assert broadcast.forget(OTHER)
    assert broadcast.due(clock.now + 0.49) == []
    assert broadcast.due(clock.now + 0.5) == [ADDR]
    assert broadcast.due(clock.now + 5) == []
    assert broadcast.next_due() is None


@pytest.mark.parametrize("interval", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("step", list(ShedStep))
def test_at_every_step_the_broadcast_gets_no_more_than_a_subscription(
    interval: float, step: ShedStep
) -> None:
    """The shedding order (loadcap.py): whatever the step, the broadcast is told no
    more often than a subscription with the broadcast's own settings, and an
    AllReports subscription no less often than a plain one."""
    rng = random.Random(f"{interval}-{int(step)}")
    config = HubSettings(
        broadcast_interval=interval, broadcast_rssi_delta=8, broadcast_keep_alive=2.0
    )
    hub, rec, clock = make(config)
    plain, _ = hub.subscribe(":1.5", Filter(), SubscriptionOptions(replay=False))
    every, _ = hub.subscribe(":1.6", Filter(), SubscriptionOptions(replay=False, all_reports=True))
    hub.shed(step)
    value, rssi = 0, -60
    for tick in range(300):  # 30 s of reports every 0.1 s; quiet from 10 to 15 s
        clock.now += 0.1
        if not 100 <= tick < 150:
            if rng.random() < 0.3:
                value += 1  # new content now and then
            rssi = max(-100, min(-30, rssi + rng.randint(-6, 6)))
            heard(hub, rssi=rssi, mfr=reading(value))
        if tick % 5 == 4:  # the coalescing window, as loadguard's loop flushes
            hub.flush()
    hub.flush()
    events = rec.take()
    told = {
        name: sum(1 for e in events if (e[2] if path == "/" else path in e[3]))
        for name, path in (("broadcast", "/"), ("plain", plain.path), ("every", every.path))
    }
    assert told["broadcast"] <= told["plain"] <= told["every"], told
    if interval == 0 and step == ShedStep.NONE:
        assert told["broadcast"] == told["plain"], told  # the same rules, nothing shed
