"""Who may steer the radio and set the tree (core/access.py), and who a caller is
(bus/credentials.py)."""

from __future__ import annotations

import grp

import pytest
from dbus_fast import Variant

from ble_scanner.bus.credentials import credentials_of, groups_of, steer_group
from ble_scanner.core.access import (
    AccessDenied,
    Credentials,
    SteerGroup,
    check_root,
    check_steer,
    may_steer,
)

BLUETOOTH = SteerGroup("bluetooth", 112)


def test_root_and_members_of_the_group_may_steer() -> None:
    assert may_steer(Credentials(0, frozenset()), BLUETOOTH)
    assert may_steer(Credentials(1000, frozenset({1000, 112})), BLUETOOTH)
    assert not may_steer(Credentials(1000, frozenset({1000})), BLUETOOTH)
    # An unknown group name: root only.
    assert not may_steer(Credentials(1000, frozenset({112})), SteerGroup("bluetooth", None))


def test_a_refusal_says_what_is_needed() -> None:
    with pytest.raises(
        AccessDenied, match=r"^PauseScan needs root or membership of group 'bluetooth'$"
    ):
        check_steer("PauseScan", Credentials(1000, frozenset()), BLUETOOTH)
    with pytest.raises(AccessDenied, match=r"^RequestActiveScan needs root$"):
        check_steer("RequestActiveScan", Credentials(1000, frozenset()), SteerGroup("", None))
    with pytest.raises(AccessDenied, match=r"^SetValue needs root$"):
        check_root("SetValue", Credentials(1000, frozenset({112})))
    check_root("SetValue", Credentials(0, frozenset()))


def test_the_steer_group_is_a_name_or_a_gid() -> None:
    assert steer_group("4242") == SteerGroup("4242", 4242)
    assert steer_group(grp.getgrgid(0).gr_name) == SteerGroup(grp.getgrgid(0).gr_name, 0)
    assert steer_group(" ") == SteerGroup("", None)  # root only
    assert steer_group("no-such-group-here").gid is None  # root only, logged


def test_without_group_ids_from_the_daemon_the_group_database_says() -> None:
    # An older dbus-daemon's GetConnectionCredentials has no UnixGroupIDs.
    root = credentials_of({"UnixUserID": Variant("u", 0)})
    assert root == Credentials(0, groups_of(0)) and 0 in root.gids
    member = credentials_of({"UnixUserID": Variant("u", 1000), "UnixGroupIDs": Variant("au", [7])})
    assert member == Credentials(1000, frozenset({7}))
    assert credentials_of({"ProcessID": Variant("u", 1)}) is None
