"""The service as a process: started by hand, read by other D-Bus implementations, SIGTERM, name taken."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Iterator

import pytest
from dbus_fast import RequestNameReply, Variant
from dbus_fast.aio import MessageBus

from ble_scanner.config import PROCESS_OPTIONS, SETTINGS, add_settings_definitions
from ble_scanner.const import SCANNER_INTERFACE, SCANNER_SERVICE
from ble_scanner.testing.localsettings import LocalSettingsStandIn
from ble_scanner.testing.localsettings import Setting as LocalSetting
from ble_scanner.testing.simulator import BluezSimulator
from ble_scanner.testing.testbus import TestBus
from ble_scanner.venus.const import BUSITEM_INTERFACE, SETTINGS_PREFIX, SETTINGS_SERVICE
from tests.helpers import has_owner, scanning, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ADDR = "C0:11:22:33:44:01"
# A Python process importing dbus-fast on a loaded 2-core machine can take
# seconds to start; this bounds it without making a slow start a failure.
PROCESS_START = 30.0


def spawn(args: list[str], test_bus: TestBus, **kwargs: object) -> subprocess.Popen[str]:
    """The service with ``args``; never with the machine's own state file (/var/lib)."""
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=test_bus.address, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [*args, "--state-file", ""],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,  # type: ignore[call-overload]
    )


@pytest.fixture
def service_process(test_bus: TestBus) -> Iterator[subprocess.Popen[str]]:
    proc = spawn([sys.executable, "dbus_ble_scanner.py", "--lost-timeout", "60"], test_bus)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)


async def session_of_process(bluez: BluezSimulator) -> bool:
    return scanning(bluez, "hci0")


