"""Leases merge per adapter, expire, and end with their owner."""

from __future__ import annotations

import pytest

from ble_scanner.core.leases import (
    LeaseError,
    LeaseKind,
    LeaseRegistry,
    NotLeaseOwner,
    TooManyLeases,
    UnknownLease,
)


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def test_overlapping_leases_merge_until_the_last_ends() -> None:
    clock = Clock()
    leases = LeaseRegistry(clock)
    a = leases.request(":1.1", LeaseKind.ACTIVE, "hci0", 10)
    leases.request(":1.2", LeaseKind.ACTIVE, "", 20)
    assert leases.wants("hci0", LeaseKind.ACTIVE) and leases.wants("hci1", LeaseKind.ACTIVE)
    leases.release(a.path, ":1.1")
    clock.now += 15
    assert leases.wants("hci0", LeaseKind.ACTIVE)
    clock.now += 5
    assert not leases.wants("hci0", LeaseKind.ACTIVE)
    assert len(leases.expire()) == 1 and len(leases) == 0


def test_lease_for_one_adapter_does_not_cover_another() -> None:
    leases = LeaseRegistry(Clock())
    leases.request(":1.1", LeaseKind.PAUSE, "hci1", 5)
    assert leases.wants("hci1", LeaseKind.PAUSE)
    assert not leases.wants("hci0", LeaseKind.PAUSE)
    assert not leases.wants("hci1", LeaseKind.ACTIVE)


def test_next_expiry_and_owner_leaving() -> None:
    clock = Clock()
    leases = LeaseRegistry(clock)
    leases.request(":1.1", LeaseKind.ACTIVE, "hci0", 30)
    leases.request(":1.1", LeaseKind.PAUSE, "hci0", 5)
    assert leases.next_expiry() == 105.0
    assert len(leases.drop_owner(":1.1")) == 2
    assert leases.next_expiry() is None


@pytest.mark.parametrize(
    ("kind", "adapter", "seconds"),
    [
        (LeaseKind.ACTIVE, "hci0", 0.0),
        (LeaseKind.ACTIVE, "hci0", 301.0),
        (LeaseKind.PAUSE, "hci0", 61.0),
        (LeaseKind.PAUSE, "wlan0", 5.0),
        (LeaseKind.PAUSE, "hci", 5.0),
    ],
)
def test_out_of_range_requests_are_refused(kind: LeaseKind, adapter: str, seconds: float) -> None:
    with pytest.raises(LeaseError):
        LeaseRegistry(Clock()).request(":1.1", kind, adapter, seconds)


def test_release_checks_the_owner_and_the_count_is_bounded() -> None:
    leases = LeaseRegistry(Clock())
    lease = leases.request(":1.1", LeaseKind.ACTIVE, "hci0", 5)
    with pytest.raises(NotLeaseOwner):
        leases.release(lease.path, ":1.2")
    with pytest.raises(UnknownLease):
        leases.release("/Lease/999", ":1.1")
    for _ in range(7):
        leases.request(":1.1", LeaseKind.ACTIVE, "hci0", 5)
    with pytest.raises(TooManyLeases):
        leases.request(":1.1", LeaseKind.ACTIVE, "hci0", 5)


def test_a_user_other_than_root_is_bounded_over_its_connections() -> None:
    leases = LeaseRegistry(Clock(), per_user=16)
    for i in range(16):
        leases.request(f":1.{i // 8}", LeaseKind.PAUSE, "hci0", 5, uid=1000)
    with pytest.raises(TooManyLeases, match=r"uid 1000 .*MaxLeasesPerUser"):
        leases.request(":1.9", LeaseKind.PAUSE, "hci0", 5, uid=1000)
    for i in range(24):  # root: per connection only
        leases.request(f":2.{i // 8}", LeaseKind.PAUSE, "hci0", 5, uid=0)
    assert leases.uids() == {0, 1000}
    leases.drop_owner(":1.0")
    leases.request(":1.9", LeaseKind.PAUSE, "hci0", 5, uid=1000)
