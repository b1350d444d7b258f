"""The offline bundle: what it holds, and that it runs with only the stdlib, dbus-fast 2.21.1 and ext/."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from dbus_fast import Variant
from dbus_fast.aio import MessageBus

from ble_scanner import __version__
from ble_scanner.const import SCANNER_INTERFACE, SCANNER_SERVICE
from ble_scanner.testing.simulator import BluezSimulator
from ble_scanner.testing.testbus import TestBus
from tests.helpers import assert_ok, call, wait_until

REPO = Path(__file__).resolve().parents[2]
# The interpreter with Venus's dbus-fast; the bundle must not need anything else.
PY221 = os.environ.get("BLE_SCANNER_PY221", "/tmp/v221/bin/python")
ADDR = "C0:11:22:33:44:21"


@pytest.fixture(scope="module")
def bundle() -> Path:
    out = subprocess.run(
        ["sh", str(REPO / "tools/build-bundle.sh")], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    path = Path(out.stdout.strip().splitlines()[-1])
    assert path == REPO / "dist" / f"dbus-ble-scanner-{__version__}.tar.gz"
    return path


@pytest.fixture(scope="module")
def unpacked(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("clean")
    with tarfile.open(bundle) as tar:
        tar.extractall(where, filter="tar")
    return where / "dbus-ble-scanner"


@pytest.fixture(scope="module")
def only_dbus_fast(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sys.path entry holding dbus-fast 2.21.1 and nothing else, as on Venus."""
    if not os.path.exists(PY221):
        pytest.skip(f"{PY221} (dbus-fast 2.21.1) not available")
    location = subprocess.run(
        [
            PY221,
            "-c",
            "import dbus_fast, os; from importlib.metadata import version; "
            "print(os.path.dirname(dbus_fast.__file__), version('dbus-fast'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert location[1] == "2.21.1"
    site = tmp_path_factory.mktemp("site")
    (site / "dbus_fast").symlink_to(location[0])
    return site


def venus_env(only_dbus_fast: Path, **extra: str) -> dict[str, str]:
    """No site-packages (python -S), no repo: stdlib + dbus-fast + what the entry adds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return {**env, "PYTHONPATH": str(only_dbus_fast), "PYTHONNOUSERSITE": "1", **extra}


def test_bundle_holds_what_the_device_needs_and_nothing_else(bundle: Path) -> None:
    with tarfile.open(bundle) as tar:
        names = set(tar.getnames())
        modes = {m.name: m.mode for m in tar.getmembers()}
    top = "dbus-ble-scanner"
    for needed in (
        "dbus_ble_scanner.py",
        "ble_scanner/__init__.py",
        "ble_scanner/main.py",
        "ble_scanner/venus/busitem.py",
        "ble_scanner/venus/settings.py",
        "service/run",
        "service/log/run",
        "tools/install.sh",
        "tools/uninstall.sh",
        "ext/README.md",
        "ext/requirements.txt",
        "ext/bleak/__init__.py",
    ):
        assert f"{top}/{needed}" in names, needed
    for executable in ("dbus_ble_scanner.py", "service/run", "service/log/run", "tools/install.sh"):
        assert modes[f"{top}/{executable}"] & 0o111, executable
    assert not [n for n in names if "/simulator" in n or "testbus" in n or "/tests/" in n]
    assert not [n for n in names if "__pycache__" in n or n.endswith(".so")]
    assert not [n for n in names if n.startswith(f"{top}/ext/dbus_fast")]  # the OS provides it


def test_bundle_imports_with_only_stdlib_dbus_fast_221_and_ext(
    unpacked: Path, only_dbus_fast: Path
) -> None:
    probe = (
        "import dbus_fast, dbus_fast.__version__, bleak, ble_scanner.main, ble_scanner.venus.busitem, ble_scanner.venus.settings\n"
        "from bleak.backends.device import BLEDevice\n"
        "print(dbus_fast.__version__.__version__, bleak.__file__, ble_scanner.__file__)\n"
    )
    out = subprocess.run(
        [PY221, "-S", "-c", f"import sys; sys.path.insert(1, {str(unpacked / 'ext')!r}); {probe}"],
        cwd=unpacked,
        env=venus_env(only_dbus_fast),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    version, bleak_file, package_file = out.stdout.split()
    assert version == "2.21.1"
    assert bleak_file.startswith(str(unpacked / "ext"))
    assert package_file.startswith(str(unpacked))
    help_out = subprocess.run(
        [PY221, "-S", str(unpacked / "dbus_ble_scanner.py"), "--help"],
        env=venus_env(only_dbus_fast),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert help_out.returncode == 0, help_out.stderr


@pytest.fixture
def bundled_service(
    unpacked: Path, only_dbus_fast: Path, test_bus: TestBus
) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        # No state file: the default is this machine's /var/lib, not the test's.
        [PY221, "-S", str(unpacked / "dbus_ble_scanner.py"), "--state-file", ""],
        cwd="/",
        env=venus_env(
            only_dbus_fast, DBUS_SYSTEM_BUS_ADDRESS=test_bus.address, PYTHONUNBUFFERED="1"
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)


async def test_service_from_the_bundle_scans_the_simulator_and_stops_on_sigterm(
    bluez: BluezSimulator, bus: MessageBus, bundled_service: subprocess.Popen[str]
) -> None:
    async def devices() -> dict[str, object]:
        reply = await call(
            bus, SCANNER_SERVICE, "/", SCANNER_INTERFACE, "GetDiscoveredDevices", "a{sv}", [{}]
        )
        if reply.error_name:
            return {}
        (found,) = assert_ok(reply)
        return found  # type: ignore[no-any-return]

    async def sessions() -> bool:
        return bool(bluez.sessions("hci0"))

    await wait_until(sessions, timeout=15, what="the bundled service's discovery session")
    await bluez.advertise("hci0", ADDR, rssi=-55, name="Bundled")
    await wait_until(lambda: _has(devices(), ADDR), timeout=10, what="the device in the snapshot")
    record = (await devices())[ADDR]
    assert record["Name"] == Variant("s", "Bundled")  # type: ignore[index]
    bundled_service.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(bundled_service.wait, 5) == 0


async def _has(pending: object, address: str) -> bool:
    found = await pending  # type: ignore[misc]
    return address in found
