"""The offline bundle: what it holds, and that it runs with only the stdlib, dbus-fast 2.21.1 and ext/."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import signal
import subprocess
import sys
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
from tests.conftest import VENUS_DBUS_FAST, VenusPython
from tests.helpers import assert_ok, call, scanning, wait_until

REPO = Path(__file__).resolve().parents[2]
ADDR = "C0:11:22:33:44:21"
# tools/build-bundle.sh drops this folder whole: the test doubles.
PRUNED = "ble_scanner.testing"
# Bundled modules that need what a GX has and the bundle's path lacks, with the
# modules whose absence is the expected failure. Anything else must import.
NEEDS_THE_GX = {
    # The GLib/dbus-python client for velib_python drivers: Venus ships
    # dbus-python and PyGObject system-wide; the service never imports it.
    "ble_scanner.client.glib": {"dbus", "gi"},
}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # pip of the interpreter running the tests fills ext/ (a fresh machine's
    # python3 may have no pip). Built in a folder of its own: suites and workers
    # running side by side each build one.
    dist = tmp_path_factory.mktemp("dist")
    out = subprocess.run(
        ["sh", str(REPO / "tools/build-bundle.sh")],
        env={**os.environ, "PYTHON": sys.executable, "DIST": str(dist)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    path = Path(out.stdout.strip().splitlines()[-1])
    assert path == dist / f"dbus-ble-scanner-{__version__}.tar.gz"
    return path


@pytest.fixture(scope="module")
def unpacked(bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("clean")
    with tarfile.open(bundle) as tar:
        tar.extractall(where, filter="tar")
    return where / "dbus-ble-scanner"


@pytest.fixture(scope="module")
def only_dbus_fast(tmp_path_factory: pytest.TempPathFactory, venus_python: VenusPython) -> Path:
    """A sys.path entry holding dbus-fast 2.21.1 and nothing else, as on Venus."""
    site = tmp_path_factory.mktemp("site")
    (site / "dbus_fast").symlink_to(venus_python.dbus_fast)
    return site


def venus_env(only_dbus_fast: Path, **extra: str) -> dict[str, str]:
    """No site-packages (python -S), no repo: stdlib + dbus-fast + what the entry adds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    return {**env, "PYTHONPATH": str(only_dbus_fast), "PYTHONNOUSERSITE": "1", **extra}


def module_name(path: Path, root: Path) -> tuple[str, ...]:
    """The dotted name of a .py file under an import root, as parts."""
    parts = path.relative_to(root).with_suffix("").parts
    return parts[:-1] if parts[-1] == "__init__" else parts