def busctl(test_bus: TestBus, *args: str) -> str:
    out = subprocess.run(
        ["busctl", f"--address={test_bus.address}", *args],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return out.stdout


async def test_started_by_hand_and_read_with_busctl(
    test_bus: TestBus,
    bluez: BluezSimulator,
    bus: MessageBus,
    service_process: subprocess.Popen[str],
) -> None:
    """What CONTRIBUTING.md shows: start the script, then ask it with busctl."""
    await wait_until(
        lambda: has_owner(bus),
        timeout=PROCESS_START,
        what="service on the bus",
    )
    await wait_until(
        lambda: session_of_process(bluez), timeout=PROCESS_START, what="discovery session"
    )
    await bluez.advertise(
        "hci0", ADDR, rssi=-61, manufacturer_data={0x02E1: b"\x10\x02"}, name="SmartShunt"
    )

    # Plain output: busctl --json cannot render a dict with integer keys (a{qay}).
    def snapshot() -> str:
        return busctl(
            test_bus,
            "call",
            SCANNER_SERVICE,
            "/",
            "com.victronenergy.ble.Scanner1",
            "GetDiscoveredDevices",
            "a{sv}",
            "0",
        )

    await wait_until(lambda: ADDR in snapshot(), what="busctl sees the device")
    reply = snapshot()
    assert reply.startswith("a{sa{sv}} 1 ")
    assert '"Name" s "SmartShunt"' in reply
    assert '"Rssi" n -61' in reply
    assert '"ManufacturerData" a{qay} 1 737 2 16 2' in reply
    intro = busctl(test_bus, "introspect", SCANNER_SERVICE, "/")
    for member in (
        "GetDiscoveredDevices",
        "Subscribe",
        "Unsubscribe",
        "DeviceDiscovered",
        "DeviceLost",
    ):
        assert member in intro


async def test_read_by_dbus_python(
    test_bus: TestBus,
    bluez: BluezSimulator,
    bus: MessageBus,
    service_process: subprocess.Popen[str],
) -> None:
    """Another D-Bus implementation (Debian's dbus-python + GLib) reads the snapshot and a broadcast."""
    await wait_until(
        lambda: has_owner(bus),
        timeout=PROCESS_START,
        what="service on the bus",
    )
    await wait_until(
        lambda: session_of_process(bluez), timeout=PROCESS_START, what="discovery session"
    )
    script = r"""
import sys, dbus, dbus.mainloop.glib
from gi.repository import GLib
dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
bus = dbus.SystemBus()
got = {}
def discovered(address, record):
    got["signal"] = (str(address), int(record["Rssi"]), bytes(record["ManufacturerData"][0x02E1]))
    loop.quit()
bus.add_signal_receiver(discovered, "DeviceDiscovered", "com.victronenergy.ble.Scanner1",
                        "com.victronenergy.ble.scanner", "/")
print("listening", flush=True)
sys.stdin.readline()
loop = GLib.MainLoop()
GLib.timeout_add_seconds(10, loop.quit)
loop.run()
proxy = bus.get_object("com.victronenergy.ble.scanner", "/")
devices = proxy.GetDiscoveredDevices(dbus.Dictionary({}, signature="sv"),
                                     dbus_interface="com.victronenergy.ble.Scanner1")
print(repr(got.get("signal")))
print(sorted(str(a) for a in devices))
"""
    proc = subprocess.Popen(
        ["/usr/bin/python3", "-c", script],
        env=dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=test_bus.address),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    loop = asyncio.get_running_loop()
    assert (await loop.run_in_executor(None, proc.stdout.readline)).strip() == "listening"
    proc.stdin.write("go\n")
    proc.stdin.flush()
    await bluez.advertise("hci0", ADDR, rssi=-61, manufacturer_data={0x02E1: b"\x10\x02"})
    out, err = await loop.run_in_executor(None, proc.communicate, None, 20)
    assert proc.returncode == 0, err
    signal_line, devices_line = out.strip().splitlines()
    assert signal_line == repr((ADDR, -61, b"\x10\x02"))
    assert devices_line == repr([ADDR])


@pytest.mark.exclusive  # a time against an absolute figure: not beside the parallel suite
async def test_sigterm_stops_our_session_releases_the_name_and_exits_0_within_2_s(
    test_bus: TestBus,
    bluez: BluezSimulator,
    bus: MessageBus,
    service_process: subprocess.Popen[str],
) -> None:
    await wait_until(
        lambda: has_owner(bus),
        timeout=PROCESS_START,
        what="service on the bus",
    )
    await wait_until(
        lambda: session_of_process(bluez), timeout=PROCESS_START, what="discovery session"
    )
    stops = bluez.call_count("StopDiscovery", adapter="hci0")
    start = time.monotonic()
    service_process.send_signal(signal.SIGTERM)
    loop = asyncio.get_running_loop()
    code = await loop.run_in_executor(None, service_process.wait, 5)
    elapsed = time.monotonic() - start
    assert code == 0
    assert elapsed < 2.0, elapsed
    assert bluez.call_count("StopDiscovery", adapter="hci0") == stops + 1
    assert not bluez.sessions("hci0")
    assert not await has_owner(bus)


@pytest.mark.exclusive  # a time against an absolute figure: not beside the parallel suite
async def test_sigterm_during_start_up_exits_0(test_bus: TestBus) -> None:
    """No bluetoothd and a SIGTERM as soon as the process runs: still a clean exit."""
    proc = spawn([sys.executable, "dbus_ble_scanner.py"], test_bus)
    try:
        assert proc.stdout is not None
        loop = asyncio.get_running_loop()
        # Python has started once it logs anything; signal it at once.
        await loop.run_in_executor(None, proc.stdout.readline)
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert await loop.run_in_executor(None, proc.wait, 5) == 0
        assert time.monotonic() - start < 2.0
    finally:
        if proc.poll() is None:
            proc.kill()


async def test_name_already_taken_logs_the_owner_and_exits_non_zero(
    test_bus: TestBus, bus: MessageBus
) -> None:
    assert await bus.request_name(SCANNER_SERVICE) == RequestNameReply.PRIMARY_OWNER
    try:
        proc = spawn([sys.executable, "dbus_ble_scanner.py"], test_bus)
        loop = asyncio.get_running_loop()
        out, _ = await loop.run_in_executor(None, proc.communicate, None, PROCESS_START)
        assert proc.returncode == 2
        assert "already taken" in out
        assert str(bus.unique_name) in out
        assert f"pid {os.getpid()}" in out
    finally:
        await bus.release_name(SCANNER_SERVICE)


# --- options and settings, from the settings table, in the real process -----------


def run_to_exit(args: list[str], test_bus: TestBus) -> tuple[int, str]:
    proc = spawn([sys.executable, "dbus_ble_scanner.py", *args], test_bus)
    try:
        out, _ = proc.communicate(timeout=PROCESS_START)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    return proc.returncode, out


def test_help_lists_every_option_with_its_range_default_and_setting(
    test_bus: TestBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # argparse wraps at the terminal width; one line each
    code, out = run_to_exit(["--help"], test_bus)
    assert code == 0, out
    for setting in (*SETTINGS, *PROCESS_OPTIONS):
        if setting.flag is not None:
            assert setting.flag in out, setting.flag
    assert "(10..86400 s; default 180; localsettings LostTimeout)" in out
    assert "(100..50000; default 10000; localsettings CacheSize)" in out
    assert "(0..86400 s; default 60; localsettings BroadcastKeepAlive)" in out
    assert "(0..147 dBm; default 8; localsettings BroadcastRssiDelta)" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lost-timeout", "5"], "argument --lost-timeout: 5 is outside 10..86400 s"),
        (["--scan-mode", "turbo"], "argument --scan-mode: 'turbo' is not one of active"),
        (["--state-save-interval", "1"], "argument --state-save-interval: 1 is outside 5..86400"),
        (["--ignore-company-id", "apple"], "argument --ignore-company-id: 'apple' is not a"),
        ([a for n in range(65) for a in ("--adapter", f"hci{n}")], "given 65 times, at most 64"),
        (["--no-such-option"], "unrecognized arguments: --no-such-option"),
    ],
)
def test_a_bad_option_exits_64_with_the_reason_and_never_takes_the_name(
    test_bus: TestBus, args: list[str], message: str
) -> None:
    code, out = run_to_exit(args, test_bus)
    assert code == 64, out  # not argparse's 2, which would read as "name taken"
    assert message in out
    assert "ready" not in out


