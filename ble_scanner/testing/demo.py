"""``make demo``: a private bus, the BlueZ simulator with a realistic scene, the service,
and the live stream as a client sees it, until Ctrl-C. Needs no Bluetooth.

Every part runs as its own process, as on a GX device; the demo only starts
them in order, waits for each to be ready, and cleans up after itself.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from .testbus import start_test_bus

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
READY_TIMEOUT = 15.0
# The service stops its discovery sessions within its own 2 s call timeout; 5 s
# is generous for that and for the simulator and the bus.
STOP_TIMEOUT = 5.0


def _wait_for_line(proc: subprocess.Popen[str], needle: str, what: str) -> None:
    """Read the process's output until ``needle`` shows it is ready."""
    assert proc.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{what} exited early (code {proc.poll()})")
        if needle in line:
            # Keep reading so its log never fills the pipe and blocks it.
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return
    raise RuntimeError(f"{what} not ready within {READY_TIMEOUT:g} s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print the stream as JSON lines")
    parser.add_argument(
        "--duration", type=float, default=0.0, help="stop after this many seconds (0: Ctrl-C)"
    )
    args = parser.parse_args(argv)

    bus = start_test_bus(quiet=True)
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=bus.address, PYTHONUNBUFFERED="1")
    procs: list[subprocess.Popen[str]] = []

    def spawn(*cmd: str, capture: bool = True) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, *cmd],
            cwd=ROOT,
            env=env,
            text=True,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.STDOUT if capture else subprocess.DEVNULL,
            start_new_session=True,
        )
        procs.append(proc)
        return proc

    print(f"demo: private system-like bus at {bus.address}", flush=True)
    try:
        sim = spawn(
            "-m", "ble_scanner.testing.simulator", "--scene", "demo", "--adapters", "hci0,hci1"
        )
        _wait_for_line(sim, "ready", "the BlueZ simulator")
        print("demo: BlueZ simulator up (hci0, hci1) with a scene of advertisers", flush=True)
        # The demo's devices are the simulator's: no state file of this machine's.
        service = spawn("dbus_ble_scanner.py", "--state-file", "")
        _wait_for_line(service, "ready", "the scanner service")
        print("demo: com.victronenergy.ble.scanner up; watching (Ctrl-C to stop)\n", flush=True)
        watch = ["-m", "ble_scanner.client.cli", "watch"] + (["--json"] if args.json else [])
        watcher = spawn(*watch, capture=False)
        try:
            watcher.wait(timeout=args.duration or None)
        except subprocess.TimeoutExpired:
            pass
    except KeyboardInterrupt:
        pass
    except RuntimeError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        bus.stop()
        print("\ndemo: stopped and cleaned up", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
