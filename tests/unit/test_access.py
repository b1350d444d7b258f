"""Who may steer the radio and set the tree (core/access.py)."""

from __future__ import annotations

import pytest

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
