"""The device cache in a file, so that a restart starts with the devices that were present.

JSON from the standard library: nothing to install on a GX, readable with
``python3 -m json.tool`` when someone wonders what the scanner remembers, and
a version field that says what a reader may expect. Payload bytes are hex.
``encode`` and ``decode`` are pure; ``read`` and ``write_atomically`` do the
file I/O (a temporary file in the same directory, fsync, rename, fsync of the
directory: after a power cut the file is the old one or the new one, whole).

Ages, not times, carry presence across the restart: each device's seconds
since it was last heard when the file was written are compared with its lost
time (presence.py). The wall-clock time between the writing and the reading
is time nobody listened (sources.py): it does not count, unless it outlasted
the lost timeout, which makes every device too old. A file written "in the
future" (the clock went back) is ignored.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
import threading
from collections.abc import Iterable, Mapping
from typing import Any, Final

from .cache import Device
from .identifiers import MAX_ECHO
from .presence import IntervalLearner, lost_after
from .record import (
    Content,
    adapter_name,
    normalize_address,
    parse_manufacturer_data,
    parse_name,
    parse_rssi,
    parse_service_data,
    parse_uuids,
)

# What the file says it is, and the layout this code writes and reads. A file
# with another version (an older or newer service) is ignored, not guessed at.
FORMAT: Final = "dbus-ble-scanner devices"
FORMAT_VERSION: Final = 1
# Venus keeps what must survive a firmware update under /data; BlueZ's own
# state lives in /data/var/lib/bluetooth there (localstatedir=/data/var).
VENUS_MARKER: Final = "/opt/victronenergy"
VENUS_STATE_FILE: Final = "/data/var/lib/dbus-ble-scanner/devices.json"
STATE_FILE: Final = "/var/lib/dbus-ble-scanner/devices.json"
# 50 000 devices (CacheSize's maximum) at ~1 KB of JSON each, twice over: a
# larger file is not ours, and is not read into memory.
MAX_FILE_BYTES: Final = 100_000_000
# BlueZ names a device object /org/bluez/<adapter>/dev_<address with _>.
_DEVICE_PATH_RE: Final = re.compile(
    r"^/org/bluez/hci[0-9]{1,3}/dev_[0-9A-F]{2}(?:_[0-9A-F]{2}){5}$"
)
# One writer at a time: the periodic save runs in a thread, the SIGTERM one not.
_WRITE_LOCK: Final = threading.Lock()


class StateFileError(ValueError):
    """The file cannot be used; the text says why, for one log line."""


def default_path() -> str:
    """The file when ``--state-file`` is not given: under /data on Venus, /var/lib elsewhere."""
    return VENUS_STATE_FILE if os.path.isdir(VENUS_MARKER) else STATE_FILE


# --- pure: the document -----------------------------------------------------------


def encode(devices: Iterable[Device], now: float, wall: float) -> bytes:
    """The file's bytes for ``devices``; ``now`` on the cache's monotonic clock, ``wall`` Unix."""
    entries = []
    for device in devices:
        content = device.content
        if content is None:
            continue
        entries.append(
            {
                "address": device.address,
                "address_type": device.address_type,
                "adapter": device.adapter,
                "path": device.path,
                "rssi": device.rssi,
                "first_seen": device.first_seen,
                "last_seen": device.last_seen,
                "age": max(0.0, now - device.heard),
                "interval": device.interval,
                "name": content.name,
                "tx_power": content.tx_power,
                "manufacturer_data": {
                    str(company): payload.hex()
                    for company, payload in content.manufacturer_data.items()
                },
                "service_data": {
                    uuid: payload.hex() for uuid, payload in content.service_data.items()
                },
                "service_uuids": list(content.service_uuids),
            }
        )
    document = {"format": FORMAT, "version": FORMAT_VERSION, "saved": wall, "devices": entries}
    return json.dumps(document, separators=(",", ":")).encode()


def decode(data: bytes, now: float, wall: float, lost_timeout: float) -> tuple[list[Device], int]:
    """The devices in a file's bytes still present now, and how many were too old.

    A device is too old when it was unheard for its lost time when the file was
    written, or when the file is older than the lost timeout.

    Every value is checked as BlueZ's are (record.py); anything wrong makes the
    whole file a StateFileError: a file that is wrong in one place cannot be
    trusted in the others.
    """
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise StateFileError(
            f"not JSON (corrupt or truncated): {str(exc)[: MAX_ECHO * 2]}"
        ) from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise StateFileError(f"not a {FORMAT} file")
    version = document.get("version")
    if version != FORMAT_VERSION:
        raise StateFileError(
            f"format version {str(version)[:MAX_ECHO]}, this service reads {FORMAT_VERSION}"
        )
    try:
        saved = _seconds(document.get("saved"), "saved")
    except ValueError as exc:
        raise StateFileError(str(exc)) from None
    elapsed = wall - saved
    if elapsed < 0:
        raise StateFileError(f"written {-elapsed:.0f} s in the future (the clock went back)")
    entries = document.get("devices")
    if not isinstance(entries, list):
        raise StateFileError("no device list")
    devices: list[Device] = []
    too_old = 0
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        try:
            device, age = _device(entry, now)
        except (ValueError, TypeError) as exc:
            raise StateFileError(f"device {index}: {str(exc)[: MAX_ECHO * 2]}") from None
        if device.address in seen:
            raise StateFileError(f"device {index}: {device.address} twice")
        seen.add(device.address)
        # The time the service was down nobody listened (core/sources.py): it does
        # not count towards the lost time, unless it outlasted the lost timeout.
        if age >= lost_after(device.interval, lost_timeout) or elapsed >= lost_timeout:
            too_old += 1
            continue
        device.heard = now - age - elapsed
        device.since = now - age
        devices.append(device)
    return devices, too_old


def _device(entry: Any, now: float) -> tuple[Device, float]:
    """One entry → a Device (its ``heard`` not yet set) and its age when written."""
    if not isinstance(entry, dict):
        raise TypeError("not an object")
    address = normalize_address(_text(entry, "address"))
    path = _text(entry, "path")
    if not _DEVICE_PATH_RE.match(path) or not path.endswith(address.replace(":", "_")):
        raise ValueError(f"path {path[:MAX_ECHO]!r} is not BlueZ's for {address}")
    adapter = _text(entry, "adapter")
    if adapter != adapter_name(path):
        raise ValueError(f"adapter {adapter[:MAX_ECHO]!r} is not the path's")
    address_type = _text(entry, "address_type")
    if address_type not in ("public", "random"):
        raise ValueError(f"address_type {address_type[:MAX_ECHO]!r}")
    rssi = entry.get("rssi")
    name = entry.get("name")
    tx_power = entry.get("tx_power")
    interval = entry.get("interval")
    content = Content(
        name=None if name is None else parse_name(name),
        tx_power=None if tx_power is None else parse_rssi(tx_power, "tx_power"),
        manufacturer_data=parse_manufacturer_data(
            {int(k): bytes.fromhex(v) for k, v in _mapping(entry, "manufacturer_data").items()}
        ),
        service_data=parse_service_data(
            {k: bytes.fromhex(v) for k, v in _mapping(entry, "service_data").items()}
        ),
        service_uuids=parse_uuids(_list(entry, "service_uuids")),
    )
    device = Device(address, _seconds(entry.get("first_seen"), "first_seen"), now)
    device.last_seen = _seconds(entry.get("last_seen"), "last_seen")
    device.address_type = address_type
    device.adapter = adapter
    device.path = path
    device.rssi = None if rssi is None else parse_rssi(rssi)
    device.content = content
    device.version = 1
    if interval is not None:
        device.learner = IntervalLearner(_seconds(interval, "interval"))
    return device, _seconds(entry.get("age"), "age")


def _text(entry: Mapping[str, Any], key: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str):
        raise TypeError(f"{key} is not a string")
    return value


def _mapping(entry: Mapping[str, Any], key: str) -> Mapping[str, str]:
    value = entry.get(key)
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise TypeError(f"{key} is not an object of hex strings")
    return value


def _list(entry: Mapping[str, Any], key: str) -> list[Any]:
    value = entry.get(key)
    if not isinstance(value, list):
        raise TypeError(f"{key} is not a list")
    return value


def _seconds(value: Any, key: str) -> float:
    """A finite, non-negative number of seconds (or Unix time)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{key} is not a number")
    if value < 0:
        raise ValueError(f"{key} is negative")
    return float(value)


# --- I/O --------------------------------------------------------------------------


def read(path: str) -> bytes | None:
    """The file's bytes; None if there is none yet; StateFileError if it cannot be read."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateFileError(f"cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise StateFileError(f"larger than {MAX_FILE_BYTES} bytes")
    return data


def write_atomically(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data``, whole or not at all; OSError if it cannot.

    The directory is created if missing.
    """
    directory = os.path.dirname(os.path.abspath(path))
    with _WRITE_LOCK:
        os.makedirs(directory, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=".devices-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        # The rename is durable once the directory is on disk too.
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
