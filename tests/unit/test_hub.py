"""The hub: emission rules per listener, lost timeout, size bound, subscriptions, limits."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from ble_scanner.core.cache import Device
from ble_scanner.core.filters import Filter, SnapshotQuery, SubscriptionOptions
from ble_scanner.core.hub import Hub, HubSettings
from ble_scanner.core.record import DeviceView
from ble_scanner.core.subscriptions import NotOwner, Subscription, TooManySubscriptions

ADDR = "C0:11:22:33:44:55"


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Recorder:
    """An Emitter that writes down what would go on the bus."""

    events: list[tuple[str, str, bool, list[str]]] = field(default_factory=list)

    def device_discovered(self, device: Device, broadcast: bool, subs: list[Subscription]) -> None:
        self.events.append(("discovered", device.address, broadcast, [s.path for s in subs]))

    def device_lost(self, address: str, broadcast: bool, subs: list[Subscription]) -> None:
        self.events.append(("lost", address, broadcast, [s.path for s in subs]))

    def take(self) -> list[tuple[str, str, bool, list[str]]]:
        events, self.events = self.events, []
        return events


# The broadcast's interval (emission.Broadcast) has tests of its own (test_emission.py);
# by default the hub here broadcasts every change, so these tests see the other rules.
EVERY_CHANGE = HubSettings(broadcast_interval=0)


def make(config: HubSettings | None = None) -> tuple[Hub, Recorder, Clock]:
    recorder, clock = Recorder(), Clock()
    scanner = Hub(recorder, config or EVERY_CHANGE, monotonic=clock, wall=clock)
    return scanner, recorder, clock


def heard(
    scanner: Hub,
    address: str = ADDR,
    rssi: int = -60,
    mfr: dict[int, bytes] | None = None,
    adapter: str = "hci0",
    name: str | None = None,
) -> Device | None:
    view = DeviceView(f"/org/bluez/{adapter}/dev_{address.replace(':', '_')}", adapter)
    props: dict[str, object] = {
        "Address": address,
        "RSSI": rssi,
        "ManufacturerData": mfr if mfr is not None else {0x0499: b"\x05\x01"},
    }
    if name is not None:
        props["Name"] = name
    view.update(props)
    return scanner.report(view)


def test_new_device_is_broadcast() -> None:
    scanner, rec, _ = make()
    heard(scanner)
    assert rec.take() == [("discovered", ADDR, True, [])]


def test_unchanged_report_is_not_news() -> None:
    scanner, rec, _ = make()
    heard(scanner)
    rec.take()
    heard(scanner, rssi=-61)
    assert rec.take() == []


def test_content_change_is_news() -> None:
    scanner, rec, _ = make()
    heard(scanner)
    rec.take()
    heard(scanner, mfr={0x0499: b"\x05\x02"})
    assert rec.take() == [("discovered", ADDR, True, [])]


def test_rssi_moving_by_the_delta_is_news() -> None:
    scanner, rec, _ = make(HubSettings(broadcast_rssi_delta=8, broadcast_interval=0))
    heard(scanner, rssi=-60)
    rec.take()
    heard(scanner, rssi=-67)
    assert rec.take() == []
    heard(scanner, rssi=-68)
    assert rec.take() == [("discovered", ADDR, True, [])]


def test_keep_alive_resends_an_unchanged_device() -> None:
    scanner, rec, clock = make(HubSettings(broadcast_keep_alive=30))
    heard(scanner)
    rec.take()
    clock.now += 29
    heard(scanner)
    assert rec.take() == []
    clock.now += 1
    heard(scanner)
    assert rec.take() == [("discovered", ADDR, True, [])]


def test_keep_alive_zero_never_resends() -> None:
    scanner, rec, clock = make(HubSettings(broadcast_keep_alive=0))
    heard(scanner)
    rec.take()
    clock.now += 10_000
    scanner.cache.lost_timeout = 100_000
    heard(scanner)
    assert rec.take() == []


def test_device_lost_after_timeout_then_new_again() -> None:
    scanner, rec, clock = make(HubSettings(lost_timeout=60))
    heard(scanner)
    rec.take()
    clock.now += 59
    assert scanner.sweep() == []
    clock.now += 1
    assert [d.address for d in scanner.sweep()] == [ADDR]
    assert rec.take() == [("lost", ADDR, True, [])]
    heard(scanner)
    assert rec.take() == [("discovered", ADDR, True, [])]


def test_cache_size_bound_evicts_least_recently_heard_as_lost() -> None:
    scanner, rec, clock = make(HubSettings(cache_size=2))
    for i in range(3):
        clock.now += 1
        heard(scanner, address=f"C0:11:22:33:44:5{i}")
    events = rec.take()
    assert ("lost", "C0:11:22:33:44:50", True, []) in events
    assert len(scanner.cache) == 2


def test_ignored_company_ids_never_reach_the_cache() -> None:
    scanner, rec, _ = make(HubSettings(ignore_company_ids=frozenset({0x004C})))
    assert heard(scanner, mfr={0x004C: b"\x10\x05"}) is None
    assert heard(scanner, address="C0:11:22:33:44:56", mfr={0x004C: b"", 0x0499: b""}) is not None
    assert [e[1] for e in rec.take()] == ["C0:11:22:33:44:56"]
    assert scanner.stats.ignored == 1


def test_configure_applies_live_and_reports_newly_ignored_as_lost() -> None:
    scanner, rec, _ = make()
    heard(scanner, mfr={0x004C: b"\x10"})
    rec.take()
    scanner.configure(HubSettings(ignore_company_ids=frozenset({0x004C})))
    assert rec.take() == [("lost", ADDR, True, [])]


def test_subscription_gets_only_its_slice_and_replay() -> None:
    scanner, rec, _ = make()
    heard(scanner, address="C0:00:00:00:00:01", mfr={0x02E1: b"\x10"})
    heard(scanner, address="C0:00:00:00:00:02", mfr={0x0499: b"\x05"})
    rec.take()
    sub, replay = scanner.subscribe(
        ":1.7", Filter(manufacturer_ids=frozenset({0x02E1})), SubscriptionOptions()
    )
    assert [d.address for d in replay] == ["C0:00:00:00:00:01"]
    heard(scanner, address="C0:00:00:00:00:01", mfr={0x02E1: b"\x11"})
    heard(scanner, address="C0:00:00:00:00:02", mfr={0x0499: b"\x06"})
    assert rec.take() == [
        ("discovered", "C0:00:00:00:00:01", True, [sub.path]),
        ("discovered", "C0:00:00:00:00:02", True, []),
    ]


def test_replayed_device_is_not_sent_again_until_it_changes() -> None:
    scanner, rec, _ = make()
    heard(scanner)
    rec.take()
    sub, replay = scanner.subscribe(":1.7", Filter(), SubscriptionOptions())
    assert len(replay) == 1
    heard(scanner)
    assert rec.take() == []


def test_all_reports_gives_every_report() -> None:
    scanner, rec, _ = make()
    sub, _ = scanner.subscribe(":1.7", Filter(), SubscriptionOptions(all_reports=True))
    heard(scanner)
    heard(scanner)
    assert rec.take() == [
        ("discovered", ADDR, True, [sub.path]),
        ("discovered", ADDR, False, [sub.path]),
    ]


def test_subscription_rssi_delta_overrides_broadcast() -> None:
    scanner, rec, _ = make()
    sub, _ = scanner.subscribe(":1.7", Filter(), SubscriptionOptions(rssi_delta=1))
    heard(scanner, rssi=-60)
    rec.take()
    heard(scanner, rssi=-61)
    assert rec.take() == [("discovered", ADDR, False, [sub.path])]


def test_lost_goes_to_subscriptions_that_were_told() -> None:
    scanner, rec, clock = make(HubSettings(lost_timeout=10))
    told, _ = scanner.subscribe(":1.7", Filter(), SubscriptionOptions())
    untold, _ = scanner.subscribe(
        ":1.8", Filter(manufacturer_ids=frozenset({1})), SubscriptionOptions()
    )
    heard(scanner)
    rec.take()
    clock.now += 10
    scanner.sweep()
    assert rec.take() == [("lost", ADDR, True, [told.path])]


def test_snapshot_max_age() -> None:
    scanner, _, clock = make()
    heard(scanner, address="C0:00:00:00:00:01")
    clock.now += 30
    heard(scanner, address="C0:00:00:00:00:02")
    recent = scanner.snapshot(SnapshotQuery(Filter(), max_age=10))
    assert [d.address for d in recent] == ["C0:00:00:00:00:02"]


def test_subscription_limits_and_ownership() -> None:
    scanner, _, _ = make()
    subs = [scanner.subscribe(":1.7", Filter(), SubscriptionOptions())[0] for _ in range(16)]
    with pytest.raises(TooManySubscriptions):
        scanner.subscribe(":1.7", Filter(), SubscriptionOptions())
    with pytest.raises(NotOwner):
        scanner.unsubscribe(subs[0].path, ":1.8")
    assert len(scanner.owner_left(":1.7")) == 16
    assert len(scanner.subscriptions) == 0


def test_total_subscription_limit() -> None:
    scanner, _, _ = make()
    for i in range(256):
        scanner.subscribe(f":1.{i // 16}", Filter(), SubscriptionOptions())
    with pytest.raises(TooManySubscriptions):
        scanner.subscribe(":1.999", Filter(), SubscriptionOptions())


def test_same_device_on_two_adapters_is_one_record_with_the_latest_adapter() -> None:
    scanner, rec, _ = make()
    heard(scanner, adapter="hci0")
    device = heard(scanner, adapter="hci1", rssi=-40)
    assert device is not None and device.adapter == "hci1"
    assert device.path.startswith("/org/bluez/hci1/")
    assert len(scanner.cache) == 1


def test_hub_settings_default_to_the_settings_table_and_copy_its_fields() -> None:
    from ble_scanner.config import ScannerConfig

    assert HubSettings() == HubSettings.of(ScannerConfig())
    config = ScannerConfig(lost_timeout=7.0, ignore_addresses=frozenset({ADDR}), shed_cpu_percent=9)
    settings = HubSettings.of(config)
    assert (settings.lost_timeout, settings.ignore_addresses, settings.shed_cpu_percent) == (
        7.0,
        frozenset({ADDR}),
        9,
    )


def test_a_user_is_bounded_over_its_connections_and_root_keeps_its_reserve() -> None:
    scanner, _, _ = make()
    scanner.configure(
        replace(scanner.settings, max_subscriptions_per_user=32, subscriptions_reserved_for_root=16)
    )
    for i in range(32):
        scanner.subscribe(f":1.{i // 8}", Filter(), SubscriptionOptions(), uid=1000)
    with pytest.raises(TooManySubscriptions, match=r"uid 1000 .*MaxSubscriptionsPerUser"):
        scanner.subscribe(":1.50", Filter(), SubscriptionOptions(), uid=1000)
    # Other users fill up to the reserve, and no further; root takes the reserve.
    for i in range(256 - 16 - 32):
        scanner.subscribe(f":2.{i // 16}", Filter(), SubscriptionOptions(), uid=2000 + i // 32)
    with pytest.raises(TooManySubscriptions, match="SubscriptionsReservedForRoot"):
        scanner.subscribe(":3.1", Filter(), SubscriptionOptions(), uid=3000)
    for i in range(16):
        scanner.subscribe(":4.1" if i < 8 else ":4.2", Filter(), SubscriptionOptions(), uid=0)
    with pytest.raises(TooManySubscriptions, match="at most 256 subscriptions"):
        scanner.subscribe(":4.3", Filter(), SubscriptionOptions(), uid=0)
    # A user's count falls as its connections leave.
    scanner.owner_left(":1.0")
    assert 1000 in scanner.subscriptions.uids()
    for i in range(1, 4):
        scanner.owner_left(f":1.{i}")
    assert 1000 not in scanner.subscriptions.uids()
