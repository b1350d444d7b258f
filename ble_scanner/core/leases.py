"""Scan leases: clients asking for an active window, or for a pause before they connect.

Pure logic with an injected clock. A lease belongs to the caller's connection
and ends when it expires, is released, or its owner leaves the bus.
Overlapping leases merge: an adapter is in an active window while any active
lease covers it, and paused while any pause lease does (a pause wins, since a
client is about to connect).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from ..const import DEFAULT_MAX_LEASES_PER_USER
from .access import ROOT

# An active window longer than this is a mode, not a window: set ScanMode.
MAX_ACTIVE_WINDOW: Final = 300.0
# A connection attempt that needs the radio quiet for longer is stuck.
MAX_PAUSE: Final = 60.0
MAX_LEASES_PER_CONNECTION: Final = 8
LEASE_PATH_PREFIX: Final = "/Lease/"


class LeaseKind(enum.Enum):
    ACTIVE = "active"
    PAUSE = "pause"


class LeaseError(ValueError):
    """The request is out of range (→ InvalidArgs)."""


class TooManyLeases(Exception):
    """A per-connection or per-user limit would be exceeded (→ LimitsExceeded); the text
    names it."""


class UnknownLease(Exception):
    """No lease has this path (→ UnknownLease)."""


class NotLeaseOwner(Exception):
    """Only the connection that took a lease may release it (→ NotOwner)."""


@dataclass(slots=True)
class Lease:
    path: str
    owner: str
    kind: LeaseKind
    adapter: str  # "" = every adapter
    expires: float
    uid: int = ROOT  # the owner's Unix user, for the per-user limit

    def covers(self, adapter: str) -> bool:
        return not self.adapter or self.adapter == adapter


class LeaseRegistry:
    """Leases by path; at most ``MAX_LEASES_PER_CONNECTION`` a connection and, for a user
    other than root, ``per_user`` over all its connections."""

    def __init__(
        self,
        monotonic: Callable[[], float] = time.monotonic,
        per_user: int = DEFAULT_MAX_LEASES_PER_USER,
    ) -> None:
        self.monotonic = monotonic
        self.per_user = per_user
        self._leases: dict[str, Lease] = {}
        self._next = 1

    def __len__(self) -> int:
        return len(self._leases)

    def uids(self) -> set[int]:
        """The Unix users holding leases."""
        return {lease.uid for lease in self._leases.values()}

    def request(
        self, owner: str, kind: LeaseKind, adapter: str, seconds: float, uid: int = ROOT
    ) -> Lease:
        limit = MAX_ACTIVE_WINDOW if kind is LeaseKind.ACTIVE else MAX_PAUSE
        if not 0 < seconds <= limit:
            raise LeaseError(f"duration must be > 0 and at most {limit:g} s, not {seconds!r}")
        if adapter and not (adapter.startswith("hci") and adapter[3:].isdigit()):
            raise LeaseError(f"adapter must be like 'hci0' or '' for all, not {adapter[:32]!r}")
        if sum(1 for lease in self._leases.values() if lease.owner == owner) >= (
            MAX_LEASES_PER_CONNECTION
        ):
            raise TooManyLeases(f"a connection may hold at most {MAX_LEASES_PER_CONNECTION} leases")
        if uid != ROOT and sum(1 for lease in self._leases.values() if lease.uid == uid) >= (
            self.per_user
        ):
            raise TooManyLeases(
                f"uid {uid} may hold at most {self.per_user} leases over all its connections "
                "(MaxLeasesPerUser)"
            )
        path = f"{LEASE_PATH_PREFIX}{self._next}"
        self._next += 1
        lease = Lease(path, owner, kind, adapter, self.monotonic() + seconds, uid)
        self._leases[path] = lease
        return lease

    def release(self, path: str, caller: str) -> Lease:
        lease = self._leases.get(path)
        if lease is None:
            raise UnknownLease(f"no lease {path!r}")
        if lease.owner != caller:
            raise NotLeaseOwner(f"{path} belongs to another connection")
        del self._leases[path]
        return lease

    def drop_owner(self, owner: str) -> list[Lease]:
        dropped = [lease for lease in self._leases.values() if lease.owner == owner]
        for lease in dropped:
            del self._leases[lease.path]
        return dropped

    def expire(self) -> list[Lease]:
        now = self.monotonic()
        expired = [lease for lease in self._leases.values() if lease.expires <= now]
        for lease in expired:
            del self._leases[lease.path]
        return expired

    def next_expiry(self) -> float | None:
        return min((lease.expires for lease in self._leases.values()), default=None)

    def wants(self, adapter: str, kind: LeaseKind) -> bool:
        now = self.monotonic()
        return any(
            lease.kind is kind and lease.expires > now and lease.covers(adapter)
            for lease in self._leases.values()
        )
