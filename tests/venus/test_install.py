"""tools/install.sh and tools/uninstall.sh in a temporary GX root, checked file by file, run twice."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
APP = "data/apps/dbus-ble-scanner"
LINE = (
    "[ -e /service/dbus-ble-scanner ] || "
    "ln -s /data/apps/dbus-ble-scanner/service /service/dbus-ble-scanner  # dbus-ble-scanner"
)
# POSIX shells a GX or a build host might run these with; BusyBox when present.
SHELLS = [s for s in ("dash", "busybox") if shutil.which(s)]


def sh(shell: str, script: str, *args: str) -> str:
    argv = [shell, "sh", script, *args] if shell == "busybox" else [shell, script, *args]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def snapshot(root: Path) -> dict[str, tuple[str, ...]]:
    """Every path under root: kind, mode and content digest or link target."""
    tree: dict[str, tuple[str, ...]] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            tree[rel] = ("link", os.readlink(path))
        elif stat.S_ISDIR(st.st_mode):
            tree[rel] = ("dir", oct(st.st_mode & 0o7777))
        else:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            tree[rel] = ("file", oct(st.st_mode & 0o7777), digest)
    return tree


@pytest.fixture
def gx_root(tmp_path: Path) -> Path:
    """An empty GX: /data (persistent) and /service (tmpfs) exist."""
    root = tmp_path / "gx"
    (root / "data").mkdir(parents=True)
    (root / "service").mkdir()
    return root


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A frozen copy of the checkout: others edit the working tree while tests run."""
    src = tmp_path_factory.mktemp("src")
    for name in ("dbus_ble_scanner.py", "ble_scanner", "service", "tools", "ext"):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, symlinks=True)
        else:
            shutil.copy2(REPO / name, src / name)
    return src


class Tools:
    """install.sh / uninstall.sh from ``source``, run by one shell."""

    def __init__(self, shell: str, source: Path) -> None:
        self.shell = shell
        self.source = source

    def install(self, root: Path) -> str:
        return sh(self.shell, str(self.source / "tools/install.sh"), "--root", str(root))

    def uninstall(self, root: Path) -> str:
        return sh(self.shell, str(self.source / "tools/uninstall.sh"), "--root", str(root))

    def run(self, line: str) -> None:
        argv = (
            ["busybox", "sh", "-c", line] if self.shell == "busybox" else [self.shell, "-c", line]
        )
        subprocess.run(argv, check=True, timeout=10)


@pytest.fixture(params=SHELLS)
def tools(request: pytest.FixtureRequest, source: Path) -> Tools:
    return Tools(str(request.param), source)


def test_install_puts_the_app_the_link_and_one_rc_local_line(tools: Tools, gx_root: Path) -> None:
    tools.install(gx_root)
    app = gx_root / APP
    for executable in (
        "dbus_ble_scanner.py",
        "service/run",
        "service/log/run",
        "tools/install.sh",
        "tools/uninstall.sh",
        "tools/restore-ble-sensors-scan.sh",  # what the installed uninstall.sh runs
    ):
        assert (app / executable).stat().st_mode & 0o111, executable
    assert (app / "tools/common.sh").read_bytes() == (tools.source / "tools/common.sh").read_bytes()
    assert (app / "service/run").read_bytes() == (tools.source / "service/run").read_bytes()
    assert (app / "ble_scanner/__init__.py").is_file()
    assert (app / "ble_scanner/venus/busitem.py").is_file()
    # The test doubles stay behind (the source has them: the check means something).
    assert (tools.source / "ble_scanner/testing/__init__.py").is_file()
    assert not [p for p in app.rglob("*") if "testing" in p.relative_to(app).parts]
    assert not list(app.rglob("__pycache__"))
    link = gx_root / "service/dbus-ble-scanner"
    assert link.is_symlink() and os.readlink(link) == str(app / "service")
    rc = gx_root / "data/rc.local"
    assert rc.read_text() == f"#!/bin/sh\n{LINE}\n"
    assert rc.stat().st_mode & 0o111


def test_installing_twice_changes_nothing(tools: Tools, gx_root: Path) -> None:
    tools.install(gx_root)
    first = snapshot(gx_root)
    tools.install(gx_root)
    assert snapshot(gx_root) == first


def test_an_existing_rc_local_gets_the_line_before_its_exit(tools: Tools, gx_root: Path) -> None:
    rc = gx_root / "data/rc.local"
    rc.write_text("#!/bin/sh\necho custom\nexit 0\n")
    rc.chmod(0o755)
    tools.install(gx_root)
    assert rc.read_text() == f"#!/bin/sh\necho custom\n{LINE}\nexit 0\n"
    assert stat.S_IMODE(rc.stat().st_mode) == 0o755


def test_the_rc_local_line_recreates_the_link_after_a_reboot(tools: Tools, gx_root: Path) -> None:
    tools.install(gx_root)
    link = gx_root / "service/dbus-ble-scanner"
    link.unlink()  # /service is a tmpfs: a reboot starts without the link
    line = LINE.replace(" /service/", f" {gx_root}/service/").replace(
        " /data/", f" {gx_root}/data/"
    )
    tools.run(line)
    assert os.readlink(link) == str(gx_root / APP / "service")
    tools.run(line)
    assert os.readlink(link) == str(gx_root / APP / "service")


def test_uninstall_restores_the_tree_as_it_was(tools: Tools, gx_root: Path) -> None:
    rc = gx_root / "data/rc.local"
    rc.write_text("#!/bin/sh\necho custom\n")
    rc.chmod(0o755)
    before = snapshot(gx_root)
    tools.install(gx_root)
    assert snapshot(gx_root) != before
    tools.uninstall(gx_root)
    assert snapshot(gx_root) == before


def test_uninstall_removes_an_rc_local_it_created(tools: Tools, gx_root: Path) -> None:
    before = snapshot(gx_root)
    tools.install(gx_root)
    tools.uninstall(gx_root)
    assert snapshot(gx_root) == before
    assert not (gx_root / "data/rc.local").exists()


def test_uninstalling_twice_changes_nothing(tools: Tools, gx_root: Path) -> None:
    tools.install(gx_root)
    tools.uninstall(gx_root)
    after = snapshot(gx_root)
    tools.uninstall(gx_root)
    assert snapshot(gx_root) == after


def test_installing_from_the_installed_copy_changes_nothing(tools: Tools, gx_root: Path) -> None:
    # The bundle unpacked straight into /data/apps, then its own installer run.
    tools.install(gx_root)
    first = snapshot(gx_root)
    sh(tools.shell, str(gx_root / APP / "tools/install.sh"), "--root", str(gx_root))
    assert snapshot(gx_root) == first
