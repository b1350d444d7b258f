"""The bt-claims convention 0.4, as rules: pure logic, no files, no clock of its own.

BLE services on a GX share adapters through small files in ``/run/bt-claims``
(TechBlueprints/bleak-connection-manager, ``claims.py``): one file per claim,
named ``KEY.KIND[.QUALIFIER]``, holding one line ``<pid> <service> <since>``
and touched by its holder every :data:`HEARTBEAT` seconds. KEY is the
adapter's own address, colons stripped, upper case (``AABBCCDDEEFF``);
convention 0.3 and earlier used ``hciN``, and 0.4 readers count both.

We read the claims before a power cycle (which drops every link on the
adapter) and take the adapter's ``.drain`` while we wait for other owners'
``.link.*`` and ``.use.*`` to go. ``claimsdir.py`` does the file work;
everything that decides is here, given the time and a pid check.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final

# Where the convention keeps its files (a tmpfs on Venus OS: claims end with the boot).
CLAIMS_DIR: Final = "/run/bt-claims"
# The convention's heartbeat: a holder touches its file this often ...
HEARTBEAT: Final = 10.0
# ... and a claim whose file was touched longer ago than this is not live
# (three missed heartbeats: a holder stalled that long holds nothing).
LIVE_FOR: Final = 30.0
# How long the service waits, by default, for other owners' links and uses to
# go before a power cycle: long enough for a connection manager to move a
# link to another adapter (a BLE connect takes a few seconds), short enough
# that a stuck adapter is not left stuck for long.
DEFAULT_DRAIN_TIMEOUT: Final = 30.0
# The service name written into our claims, as the convention's second field.
SERVICE: Final = "dbus-ble-scanner"


class Kind(enum.Enum):
    """The claim kinds of convention 0.4, by the word after the key."""

    SCAN = "scan"  # exclusive scan claim: "use another card"
    USE = "use"  # soft, one per claimant: someone works on this adapter
    LINK = "link"  # an exclusive numbered connection slot in use
    DRAIN = "drain"  # exclusive: this adapter is about to be reset


# A power cycle drops these: they veto our reset until they go or the drain times out.
VETOING: Final = frozenset({Kind.USE, Kind.LINK})


@dataclass(frozen=True, slots=True)
class Claim:
    """One claim file as read: its name, whose it is, and when it was last touched."""

    name: str  # the file name, e.g. AABBCCDDEEFF.link.0
    key: str
    kind: Kind
    pid: int
    service: str
    mtime: float  # wall clock (the file's mtime), seconds since the epoch

    def __str__(self) -> str:
        """Who holds it, for an adapter's State: ``dbus-serialbattery pid 812``."""
        return f"{self.service} pid {self.pid}"


def adapter_key(address: str) -> str:
    """``aa:bb:cc:dd:ee:ff`` -> ``AABBCCDDEEFF``: the adapter's key in convention 0.4."""
    return address.replace(":", "").strip().upper()


def keys_for(address: str, adapter: str) -> tuple[str, ...]:
    """Every key a claim on this adapter may use: its address, then its ``hciN`` (0.3).

    The first is the one we write under; an adapter whose address BlueZ did not
    give is known by its name alone.
    """
    key = adapter_key(address)
    return (key, adapter) if key else (adapter,)


def parse_name(name: str) -> tuple[str, Kind] | None:
    """``AABBCCDDEEFF.link.0`` -> (``AABBCCDDEEFF``, LINK); None for anything else."""
    key, _, rest = name.partition(".")
    word = rest.split(".", 1)[0]
    try:
        kind = Kind(word)
    except ValueError:
        return None
    return (key, kind) if key else None


def parse_content(text: str) -> tuple[int, str] | None:
    """``812 dbus-serialbattery 1764412345`` -> (812, ``dbus-serialbattery``); None if not that."""
    fields = text.split()
    if len(fields) < 2 or not fields[0].isascii() or not fields[0].isdigit():
        return None
    pid = int(fields[0])
    return (pid, fields[1]) if pid > 0 else None


def content(pid: int, service: str, since: float) -> str:
    """The line a claim file holds."""
    return f"{pid} {service} {int(since)}\n"


def is_live(claim: Claim, now: float, pid_alive: bool) -> bool:
    """Live: its holder runs and touched it within :data:`LIVE_FOR` seconds."""
    return pid_alive and now - claim.mtime <= LIVE_FOR


def is_stale(claim: Claim, now: float, pid_alive: bool) -> bool:
    """Stale: its holder is gone AND it is old; only such a file may be unlinked by anyone."""
    return not pid_alive and now - claim.mtime > LIVE_FOR


def live_claims(
    claims: Iterable[Claim], now: float, pid_alive: Callable[[int], bool]
) -> list[Claim]:
    """The claims that count now, in name order."""
    return sorted((c for c in claims if is_live(c, now, pid_alive(c.pid))), key=lambda c: c.name)


def vetoes(claims: Iterable[Claim], own_pid: int) -> list[Claim]:
    """Other owners' links and uses: what a power cycle would break for them."""
    return [c for c in claims if c.kind in VETOING and c.pid != own_pid]


def other_drain(claims: Iterable[Claim], own_pid: int) -> Claim | None:
    """Another process's drain: it is about to reset the adapter, so we keep off it."""
    return next((c for c in claims if c.kind is Kind.DRAIN and c.pid != own_pid), None)
