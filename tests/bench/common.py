"""What the benchmark processes share: the control channel, the payload, /proc readings."""

from __future__ import annotations

import asyncio
import json
import os
import struct
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

# Reports that carry a timestamp use the company id reserved for tests
# (Bluetooth SIG "0xFFFF: for internal and interoperability tests").
BENCH_COMPANY: Final = 0xFFFF
# run id, sequence number, CLOCK_MONOTONIC at emission (system-wide, so every
# process on the machine reads the same clock), padded to a typical 20 bytes.
_STAMP: Final = struct.Struct("<IId4x")
BENCH_PAYLOAD_SIZE: Final = _STAMP.size

# The bare relay owns this name so that clients and the start-up probe find it.
RELAY_NAME: Final = "com.victronenergy.ble.benchrelay"
RELAY_POLICY: Final = f"""<!DOCTYPE busconfig PUBLIC
 "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy user="root"><allow own="{RELAY_NAME}"/></policy>
  <policy context="default"><allow send_destination="{RELAY_NAME}"/></policy>
</busconfig>
"""
ADAPTER: Final = "hci0"
ADAPTER_PATH: Final = "/org/bluez/hci0"

_CLK_TCK: Final = os.sysconf("SC_CLK_TCK")
_PAGE: Final = os.sysconf("SC_PAGE_SIZE")


def stamp(run: int, seq: int, t: float) -> bytes:
    return _STAMP.pack(run, seq, t)


def unstamp(payload: bytes) -> tuple[int, int, float]:
    run, seq, t = _STAMP.unpack_from(payload)
    return run, seq, t


def cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU time of a process so far (from /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return int(fields[11]) / _CLK_TCK, int(fields[12]) / _CLK_TCK


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    return sum(cpu_split(pid))


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p99/max of ``values`` (nearest rank), in the values' unit."""
    if not values:
        return {"p50": float("nan"), "p99": float("nan"), "max": float("nan"), "n": 0}
    ordered = sorted(values)
    n = len(ordered)

    def rank(q: float) -> float:
        return ordered[min(n - 1, max(0, int(q * n + 0.5) - 1))]

    return {"p50": rank(0.50), "p99": rank(0.99), "max": ordered[-1], "n": n}


# --- the control channel: JSON lines on stdin, replies on stdout ------------------


async def commands() -> AsyncIterator[dict[str, Any]]:
    """Commands from the orchestrator, one JSON object a line, until stdin closes."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            return
        yield json.loads(line)


def reply(**fields: Any) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def serve(handle: Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]) -> None:
    """Answer each command with ``handle(name, args)`` until ``quit`` or the end of stdin.

    An exception is replied as ``error``, which fails the orchestrator's scenario.
    """
    async for cmd in commands():
        name = cmd.pop("cmd")
        if name == "quit":
            return
        try:
            reply(**await handle(name, cmd))
        except Exception as exc:
            reply(error=f"{type(exc).__name__}: {exc}")
