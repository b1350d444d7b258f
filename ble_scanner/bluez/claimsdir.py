"""The bt-claims directory on disk: reading other owners' claims, taking and keeping our drain.

The rules are :mod:`.claims`'; this module only lists, stats, reads, creates,
touches and unlinks files. Coordination is an optimisation (the convention
says so): a directory we cannot use behaves as "no claims anywhere", and is
logged once, not on every look.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable, Iterable

from .claims import (
    SERVICE,
    Claim,
    Kind,
    content,
    is_live,
    is_stale,
    live_claims,
    parse_content,
    parse_name,
)

_LOGGER = logging.getLogger(__name__)


def pid_alive(pid: int) -> bool:
    """The process exists (a process of another user counts: it answers EPERM)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class DrainHeld(Exception):
    """Another process holds the adapter's drain: it is about to reset the adapter."""

    def __init__(self, claim: Claim) -> None:
        super().__init__(f"{claim.name} is held by {claim}")
        self.claim = claim


class Drain:
    """Our ``KEY.drain`` while we hold it: touched every heartbeat, unlinked when done."""

    def __init__(self, path: str) -> None:
        self.path = path

    def touch(self) -> None:
        try:
            os.utime(self.path)
        except OSError as exc:
            _LOGGER.warning("cannot touch %s: %s", self.path, exc)

    def release(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            _LOGGER.warning("cannot release %s: %s", self.path, exc)


class ClaimsDir:
    """One claims directory, read and written as this process (``pid``)."""

    def __init__(
        self,
        path: str,
        pid: int | None = None,
        service: str = SERVICE,
        clock: Callable[[], float] = time.time,
        alive: Callable[[int], bool] = pid_alive,
    ) -> None:
        self.path = path
        self.pid = os.getpid() if pid is None else pid
        self.service = service
        self.clock = clock  # wall clock: the convention compares file mtimes
        self.alive = alive
        self._warned = False

    def _unusable(self, exc: OSError) -> None:
        if not self._warned:
            self._warned = True
            # No directory at all is a GX where nobody follows the convention
            # (the stock image): worth a line, not a warning.
            log = _LOGGER.info if exc.errno == errno.ENOENT else _LOGGER.warning
            log(
                "claims directory %s is unusable (%s): no coordination with other "
                "Bluetooth services",
                self.path,
                exc.strerror or exc,
            )

    def _read(self, name: str) -> Claim | None:
        parsed = parse_name(name)
        if parsed is None:
            return None
        path = os.path.join(self.path, name)
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                holder = parse_content(f.read(256))
            mtime = os.stat(path).st_mtime
        except OSError:
            return None  # released while we looked
        if holder is None:
            return None
        return Claim(name, parsed[0], parsed[1], holder[0], holder[1], mtime)

    def read(self, keys: Iterable[str]) -> list[Claim]:
        """The live claims on any of ``keys``; none when the directory is missing or unusable."""
        wanted = set(keys)
        try:
            names = os.listdir(self.path)
        except OSError as exc:
            self._unusable(exc)
            return []
        claims = (
            claim
            for name in names
            if name.partition(".")[0] in wanted and (claim := self._read(name)) is not None
        )
        return live_claims(claims, self.clock(), self.alive)

    def take_drain(self, key: str) -> Drain | None:
        """Create ``KEY.drain`` exclusively; None when the directory is unusable.

        Raises :class:`DrainHeld` when another process holds it. A stale drain
        (dead holder, old file) is unlinked and taken, as the convention allows.
        """
        name = f"{key}.{Kind.DRAIN.value}"
        path = os.path.join(self.path, name)
        for _ in range(2):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                held = self._read(name)
                now = self.clock()
                if held is not None and held.pid == self.pid:
                    return Drain(path)  # ours, left by an attempt that did not end
                if held is not None and is_live(held, now, self.alive(held.pid)):
                    raise DrainHeld(held) from None
                if held is not None and not is_stale(held, now, self.alive(held.pid)):
                    raise DrainHeld(held) from None  # neither live nor ours to unlink
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    self._unusable(exc)
                    return None
                continue
            except OSError as exc:
                self._unusable(exc)
                return None
            try:
                os.write(fd, content(self.pid, self.service, self.clock()).encode())
            finally:
                os.close(fd)
            return Drain(path)
        return None
