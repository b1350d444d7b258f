"""Reliability fixtures: process readings, the service as a process, hypothesis profiles."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from dbus_fast import Variant
from dbus_fast.aio import MessageBus

from ble_scanner.config import ScannerConfig
from ble_scanner.main import ScannerApp
from ble_scanner.testing.simulator import BluezSimulator
from ble_scanner.testing.testbus import TestBus
from tests import ingest
from tests.helpers import NO_LOAD_BUDGET, scanner_call, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Importing dbus-fast on a loaded 2-core machine can take seconds; this bounds a
# process start without making a slow one a failure.
PROCESS_START = 30.0
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes(pid: int | None = None) -> int:
    with open(f"/proc/{pid or 'self'}/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


def open_fds(pid: int | None = None) -> int:
    return len(os.listdir(f"/proc/{pid or 'self'}/fd"))


def our_session(app: ScannerApp, bluez: BluezSimulator, adapter: str = "hci0") -> bool:
    # Our session, and the "kernel" scanning (BlueZ answers StartDiscovery
    # before Discovering flips; a report in between is dropped), and the service
    # knowing it: BlueZ holds the session before the reply reaches the service,
    # a gap a loaded machine widens.
    return (
        app.bus is not None
        and app.bus.unique_name in bluez.sessions(adapter)
        and bluez.is_discovering(adapter)
        and any(a.name == adapter and a.session for a in app.status().adapters)
    )


async def status_of(bus: MessageBus) -> dict[str, Variant]:
    reply = await scanner_call(bus, "GetStatus")
    assert reply.error_name is None, reply.body
    status: dict[str, Variant] = reply.body[0]
    return status


def spawn_service(test_bus: TestBus, *args: str, settings: bool = False) -> subprocess.Popen[str]:
    """``dbus_ble_scanner.py --no-settings`` (or with localsettings); its output goes to a
    file (a pipe could fill).

    No state file unless ``args`` name one: the default is the machine's own
    (/var/lib), which tests must neither read nor write. The load budget is off:
    the machine's load and the test's bursts must not decide what the service
    sends (tests/service/test_load_shedding.py tests it).
    """
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=test_bus.address, PYTHONUNBUFFERED="1")
    log = tempfile.TemporaryFile(mode="w+", prefix="ble-scanner-", dir="/tmp")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "dbus_ble_scanner.py",
            *([] if settings else ["--no-settings"]),
            "--state-file",
            "",
            *NO_LOAD_BUDGET,
            *ingest.service_args(env.get("DBUS_SYSTEM_BUS_ADDRESS")),
            *args,
        ],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    proc.stdout = log
    return proc


def output_of(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    proc.stdout.seek(0)
    return proc.stdout.read()


@pytest.fixture
def service_processes() -> Iterator[list[subprocess.Popen[str]]]:
    """Service processes a test starts; killed at the end whatever happened."""
    processes: list[subprocess.Popen[str]] = []
    try:
        yield processes
    finally:
        for proc in processes:
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)
            if proc.stdout is not None:
                proc.stdout.close()


async def wait_exit(proc: subprocess.Popen[str], timeout: float) -> int:
    """The exit code, polled: an executor thread left running would make a
    later test's fork() (tests/client/test_owner.py) multi-threaded."""
    await wait_until(lambda: proc.poll() is not None, timeout=timeout, what="the process to exit")
    return proc.returncode


@pytest.fixture
def app_config(test_bus: TestBus) -> ScannerConfig:
    """The settings of ``app``: defaults with the suite's ingest (a test file may override)."""
    return ingest.config(test_bus.address)


@pytest_asyncio.fixture
async def app(
    test_bus: TestBus, bluez: BluezSimulator, app_config: ScannerConfig
) -> AsyncIterator[ScannerApp]:
    """The service in-process (its tasks and handlers are counted), scanning hci0."""
    service = ScannerApp(app_config, bus_address=test_bus.address, use_settings=False)
    assert await service.start() == 0
    try:
        await wait_until(lambda: our_session(service, bluez), what="discovery session")
        yield service
    finally:
        await service.stop()
