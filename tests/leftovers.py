"""No process of the project outlives the test that started it.

A dbus-daemon, a service, a simulator, svscan or supervise left running by one
test is a zombie scanner for the next (it can hold a name, a discovery session
or a socket) and for the machine after the suite. The autouse fixture fails
the test that leaves one, after that test's own teardown, and kills what it
left so the next test starts clean.

A process is the project's if it descends from pytest, or if it carries this
session's mark in its environment: a supervise whose svscan was killed is
re-parented to init, but still inherited the mark.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Final

import pytest

# Set once per pytest process; every child inherits it unless its environment is replaced.
# An xdist worker marks its own children: a worker that inherited the controller's
# mark would count the processes of the tests running beside it as its leftovers.
MARK: Final = "BLE_SCANNER_TEST_SESSION"
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ[MARK] = str(os.getpid())
else:
    os.environ.setdefault(MARK, str(os.getpid()))
_MARK_ENTRY: Final = f"{MARK}={os.environ[MARK]}".encode()
# A process told to stop (svc -dx, SIGTERM) may still be on its way out when the
# test's teardown returns: daemontools acts within about a second; 5 s on a loaded
# 2-core machine is a process that will not go.
LEFTOVER_GRACE: Final = 5.0
# Polling step while waiting for such a process to go.
LEFTOVER_POLL: Final = 0.05


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:  # gone meanwhile, or not ours to read
        return b""


def project_processes() -> dict[int, str]:
    """Live processes of this test session (pid → command line), pytest itself excepted."""
    me = os.getpid()
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _read(f"/proc/{entry}/stat")
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) < 2 or fields[0] in (b"Z", b"X"):  # exited, not yet reaped
            continue
        parents[int(entry)] = int(fields[1])
    found: dict[int, str] = {}
    for pid, ppid in parents.items():
        if pid == me:
            continue
        ancestor, hops = ppid, 0
        while ancestor not in (me, 0, 1) and ancestor in parents and hops < len(parents):
            ancestor, hops = parents[ancestor], hops + 1
        if ancestor == me or _MARK_ENTRY in _read(f"/proc/{pid}/environ").split(b"\0"):
            cmdline = _read(f"/proc/{pid}/cmdline").replace(b"\0", b" ").strip()
            found[pid] = cmdline.decode(errors="replace")
    return found


@pytest.fixture(autouse=True)
def no_leftover_processes() -> Iterator[None]:
    """Fail the test that leaves a process of the project running after its teardown."""
    before = set(project_processes())
    yield
    deadline = time.monotonic() + LEFTOVER_GRACE
    while True:
        left = {pid: cmd for pid, cmd in project_processes().items() if pid not in before}
        if not left or time.monotonic() > deadline:
            break
        time.sleep(LEFTOVER_POLL)
    if not left:
        return
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    listing = "\n".join(f"  {pid}: {cmd}" for pid, cmd in sorted(left.items()))
    pytest.fail(
        f"the test left {len(left)} process(es) running after its teardown "
        f"(killed now):\n{listing}",
        pytrace=False,
    )
