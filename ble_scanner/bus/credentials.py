"""Who a connection is: its Unix user and groups, asked of the bus daemon, cached per connection.

``GetConnectionCredentials`` (dbus-specification, "Message Bus Messages") gives
``UnixUserID`` and, where the daemon can read them (dbus-daemon 1.14 on Linux,
through SO_PEERGROUPS), ``UnixGroupIDs``; an older daemon without it gets
``GetConnectionUnixUser`` and the user's groups from the group database. Asked
once per connection, asynchronously: the caller waits, the loop does not; a
connection that left the bus is forgotten (``forget``).
"""

from __future__ import annotations

import asyncio
import grp
import logging
import os
import pwd

from dbus_fast import Variant
from dbus_fast.aio import MessageBus

from ..const import DBUS_DAEMON_CALL_TIMEOUT, ERROR_UNKNOWN_METHOD
from ..core.access import Credentials, SteerGroup
from .calls import CallError, call_bus

_LOGGER = logging.getLogger(__name__)


def steer_group(text: str) -> SteerGroup:
    """The ``SteerGroup`` setting (a group name or a numeric gid) resolved to a gid."""
    name = text.strip()
    if not name:
        return SteerGroup("", None)
    if name.isascii() and name.isdigit():
        return SteerGroup(name, int(name))
    try:
        return SteerGroup(name, grp.getgrnam(name).gr_gid)
    except KeyError:
        # Not a warning: the default group need not exist (Venus OS, most hosts).
        _LOGGER.info("SteerGroup: no group %r here; only root may steer the radio", name)
        return SteerGroup(name, None)


def groups_of(uid: int) -> frozenset[int]:
    """The groups of ``uid`` in the group database (its primary group included)."""
    try:
        user = pwd.getpwuid(uid)
    except KeyError:
        return frozenset()
    return frozenset(os.getgrouplist(user.pw_name, user.pw_gid))


def credentials_of(found: dict[str, Variant]) -> Credentials | None:
    """GetConnectionCredentials' answer; None without UnixUserID (not a Unix peer)."""
    user = found.get("UnixUserID")
    if user is None:
        return None
    uid = int(user.value)
    gids = found.get("UnixGroupIDs")
    return Credentials(uid, frozenset(gids.value) if gids is not None else groups_of(uid))


class CredentialCache:
    """Credentials of the connections calling us, each asked for once and kept until it leaves."""

    def __init__(self, bus: MessageBus, timeout: float = DBUS_DAEMON_CALL_TIMEOUT) -> None:
        self.bus = bus
        self.timeout = timeout
        self._known: dict[str, Credentials] = {}
        self._asking: dict[str, asyncio.Future[Credentials | None]] = {}

    def __len__(self) -> int:
        return len(self._known)

    def get(self, name: str) -> Credentials | None:
        return self._known.get(name)

    def asking(self, name: str) -> bool:
        return name in self._asking

    async def lookup(self, name: str) -> Credentials | None:
        """The credentials of connection ``name``; None if the bus daemon could not say
        (the connection is gone). Concurrent lookups of one name share one question."""
        known = self._known.get(name)
        if known is not None:
            return known
        pending = self._asking.get(name)
        if pending is not None:
            return await pending
        pending = asyncio.get_running_loop().create_future()
        self._asking[name] = pending
        found: Credentials | None = None
        try:
            found = await self._ask(name)
        except Exception as exc:  # the connection is gone, or the daemon did not answer
            _LOGGER.warning("cannot learn who %s is: %s", name, exc)
        finally:
            # Forgotten while we asked (it left the bus): answer, but keep nothing.
            if self._asking.get(name) is pending:
                del self._asking[name]
                if found is not None:
                    self._known[name] = found
            if not pending.done():
                pending.set_result(found)
        return found

    def forget(self, name: str) -> None:
        """The connection left the bus: drop what we know or are asking about it."""
        self._known.pop(name, None)
        self._asking.pop(name, None)

    async def _ask(self, name: str) -> Credentials:
        try:
            (found,) = await call_bus(
                self.bus, "GetConnectionCredentials", "s", [name], timeout=self.timeout
            )
            credentials = credentials_of(found)
            if credentials is not None:
                return credentials
        except CallError as exc:
            if exc.name != ERROR_UNKNOWN_METHOD:
                raise
        (uid,) = await call_bus(
            self.bus, "GetConnectionUnixUser", "s", [name], timeout=self.timeout
        )
        return Credentials(int(uid), groups_of(int(uid)))