class OutputLines:
    """The process's output, read on a thread so a test can wait for a line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert proc.stdout is not None
        stdout = proc.stdout
        self._thread = threading.Thread(target=lambda: self.lines.extend(stdout), daemon=True)
        self._thread.start()

    def has(self, *parts: str) -> bool:
        return any(all(part in line for part in parts) for line in list(self.lines))


async def lost_timeout(bus: MessageBus) -> float | None:
    from tests.helpers import assert_ok, call

    reply = await call(bus, SCANNER_SERVICE, "/", SCANNER_INTERFACE, "GetStatus")
    if reply.error_name is not None:
        return None
    (status,) = assert_ok(reply)
    return float(status["LostTimeout"].value)


async def test_the_process_creates_its_settings_and_follows_them_live(
    test_bus: TestBus, bus: MessageBus
) -> None:
    """localsettings' values win over the options; changes apply live; bad ones are ignored."""
    from tests.helpers import assert_ok, call

    stored = {f"{SETTINGS_PREFIX}/LostTimeout": LocalSetting("f", 300.0, 180.0, 10.0, 86400.0)}
    standin = await LocalSettingsStandIn.start(test_bus.address, settings=stored)
    proc = spawn([sys.executable, "dbus_ble_scanner.py", "--lost-timeout", "60"], test_bus)
    output = OutputLines(proc)
    try:
        await wait_until(
            lambda: output.has(SCANNER_SERVICE, "ready"), timeout=PROCESS_START, what="ready"
        )
        assert await lost_timeout(bus) == 300.0  # localsettings' stored value, not --lost-timeout
        for entry in add_settings_definitions():
            held = standin.settings[str(entry["path"])]
            assert (held.default, held.min, held.max) == (
                entry["default"],
                entry.get("min"),
                entry.get("max"),
            )

        async def set_value(name: str, value: Variant) -> int:
            reply = await call(
                bus, SETTINGS_SERVICE, f"{SETTINGS_PREFIX}/{name}", BUSITEM_INTERFACE,
                "SetValue", "v", [value],
            )  # fmt: skip
            return int(assert_ok(reply)[0])

        assert await set_value("LostTimeout", Variant("d", 45.0)) == 0
        await wait_until(lambda: _equals(lost_timeout(bus), 45.0), what="45 s to apply live")
        # localsettings reads a minimum of 0 as none and stores -5; the table refuses it.
        assert await set_value("BroadcastKeepAlive", Variant("d", -5.0)) == 0
        await wait_until(
            lambda: output.has("BroadcastKeepAlive", "-5 is outside 0..86400 s", "keeping 60"),
            what="the refusal in the log",
        )
        assert await lost_timeout(bus) == 45.0
    finally:
        proc.send_signal(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, proc.wait, 5)
        await standin.stop()


async def _equals(value: Awaitable[float | None], expected: float) -> bool:
    return await value == expected
