"""Start the service or the relay with the benchmark's instruments.

``python -m tests.bench.launch [--harden] [--profile FILE] TARGET [ARGS...]``,
where TARGET is a script path or ``-m module``:

- ``--harden`` makes every dbus-fast connection's writer wait on EAGAIN
  instead of closing the bus (the simulator's ``wire.harden_writer``). Without
  it, dbus-fast 2.x-5.x drop the connection when a burst fills the socket
  buffer (python-dbus-next#153; ``ble_scanner/bus/writer.py``), and the ingest
  ladder measures that bug, not throughput.
- ``--profile FILE`` runs the target under cProfile and writes FILE on exit.
  It counts the process's CPU time (``time.process_time``), not wall time: on
  a shared machine a ``send()`` that wakes the bus daemon, or any call during
  which the process was preempted, would otherwise be charged the time other
  processes ran.
"""

from __future__ import annotations

import argparse
import cProfile
import runpy
import sys
import time

from dbus_fast.aio import MessageBus

from ble_scanner.testing.simulator.wire import harden_writer


def _harden_every_connection() -> None:
    connect = MessageBus.connect

    async def hardened(self: MessageBus) -> MessageBus:
        bus = await connect(self)
        if not harden_writer(bus):
            raise RuntimeError("dbus-fast's writer is not the expected one; cannot harden")
        return bus

    MessageBus.connect = hardened  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.launch")
    parser.add_argument("--harden", action="store_true")
    parser.add_argument("--profile", metavar="FILE")
    parser.add_argument("-m", dest="module")
    parser.add_argument("target", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.harden:
        _harden_every_connection()
    if args.module:
        sys.argv = [args.module, *args.target]

        def run() -> None:
            runpy.run_module(args.module, run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(args.target)

        def run() -> None:
            runpy.run_path(args.target[0], run_name="__main__")

    if not args.profile:
        run()
        return
    profiler = cProfile.Profile(time.process_time)
    try:
        profiler.runcall(run)
    except SystemExit:
        pass
    finally:
        profiler.dump_stats(args.profile)


if __name__ == "__main__":
    main()
