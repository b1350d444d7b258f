"""service/ under real daemontools (Debian's svscan, supervise, svc, svstat, multilog), installed as on a GX."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from dbus_fast.aio import MessageBus

from ble_scanner.testing.simulator import BluezSimulator
from ble_scanner.testing.testbus import TestBus
from tests.conftest import VenusPython
from tests.helpers import name_owner, wait_until

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not all(
        shutil.which(t) for t in ("svscan", "supervise", "svc", "svstat", "multilog", "softlimit")
    ),
    reason="daemontools not installed (apt-get install daemontools)",
)


class Supervised:
    def __init__(self, service: Path, log_dir: Path, svscan: subprocess.Popen[bytes]) -> None:
        self.service = service
        self.log_dir = log_dir
        self.svscan = svscan

    def svstat(self) -> str:
        return subprocess.run(
            ["svstat", str(self.service)], capture_output=True, text=True, timeout=5
        ).stdout

    def pid(self) -> int | None:
        match = re.search(r": up \(pid (\d+)\)", self.svstat())
        return int(match.group(1)) if match else None

    def svc(self, *flags: str) -> None:
        subprocess.run(["svc", *flags, str(self.service)], check=True, timeout=5)


@pytest.fixture
def supervised(
    tmp_path: Path, test_bus: TestBus, venus_python: VenusPython
) -> Iterator[Supervised]:
    """The app installed into a temporary GX root, and svscan running on its /service.

    The run script starts ``python3`` from its PATH: here the one with Venus's dbus-fast.
    """
    root = tmp_path / "gx"
    (root / "data").mkdir(parents=True)
    (root / "service").mkdir()
    subprocess.run(
        ["sh", str(REPO / "tools/install.sh"), "--root", str(root)], check=True, capture_output=True
    )
    log_dir = tmp_path / "log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(
        PATH=f"{venus_python.python.parent}:{env['PATH']}",
        DBUS_SYSTEM_BUS_ADDRESS=test_bus.address,
        DBUS_BLE_SCANNER_LOG_DIR=str(log_dir),
        DBUS_BLE_SCANNER_STATE_FILE=str(tmp_path / "devices.json"),  # not this machine's
    )
    svscan = subprocess.Popen(["svscan", str(root / "service")], env=env, start_new_session=True)
    supervised = Supervised(root / "service/dbus-ble-scanner", log_dir, svscan)
    try:
        yield supervised
    finally:
        for path in (supervised.service, supervised.service / "log"):
            subprocess.run(["svc", "-dx", str(path)], capture_output=True, timeout=5)
        os.killpg(svscan.pid, signal.SIGTERM)
        svscan.wait(5)
        try:
            os.killpg(svscan.pid, signal.SIGKILL)  # supervise and children left behind
        except ProcessLookupError:
            pass


async def test_supervise_starts_restarts_and_logs_the_service(
    bluez: BluezSimulator, bus: MessageBus, supervised: Supervised
) -> None:
    async def on_bus() -> bool:
        return await name_owner(bus) is not None

    await wait_until(on_bus, timeout=20, what="the supervised service to own its name")
    first_pid = supervised.pid()
    assert first_pid is not None, supervised.svstat()
    first_owner = await name_owner(bus)

    # svc -t: TERM, and supervise starts it again.
    supervised.svc("-t")

    async def restarted_from(pid: int, previous: str | None) -> bool:
        current = await name_owner(bus)
        return supervised.pid() not in (None, pid) and current is not None and current != previous

    await wait_until(
        lambda: restarted_from(first_pid, first_owner), timeout=20, what="restart after svc -t"
    )
    second_pid = supervised.pid()
    assert second_pid is not None
    second_owner = await name_owner(bus)

    # A crash: kill -9, and supervise restarts it.
    os.kill(second_pid, signal.SIGKILL)
    await wait_until(
        lambda: restarted_from(second_pid, second_owner), timeout=20, what="restart after kill -9"
    )

    # multilog keeps the output, each line with a TAI64N stamp.
    current = supervised.log_dir / "current"
    await wait_until(
        lambda: (
            current.exists() and current.read_text().count("*** starting dbus-ble-scanner ***") >= 3
        ),
        timeout=10,
        what="three starts in the log",
    )
    assert re.match(r"@4000[0-9a-f]{20} ", current.read_text())
