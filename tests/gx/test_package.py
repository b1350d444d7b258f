"""The SetupHelper package in a GX root: built, installed, supervised, uninstalled,
reinstalled after a firmware update, and taking over tools/install.sh's install."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from dbus_fast.aio import MessageBus

from ble_scanner import __version__
from ble_scanner.testing.blesensors_socket import BleSensorsReceiver
from ble_scanner.testing.localsettings import LocalSettingsStandIn, ble_sensors_settings
from ble_scanner.testing.simulator import BluezSimulator
from ble_scanner.testing.testbus import TestBus
from tests.gx.conftest import GITHUB_USER, NAME, REPO, Gx, build_env, build_package, cmdline
from tests.helpers import name_owner, scanning, wait_until
from tests.venus.test_bundle import imports_of_pruned
from tests.venus.test_install import snapshot

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("svscan", "svc", "svok", "svstat", "multilog", "bash")),
    reason="daemontools not installed (apt-get install daemontools)",
)

FEED = "/Settings/BleScanner/BleSensorsFeed"
WAS = "/Settings/BleScanner/BleSensorsBluetoothWas"
ENABLED = "/Settings/BleSensors/Bluetooth/Enabled"
# svscan looks for new services every 5 s; the service then starts on a busy machine.
START = 20.0
SETTLE = 10.0


async def on_bus(bus: MessageBus) -> bool:
    return await name_owner(bus) is not None


async def off_bus(bus: MessageBus) -> bool:
    return await name_owner(bus) is None


async def running_from(gx: Gx, bus: MessageBus, app: Path) -> int:
    """Until the supervised service owns its name; its pid, checked to run ``app``."""
    await wait_until(lambda: on_bus(bus), timeout=START, what="the service to own its name")
    pid = gx.pid()
    assert pid is not None
    assert str(app / "dbus_ble_scanner.py") in cmdline(pid)
    return pid


@pytest_asyncio.fixture
async def settings(test_bus: TestBus) -> AsyncIterator[LocalSettingsStandIn]:
    """localsettings with dbus-ble-sensors' settings, its socket a receiver's."""
    receiver = await BleSensorsReceiver.start()
    standin = await LocalSettingsStandIn.start(
        test_bus.address, settings=ble_sensors_settings(port=receiver.port)
    )
    try:
        yield standin
    finally:
        await standin.stop()
        receiver.close()


def running(pid: int) -> bool:
    """Alive and not a zombie (a dead child its parent has not reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except FileNotFoundError:
        return False


def kept(tree: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """A snapshot without what running changes anyway: logs, the package's bytecode,
    and SetupHelper's record folder (left empty after an uninstall)."""
    return {
        k: v
        for k, v in tree.items()
        if not k.startswith("var/log")
        and "__pycache__" not in k
        and k != "etc/venus/installedModifications"
    }


async def feed_on(settings: LocalSettingsStandIn) -> None:
    """The owner switches the feed on; the service takes dbus-ble-sensors' scan over."""
    await wait_until(lambda: FEED in settings.settings, timeout=SETTLE, what="the feed setting")
    assert settings.set_value(FEED, 1) == 0
    await wait_until(lambda: settings.value(ENABLED) == 0, timeout=SETTLE, what="scan taken")
    await wait_until(lambda: settings.value(WAS) == 1, timeout=SETTLE, what="the value kept")


def test_the_package_holds_what_setuphelper_expects(gx_package: Path) -> None:
    with tarfile.open(gx_package) as tar:
        members = {m.name: m for m in tar.getmembers()}
        text = {
            name: tar.extractfile(members[f"{NAME}/{name}"]).read().decode()  # type: ignore[union-attr]
            for name in ("version", "gitHubInfo", "firstCompatibleVersion", "setup")
        }
    assert {name.split("/")[0] for name in members} == {NAME}
    executables = (
        "setup",
        f"services/{NAME}/run",
        f"services/{NAME}/log/run",
        "dbus_ble_scanner.py",
        "tools/uninstall.sh",
        "tools/restore-ble-sensors-scan.sh",
    )
    for name in executables:
        assert members[f"{NAME}/{name}"].mode & 0o111, name
    for name in (
        "ReadMe",
        "changes",
        "ble_scanner/main.py",
        "ext/requirements.txt",
        "tools/common.sh",
    ):
        assert members[f"{NAME}/{name}"].isfile(), name
    assert text["version"] == f"v{__version__}\n"
    assert text["gitHubInfo"] == f"{GITHUB_USER}:setuphelper\n"
    assert text["firstCompatibleVersion"] == "v3.60\n"
    assert text["setup"].startswith("#!/bin/bash\n")
    assert "/data/SetupHelper/HelperResources/IncludeHelpers" in text["setup"]
    assert "endScript 'INSTALL_SERVICES'" in text["setup"]
    # No test doubles, no caches, no installer of the other kind.
    assert not [n for n in members if "/testing" in n or "__pycache__" in n]
    assert f"{NAME}/tools/install.sh" not in members and f"{NAME}/service/run" not in members


def test_nothing_in_the_package_imports_the_test_doubles(gx_package: Path, tmp_path: Path) -> None:
    with tarfile.open(gx_package) as tar:
        tar.extractall(tmp_path, filter="tar")
    assert (tmp_path / NAME / "ble_scanner/venus/feed.py").is_file()
    assert imports_of_pruned(tmp_path / NAME) == []


def test_branch_puts_the_package_at_the_top_of_a_branch_for_packagemanager(
    tmp_path: Path,
) -> None:
    """--branch: PackageManager downloads a branch of <user>/dbus-ble-scanner and wants
    the package at its top; here the repository is a scratch one (GIT_DIR)."""
    git_dir = tmp_path / "published.git"
    subprocess.run(["git", "init", "-q", "--bare", str(git_dir)], check=True, timeout=30)
    # Who publishes: a fresh machine has no git identity of its own (no ~/.gitconfig).
    who = {
        f"GIT_{role}_{what}": value
        for role in ("AUTHOR", "COMMITTER")
        for what, value in (("NAME", "Test Publisher"), ("EMAIL", "publisher@example.invalid"))
    }
    env = {**build_env(tmp_path), "GIT_DIR": str(git_dir), **who}

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "--git-dir", str(git_dir), *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout

    build_package(env, "--branch", "setuphelper")
    modes = {}
    for line in git("ls-tree", "setuphelper").splitlines():
        mode, _kind, _object, name = line.split(None, 3)
        modes[name] = mode
    assert modes["setup"] == "100755" and modes["version"] == "100644"
    assert {"services", "ble_scanner", "ext", "gitHubInfo", "ReadMe"} <= modes.keys()
    assert git("show", "setuphelper:gitHubInfo") == f"{GITHUB_USER}:setuphelper\n"
    # The same package again: no new commit.
    assert "unchanged" in build_package(env, "--branch", "setuphelper").stderr
    assert len(git("rev-list", "setuphelper").split()) == 1


@pytest.mark.parametrize("from_pm", [True, False], ids=["runFromPm", "console"])
async def test_install_starts_the_service_from_its_copied_run_script(
    gx: Gx, bluez: BluezSimulator, bus: MessageBus, from_pm: bool
) -> None:
    done = await gx.setup("install", *(["runFromPm"] if from_pm else []))
    assert done.returncode == 0, done.stderr
    # PackageManager's runs print nothing; SetupHelper's log has it either way.
    assert (done.stdout == "") == from_pm, done.stdout
    assert "v0.1.0 installed" in gx.setuphelper_log
    boot = gx.root / "opt/victronenergy/service" / NAME
    for copy in (gx.service, boot):
        assert copy.is_dir() and not copy.is_symlink(), copy
        assert (copy / "run").read_bytes() == (REPO / "service/run").read_bytes()
        assert (copy / "log/run").read_bytes() == (REPO / "service/log/run").read_bytes()
    assert (gx.root / "etc/venus" / f"installedVersion-{NAME}").read_text() == f"v{__version__}\n"
    gx.start_svscan()
    await running_from(gx, bus, gx.package)
    await wait_until(lambda: scanning(bluez, "hci0"), timeout=SETTLE, what="its discovery session")


async def test_uninstall_removes_it_and_gives_dbus_ble_sensors_its_scan_back(
    gx: Gx, bluez: BluezSimulator, bus: MessageBus, settings: LocalSettingsStandIn
) -> None:
    before = snapshot(gx.root)
    assert (await gx.setup("install", "runFromPm")).returncode == 0
    gx.start_svscan()
    await running_from(gx, bus, gx.package)
    await feed_on(settings)
    done = await gx.setup("uninstall", "runFromPm")
    assert done.returncode == 0, done.stderr
    await wait_until(lambda: off_bus(bus), timeout=SETTLE, what="the service to stop")
    # As tools/uninstall.sh leaves them (tests/venus/test_blesensors_feed.py).
    assert (settings.value(ENABLED), settings.value(WAS), settings.value(FEED)) == (1, -1, 0)
    assert "put dbus-ble-sensors' own Bluetooth scan back" in gx.setuphelper_log
    # The package stays in /data for PackageManager; nothing else of it is left.
    assert kept(snapshot(gx.root)) == kept(before)
    assert not list((gx.root / "etc/venus/installedModifications").iterdir())


async def test_a_firmware_update_is_followed_by_a_reinstall_that_brings_it_back(
    gx: Gx, bluez: BluezSimulator, bus: MessageBus
) -> None:
    assert (await gx.setup("install", "runFromPm")).returncode == 0
    gx.firmware_update("v3.71")
    assert not gx.service.exists()
    # SetupHelper's reinstallMods at boot, then svscan.
    done = await gx.setup("reinstall", "auto", "deferReboot")
    assert done.returncode == 0, done.stderr
    assert (gx.root / "opt/victronenergy/service" / NAME / "run").is_file()
    gx.start_svscan()
    await running_from(gx, bus, gx.package)


async def test_reinstalling_the_installed_version_changes_nothing(gx: Gx) -> None:
    assert (await gx.setup("install", "runFromPm")).returncode == 0
    before = snapshot(gx.root)
    done = await gx.setup("reinstall", "runFromPm")
    assert done.returncode == 0, done.stderr
    assert gx.setuphelper_log.endswith("v0.1.0 already installed, nothing to do\n")
    after = snapshot(gx.root)
    assert {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)} == {
        "var/log/SetupHelper"
    }


async def test_the_package_replaces_the_install_sh_install_and_keeps_the_feed(
    gx: Gx, bluez: BluezSimulator, bus: MessageBus, settings: LocalSettingsStandIn
) -> None:
    manual = gx.root / "data/apps" / NAME
    installed = await gx.run("sh", str(REPO / "tools/install.sh"), "--root", str(gx.root))
    assert installed.returncode == 0, installed.stderr
    gx.start_svscan()
    old = await running_from(gx, bus, manual)
    await feed_on(settings)

    done = await gx.setup("install", "runFromPm")
    assert done.returncode == 0, done.stderr
    # The old one is gone before setup returns: never two at once.
    assert not running(old)
    assert "replacing the install made by tools/install.sh" in gx.setuphelper_log
    assert not manual.exists() and not (gx.root / "data/apps").exists()
    assert not (gx.root / "data/rc.local").exists()  # install.sh had created it
    assert gx.service.is_dir() and not gx.service.is_symlink()
    await running_from(gx, bus, gx.package)
    # The feed carried on: dbus-ble-sensors' scan is still ours.
    assert (settings.value(FEED), settings.value(ENABLED), settings.value(WAS)) == (1, 0, 1)

    # The reverse is refused, and changes nothing.
    before = snapshot(gx.root / "data")
    refused = await gx.run("sh", str(REPO / "tools/install.sh"), "--root", str(gx.root))
    assert refused.returncode == 1
    assert "installed as a SetupHelper package" in refused.stderr
    assert snapshot(gx.root / "data") == before
    refused = await gx.run("sh", str(REPO / "tools/uninstall.sh"), "--root", str(gx.root))
    assert refused.returncode == 1
    assert "remove it in PackageManager" in refused.stderr
    assert settings.value(FEED) == 1


async def test_an_older_venus_is_refused_with_setuphelpers_code(gx: Gx) -> None:
    (gx.root / "opt/victronenergy/version").write_text("v3.50\n20250101\n")
    done = await gx.setup("install", "runFromPm")
    assert done.returncode == 254  # SetupHelper's "firmware not compatible"
    assert "needs Venus OS v3.60 or later, not v3.50" in gx.setuphelper_log
    assert not gx.service.exists()


async def test_an_unknown_install_of_the_service_is_refused_as_a_conflict(gx: Gx) -> None:
    elsewhere = gx.root / "data/my-own-scanner/service"
    elsewhere.mkdir(parents=True)
    (gx.root / "service" / NAME).symlink_to(elsewhere)
    done = await gx.setup("install", "runFromPm")
    assert done.returncode == 246  # SetupHelper's "package conflict"
    assert f"links to {elsewhere}, which is not tools/install.sh's install" in gx.setuphelper_log
    assert os.readlink(gx.service) == str(elsewhere)
    assert not (gx.root / "etc/venus" / f"installedVersion-{NAME}").exists()


async def test_without_setuphelper_setup_says_so_and_exits_1(gx: Gx) -> None:
    shutil.rmtree(gx.root / "data/SetupHelper")
    done = await gx.setup("install")
    assert done.returncode == 1
    assert "SetupHelper is not installed" in done.stderr
    assert not gx.service.exists()


async def test_the_run_script_copied_runs_the_package_in_data(gx: Gx, tmp_path: Path) -> None:
    """Outside supervise too: ``run`` from a copy finds /data/dbus-ble-scanner."""
    copy = tmp_path / "copied"
    shutil.copytree(gx.package / "services" / NAME, copy)
    probe = tmp_path / "bin"
    probe.mkdir()
    # softlimit stands for itself; python3 prints what it was asked to run.
    (probe / "softlimit").write_text('#!/bin/sh\nshift 2\nexec "$@"\n')
    (probe / "python3").write_text('#!/bin/sh\necho "$@"\n')
    for tool in probe.iterdir():
        tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    env = {**gx.env, "PATH": f"{probe}:{gx.env['PATH']}"}
    out = subprocess.run(
        ["sh", "./run"], cwd=copy, env=env, capture_output=True, text=True, timeout=10
    )
    assert out.returncode == 0, out.stderr
    assert (
        out.stdout.splitlines()[-1]
        == f"-u {gx.package}/dbus_ble_scanner.py --state-file {gx.env['DBUS_BLE_SCANNER_STATE_FILE']}"
    )


async def test_uninstalling_the_package_leaves_an_install_sh_install_alone(gx: Gx) -> None:
    installed = await gx.run("sh", str(REPO / "tools/install.sh"), "--root", str(gx.root))
    assert installed.returncode == 0, installed.stderr
    before = snapshot(gx.root)
    done = await gx.setup("uninstall", "runFromPm")
    assert done.returncode == 0, done.stderr
    assert "is tools/install.sh's install, not this package's: left alone" in gx.setuphelper_log
    assert kept(snapshot(gx.root)) == kept(before)
