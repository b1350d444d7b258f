"""A GX laid out in a folder, SetupHelper's stand-in in it, and the package built from this tree.

The root holds what the package's ``setup`` and SetupHelper touch: ``/data``
(kept by firmware updates), ``/service`` (a tmpfs on Venus), ``/opt/victronenergy``
with its ``version`` and boot copy of the services, ``/etc/venus/machine``.
Everything runs with ``GX_ROOT`` set to it; svscan supervises its ``/service``
with ``python3`` on PATH the repository's ``.venv-venus`` (dbus-fast 2.21.1).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ble_scanner.testing.testbus import TestBus
from tests.conftest import VenusPython

REPO = Path(__file__).resolve().parents[2]
NAME = "dbus-ble-scanner"
# The stand-in for /data/SetupHelper (tests/README.md "GX package" says what it does).
SETUPHELPER = Path(__file__).parent / "setuphelper"
GITHUB_USER = "gx-test-user"
# A Venus OS with Python 3.12 and dbus-fast 2.21.1; a Cerbo GX's machine name.
VENUS_VERSION = "v3.70"
MACHINE = "einstein"


def build_env(out: Path) -> dict[str, str]:
    """tools/build-gx-package.sh's environment for a build into ``out``, offline: ext/
    is the checkout's own (its README and pinned list), so no pip runs;
    tools/stage-app.sh fills it for the bundle the same way, whose test fetches bleak."""
    ext = out / "ext"
    ext.mkdir(parents=True)
    for name in ("README.md", "requirements.txt"):
        shutil.copy2(REPO / "ext" / name, ext / name)
    return {**os.environ, "DIST": str(out), "EXT_DIR": str(ext), "GITHUB_USER": GITHUB_USER}


def build_package(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    built = subprocess.run(
        ["sh", str(REPO / "tools/build-gx-package.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert built.returncode == 0, built.stderr
    return built


@pytest.fixture(scope="module")
def gx_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """dbus-ble-scanner-install.tar.gz, built once per module (and xdist worker)."""
    out = tmp_path_factory.mktemp("package")
    built = build_package(build_env(out))
    archive = Path(built.stdout.strip().splitlines()[-1])
    assert archive == out / f"{NAME}-install.tar.gz"
    return archive


class Gx:
    """One GX root: run the package's setup in it, supervise its /service, update its firmware."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.env = env
        self.svscan: subprocess.Popen[bytes] | None = None

    @property
    def package(self) -> Path:
        return self.root / "data" / NAME

    @property
    def service(self) -> Path:
        return self.root / "service" / NAME

    @property
    def setuphelper_log(self) -> str:
        log = self.root / "var/log/SetupHelper"
        return log.read_text() if log.exists() else ""

    def unpack(self, archive: Path) -> None:
        """As PackageManager or a USB stick leaves it: the folder in /data."""
        with tarfile.open(archive) as tar:
            tar.extractall(self.root / "data", filter="tar")

    async def setup(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The package's setup with ``args``, as PackageManager or an owner runs it."""
        return await self.run(str(self.package / "setup"), *args)

    async def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """In a thread: the test's loop serves localsettings' stand-in meanwhile."""
        return await asyncio.to_thread(
            subprocess.run, argv, env=self.env, capture_output=True, text=True, timeout=60
        )

    def start_svscan(self) -> None:
        """svscan on /service, as at boot: its first scan starts what is there at once."""
        assert self.svscan is None
        self.svscan = subprocess.Popen(
            ["svscan", str(self.root / "service")], env=self.env, start_new_session=True
        )

    def stop_svscan(self) -> None:
        if self.svscan is None:
            return
        for path in (self.service, self.service / "log"):
            subprocess.run(["svc", "-dx", str(path)], capture_output=True, timeout=5)
        os.killpg(self.svscan.pid, signal.SIGTERM)
        self.svscan.wait(5)
        try:
            os.killpg(self.svscan.pid, signal.SIGKILL)  # supervise and children left behind
        except ProcessLookupError:
            pass
        self.svscan = None

    def pid(self, service: Path | None = None) -> int | None:
        status = subprocess.run(
            ["svstat", str(service or self.service)], capture_output=True, text=True, timeout=5
        ).stdout
        match = re.search(r": up \(pid (\d+)\)", status)
        return int(match.group(1)) if match else None

    def firmware_update(self, version: str) -> None:
        """A new root file system: /opt and /etc as the image has them, /service
        empty after the reboot; /data kept."""
        for path in (self.root / "etc/venus").glob("installed*"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        for folder in (self.root / "service", self.root / "opt/victronenergy/service"):
            shutil.rmtree(folder)
            folder.mkdir()
        (self.root / "opt/victronenergy/version").write_text(f"{version}\n20261201\n")


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


@pytest.fixture
def gx(
    tmp_path: Path, gx_package: Path, test_bus: TestBus, venus_python: VenusPython
) -> Iterator[Gx]:
    """A GX with SetupHelper and the package in /data, not yet installed."""
    root = tmp_path / "gx"
    for folder in ("data", "service", "opt/victronenergy/service", "etc/venus", "var/log"):
        (root / folder).mkdir(parents=True)
    (root / "opt/victronenergy/version").write_text(f"{VENUS_VERSION}\n20260601\n")
    (root / "etc/venus/machine").write_text(f"{MACHINE}\n")
    shutil.copytree(SETUPHELPER, root / "data/SetupHelper")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(
        GX_ROOT=str(root),
        PATH=f"{venus_python.python.parent}:{env['PATH']}",
        DBUS_SYSTEM_BUS_ADDRESS=test_bus.address,
        DBUS_BLE_SCANNER_LOG_DIR=str(tmp_path / "log"),
        DBUS_BLE_SCANNER_STATE_FILE=str(tmp_path / "devices.json"),  # not this machine's
    )
    gx = Gx(root, env)
    gx.unpack(gx_package)
    try:
        yield gx
    finally:
        gx.stop_svscan()
