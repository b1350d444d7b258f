"""The ingest the whole suite runs with: ``BLE_SCANNER_TEST_INGEST=mgmt|dbus`` (default mgmt).

With ``mgmt`` every simulator a test starts serves the management-channel
seam and every service a test starts (in-process ``ScannerApp`` or a
``dbus_ble_scanner.py`` process) reads it with ``--ingest mgmt``: the
production path. With ``dbus`` no seam is served and services run
``--ingest dbus``, today's Device1 path. Every construction site in tests/
goes through these few functions, so the one variable switches them all
(tests/README.md "Ingest").

The seam's path follows from the bus address: a simulator and the services
on the same test bus meet at the same path without being told of each other.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import tempfile
from dataclasses import replace
from typing import Final

from ble_scanner.config import ScannerConfig

INGEST_ENV: Final = "BLE_SCANNER_TEST_INGEST"
INGESTS: Final = ("mgmt", "dbus")
DEFAULT_INGEST: Final = "mgmt"  # the production path
# Characters of the bus address's hash in a seam's file name: unique per bus in a run.
_HASH_CHARS: Final = 12

_seam_dir: str | None = None


def ingest() -> str:
    """The suite's ingest; anything but mgmt or dbus is a mistake worth stopping on."""
    value = os.environ.get(INGEST_ENV, DEFAULT_INGEST) or DEFAULT_INGEST
    if value not in INGESTS:
        raise ValueError(f"{INGEST_ENV}={value!r}: use one of {', '.join(INGESTS)}")
    return value


def mgmt() -> bool:
    return ingest() == "mgmt"


def _directory() -> str:
    """A short per-process directory (sun_path holds 107 bytes), removed at exit."""
    global _seam_dir
    if _seam_dir is None:
        _seam_dir = tempfile.mkdtemp(prefix="blescan-mgmt-", dir="/tmp")
        atexit.register(shutil.rmtree, _seam_dir, True)
    return _seam_dir


def seam_path(bus_address: str | None) -> str:
    """Where the simulator on ``bus_address`` serves the seam."""
    key = bus_address or os.environ.get("DBUS_SYSTEM_BUS_ADDRESS", "")
    digest = hashlib.sha256(key.encode()).hexdigest()[:_HASH_CHARS]
    return os.path.join(_directory(), digest)


def sim_mgmt_socket(bus_address: str | None) -> str | None:
    """``BluezSimulator(mgmt_socket=...)``: the seam with mgmt ingest, none with dbus."""
    return seam_path(bus_address) if mgmt() else None


def sim_args(bus_address: str | None) -> list[str]:
    """The simulator's command-line options for the suite's ingest."""
    return ["--mgmt-socket", seam_path(bus_address)] if mgmt() else []


def config(bus_address: str | None, base: ScannerConfig | None = None) -> ScannerConfig:
    """``base`` (default settings) with the suite's ingest, for an in-process ScannerApp.

    A config that already names an ingest or a seam (a test about ingest) is kept.
    """
    base = base if base is not None else ScannerConfig()
    if base.ingest != ScannerConfig().ingest or base.mgmt_socket:
        return base
    if mgmt():
        return replace(base, ingest="mgmt", mgmt_socket=seam_path(bus_address))
    return replace(base, ingest="dbus")


def service_args(bus_address: str | None) -> list[str]:
    """The options for a ``dbus_ble_scanner.py`` process with the suite's ingest."""
    if mgmt():
        return ["--ingest", "mgmt", "--mgmt-socket", seam_path(bus_address)]
    return ["--ingest", "dbus"]
