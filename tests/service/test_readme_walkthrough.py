"""The "Start it by hand" steps of CONTRIBUTING.md, run as a person would run them.

``test_readme_shows_the_steps_this_test_runs`` keeps the two in step: a command
changed in CONTRIBUTING.md without this test (or the other way round) fails there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
STEP_TIMEOUT = 30.0
# What CONTRIBUTING.md's block says, for each step below (busctl calls by their arguments).
README_STEPS = (
    "python -m ble_scanner.testing.testbus &",
    "export DBUS_SYSTEM_BUS_ADDRESS=",
    "python -m ble_scanner.testing.simulator --scene demo --adapters hci0,hci1 &",
    "python dbus_ble_scanner.py --no-settings --state-file '' &",
    "com.victronenergy.ble.Scanner1 GetDiscoveredDevices 'a{sv}' 0\n",
    "com.victronenergy.ble.Scanner1 GetDiscoveredDevices 'a{sv}' 1 ManufacturerIds aq 1 737\n",
    "introspect com.victronenergy.ble.scanner /\n",
    "ble-scanner status\n",
    "ble-scanner devices\n",
)


def start_by_hand_block() -> str:
    """The shell block of CONTRIBUTING.md's "Start it by hand" section."""
    with open(os.path.join(ROOT, "CONTRIBUTING.md"), encoding="utf-8") as doc:
        text = doc.read()
    _, found, rest = text.partition("\n## Start it by hand\n")
    assert found, "CONTRIBUTING.md has no '## Start it by hand' section"
    section = rest.split("\n## ", 1)[0]
    _, found, rest = section.partition("```sh\n")
    assert found, "CONTRIBUTING.md's 'Start it by hand' section has no ```sh block"
    return rest.split("```", 1)[0]


def test_readme_shows_the_steps_this_test_runs() -> None:
    block = start_by_hand_block()
    missing = [step.strip() for step in README_STEPS if step not in block]
    assert not missing, (
        "CONTRIBUTING.md's 'Start it by hand' block no longer shows these steps that "
        f"tests/service/test_readme_walkthrough.py runs: {missing}"
    )


def wait_for(predicate: object, what: str) -> None:
    deadline = time.monotonic() + STEP_TIMEOUT
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)  # polling a subprocess's observable state; not synchronisation


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_readme_start_by_hand(processes: list[subprocess.Popen[str]]) -> None:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("DBUS_SYSTEM_BUS_ADDRESS", None)
    bus = subprocess.Popen(
        [sys.executable, "-m", "ble_scanner.testing.testbus"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    processes.append(bus)
    assert bus.stdout is not None
    line = bus.stdout.readline().strip()
    assert line.startswith("export DBUS_SYSTEM_BUS_ADDRESS=unix:path=/tmp/blebus-")
    address = line.split("=", 1)[1]
    env["DBUS_SYSTEM_BUS_ADDRESS"] = address

    sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ble_scanner.testing.simulator",
            "--scene",
            "demo",
            "--adapters",
            "hci0,hci1",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    processes.append(sim)
    assert sim.stdout is not None
    assert "ready" in sim.stdout.readline()
    service = subprocess.Popen(
        [sys.executable, "dbus_ble_scanner.py", "--no-settings", "--state-file", ""],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    processes.append(service)

    def busctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["busctl", f"--address={address}", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=10,
        )

    def snapshot() -> str:
        return busctl(
            "call",
            "com.victronenergy.ble.scanner",
            "/",
            "com.victronenergy.ble.Scanner1",
            "GetDiscoveredDevices",
            "a{sv}",
            "0",
        ).stdout

    # The demo scene's Victron SmartShunt advertises under company id 737 (0x02E1).
    wait_for(lambda: '"ManufacturerData" a{qay} 1 737' in snapshot(), "the scene in the snapshot")
    victron = busctl(
        "call",
        "com.victronenergy.ble.scanner",
        "/",
        "com.victronenergy.ble.Scanner1",
        "GetDiscoveredDevices",
        "a{sv}",
        "1",
        "ManufacturerIds",
        "aq",
        "1",
        "737",
    )
    assert victron.returncode == 0, victron.stderr
    assert victron.stdout.startswith("a{sa{sv}} 1 ")
    intro = busctl("introspect", "com.victronenergy.ble.scanner", "/")
    assert "com.victronenergy.ble.Scanner1" in intro.stdout
    assert "com.victronenergy.BusItem" in intro.stdout

    status = subprocess.run(
        [os.path.join(BIN, "ble-scanner"), "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert status.returncode == 0, status.stderr
    assert "hci0" in status.stdout and "hci1" in status.stdout
    devices = subprocess.run(
        [os.path.join(BIN, "ble-scanner"), "devices"],
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert devices.returncode == 0, devices.stderr
    assert "ADDRESS" in devices.stdout.splitlines()[0]
    assert len(devices.stdout.splitlines()) >= 3