def imports_of_pruned(root: Path) -> list[str]:
    """Every import (absolute, relative, or a module name in a string) of the pruned
    folder in the .py files under root; ext/ is an import root of its own."""
    found = []
    for path in sorted(root.rglob("*.py")):
        import_root = root / "ext" if (root / "ext") in path.parents else root
        name = module_name(path, import_root)
        package = name if path.name == "__init__.py" else name[:-1]
        for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else ()
                module = ".".join([*base, *(node.module or "").split(".")]).strip(".")
                targets = [module, *(f"{module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                targets = [node.value]
            hits = [t for t in targets if t == PRUNED or t.startswith(PRUNED + ".")]
            if hits:
                found.append(f"{path.relative_to(root)}:{node.lineno}: {hits[0]}")
    return found


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
        "tools/restore-ble-sensors-scan.sh",
        "tools/common.sh",
        "ext/README.md",
        "ext/requirements.txt",
        "ext/bleak/__init__.py",
    ):
        assert f"{top}/{needed}" in names, needed
    for executable in ("dbus_ble_scanner.py", "service/run", "service/log/run", "tools/install.sh"):
        assert modes[f"{top}/{executable}"] & 0o111, executable
    assert not [n for n in names if "/testing" in n or "/tests/" in n]
    assert not [n for n in names if "__pycache__" in n or n.endswith(".so")]
    assert not [n for n in names if n.startswith(f"{top}/ext/dbus_fast")]  # the OS provides it


def test_nothing_in_the_bundle_imports_the_pruned_test_doubles(unpacked: Path) -> None:
    assert not (unpacked / "ble_scanner/testing").exists()
    assert imports_of_pruned(unpacked) == []


def test_the_pruned_import_check_sees_every_form_of_import(tmp_path: Path) -> None:
    lines = {
        "ble_scanner/a.py": "import ble_scanner.testing.demo\n",
        "ble_scanner/b.py": "from ble_scanner import testing\n",
        "ble_scanner/c.py": "from .testing.simulator import BluezSimulator\n",
        "ble_scanner/client/d.py": "def f():\n    from ..testing import testbus\n",
        "ble_scanner/e.py": "import importlib\nimportlib.import_module('ble_scanner.testing')\n",
        "ble_scanner/fine.py": "from . import testing_helpers\nfrom .client import records\n",
        "ext/bleak/__init__.py": "from . import testing\n",  # bleak.testing: not ours
    }
    for name, text in lines.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = imports_of_pruned(tmp_path)
    assert [line.split(":")[0] for line in found] == [
        "ble_scanner/a.py",
        "ble_scanner/b.py",
        "ble_scanner/c.py",
        "ble_scanner/client/d.py",
        "ble_scanner/e.py",
    ], found


def test_every_bundled_module_imports_with_only_stdlib_dbus_fast_221_and_ext(
    unpacked: Path, only_dbus_fast: Path, venus_python: VenusPython
) -> None:
    probe = (Path(__file__).parent / "bundle_probe.py").read_text()
    out = subprocess.run(
        [str(venus_python.python), "-S", "-c", probe, str(unpacked)],
        cwd=unpacked,
        env=venus_env(only_dbus_fast),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen["no_site"] == 1
    assert (
        "ble_scanner.main" in seen["imported"] and "ble_scanner.venus.settings" in seen["imported"]
    )
    failed = {name: why["missing"] for name, why in seen["failed"].items()}
    assert failed.keys() == NEEDS_THE_GX.keys(), seen["failed"]
    for name, missing in failed.items():
        assert missing in NEEDS_THE_GX[name], seen["failed"][name]
    # Every module came from the stdlib, the dbus-fast entry or the bundle (ext/ included).
    allowed = (*seen["stdlib"], str(only_dbus_fast), str(unpacked))
    foreign = {
        name: file
        for name, file in seen["files"].items()
        if file is not None
        and (
            not file.startswith(allowed)
            or any(file.startswith(site) for site in seen["site_packages"])
        )
    }
    assert foreign == {}
    assert seen["files"]["dbus_fast"].startswith(str(only_dbus_fast))
    assert seen["files"]["bleak"].startswith(str(unpacked / "ext"))
    assert seen["files"]["ble_scanner"].startswith(str(unpacked / "ble_scanner"))
    version = subprocess.run(
        [
            str(venus_python.python),
            "-S",
            "-c",
            "import dbus_fast.__version__ as v; print(v.__version__)",
        ],
        env=venus_env(only_dbus_fast),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert version.stdout.strip() == VENUS_DBUS_FAST, version.stderr
    help_out = subprocess.run(
        [str(venus_python.python), "-S", str(unpacked / "dbus_ble_scanner.py"), "--help"],
        env=venus_env(only_dbus_fast),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert help_out.returncode == 0, help_out.stderr


@pytest.fixture
def bundled_service(
    unpacked: Path, only_dbus_fast: Path, venus_python: VenusPython, test_bus: TestBus
) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        # No state file: the default is this machine's /var/lib, not the test's.
        [str(venus_python.python), "-S", str(unpacked / "dbus_ble_scanner.py"), "--state-file", ""],
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
        return scanning(bluez, "hci0")

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
