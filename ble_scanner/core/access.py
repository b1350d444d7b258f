"""Who may do what: steering the radio is for root and one group. Pure logic.

Reading and subscribing are open to everyone; what changes what the radio does
(``PauseScan``, ``RequestActiveScan``) needs uid 0 or membership of the group
``SteerGroup`` names; ``SetValue`` on the service's own tree needs root
(docs/dbus-api.md "Who may do what"). The caller's uid and groups come from the
bus daemon (bus/credentials.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

ROOT: Final = 0


class AccessDenied(Exception):
    """The caller lacks the right (→ org.freedesktop.DBus.Error.AccessDenied)."""


@dataclass(slots=True, frozen=True)
class Credentials:
    """A connection's Unix user and every group it is in (its primary one included)."""

    uid: int
    gids: frozenset[int]


@dataclass(slots=True, frozen=True)
class SteerGroup:
    """The group whose members may steer: as the setting names it, and its gid.

    ``gid`` is None when the name is unknown to the group database: then only
    root may steer.
    """

    name: str
    gid: int | None


def may_steer(credentials: Credentials, group: SteerGroup) -> bool:
    return credentials.uid == ROOT or (group.gid is not None and group.gid in credentials.gids)


def check_steer(member: str, credentials: Credentials, group: SteerGroup) -> None:
    """AccessDenied, saying what is needed, unless ``credentials`` may steer the radio."""
    if may_steer(credentials, group):
        return
    if group.name:
        raise AccessDenied(f"{member} needs root or membership of group {group.name!r}")
    raise AccessDenied(f"{member} needs root")


def check_root(member: str, credentials: Credentials) -> None:
    if credentials.uid != ROOT:
        raise AccessDenied(f"{member} needs root")
