"""The state file with the service as a process: SIGTERM and start, kill -9, bad files, a bad disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dbus_fast.aio import MessageBus

from ble_scanner.testing.simulator import BluezSimulator
from ble_scanner.testing.testbus import TestBus
from tests.helpers import SignalRecorder, has_owner, scanner_call, scanning, wait_until
from tests.reliability.conftest import PROCESS_START, output_of, spawn_service, wait_exit
from tests.service.conftest import watch_broadcast

ADAPTER = "hci0"
VICTRON = "C0:11:22:33:44:01"
RUUVI = "C0:11:22:33:44:02"
# The shortest --state-save-interval the table allows.
SAVE_INTERVAL = "5"


async def devices(bus: MessageBus) -> dict[str, dict[str, Any]]:
    """GetDiscoveredDevices, values unwrapped; {} while the service does not answer."""
    reply = await scanner_call(bus, "GetDiscoveredDevices", "a{sv}", [{}])
    if reply.error_name is not None:
        return {}
    return {a: {k: v.value for k, v in r.items()} for a, r in reply.body[0].items()}


@dataclass
class Services:
    """Service processes of one test, on the test bus, next to the simulator."""

    test_bus: TestBus
    bus: MessageBus
    bluez: BluezSimulator
    processes: list[subprocess.Popen[str]]
    state: Path

    async def start(self, *args: str) -> subprocess.Popen[str]:
        """A service with the test's state file and ``args``, once it owns the name."""
        proc = spawn_service(self.test_bus, "--state-file", str(self.state), *args)
        self.processes.append(proc)
        await wait_until(
            lambda: has_owner(self.bus), timeout=PROCESS_START, what="the service on the bus"
        )
        return proc

    async def start_hearing_two(self, *args: str) -> subprocess.Popen[str]:
        """A service scanning, and two devices advertised once each."""
        proc = await self.start(*args)
        await wait_until(lambda: scanning(self.bluez, ADAPTER), timeout=PROCESS_START, what="scan")
        await advertise_two(self.bluez)
        return proc


@pytest.fixture
def services(
    tmp_path: Path,
    test_bus: TestBus,
    bluez: BluezSimulator,
    bus: MessageBus,
    service_processes: list[subprocess.Popen[str]],
) -> Services:
    return Services(test_bus, bus, bluez, service_processes, tmp_path / "devices.json")


async def advertise_two(bluez: BluezSimulator) -> None:
    await bluez.advertise(
        ADAPTER, VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x10\x02"}, name="SmartShunt"
    )
    await bluez.advertise(
        ADAPTER, RUUVI, address_type="random", rssi=-75, manufacturer_data={0x0499: b"\x05"}
    )


async def sigterm(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert await wait_exit(proc, PROCESS_START) == 0, output_of(proc)


def addresses_in(path: Path) -> set[str]:
    try:
        return {d["address"] for d in json.loads(path.read_bytes())["devices"]}
    except (OSError, ValueError):
        return set()


async def test_sigterm_then_start_gives_the_same_snapshot_marked_restored_and_no_storm(
    services: Services,
) -> None:
    state, bus, bluez = services.state, services.bus, services.bluez
    proc = await services.start_hearing_two()

    async def both() -> bool:
        return {VICTRON, RUUVI} <= set(await devices(bus))

    await wait_until(both, what="both devices")
    before = await devices(bus)
    await sigterm(proc)
    assert addresses_in(state) == {VICTRON, RUUVI}
    # Nothing may be heard again: the snapshot after the start comes from the file alone.
    await bluez.stop_bluetoothd()

    proc = await services.start()
    after = await devices(bus)  # the first answer of the new process
    assert set(after) == set(before)
    for address, record in after.items():
        assert record.pop("Restored") is True
        assert record == before[address]
    assert "restored 2 device(s)" in output_of(proc)

    # Heard again: the mark goes, and an unchanged device is no news (no storm).
    await watch_broadcast(bus)
    broadcast = SignalRecorder(bus, path="/")
    await bluez.start_bluetoothd()
    await wait_until(lambda: scanning(bluez, ADAPTER), timeout=PROCESS_START, what="scan")
    await bluez.advertise(
        ADAPTER, VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x10\x02"}, name="SmartShunt"
    )

    async def heard_again() -> bool:
        record = (await devices(bus)).get(VICTRON, {})
        return "Restored" not in record and record.get("LastSeen") != before[VICTRON]["LastSeen"]

    await wait_until(heard_again, what="VICTRON heard again")
    assert "Restored" in (await devices(bus))[RUUVI]
    assert not broadcast.of("DeviceDiscovered"), [m.body[0] for m in broadcast.messages]


async def test_kill_9_then_start_restores_the_last_periodic_save(services: Services) -> None:
    state, bus, bluez = services.state, services.bus, services.bluez
    proc = await services.start_hearing_two("--state-save-interval", SAVE_INTERVAL)
    try:
        await wait_until(
            lambda: addresses_in(state) == {VICTRON, RUUVI},
            timeout=PROCESS_START,
            what="a periodic save with both devices",
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the service said:\n{output_of(proc)}") from None
    proc.kill()
    assert await wait_exit(proc, PROCESS_START) == -signal.SIGKILL
    saved = json.loads(state.read_bytes())
    await bluez.stop_bluetoothd()

    proc = await services.start("--state-save-interval", SAVE_INTERVAL)
    after = await devices(bus)
    assert set(after) == {VICTRON, RUUVI}
    for entry in saved["devices"]:
        record = after[entry["address"]]
        assert record["Restored"] is True
        assert (record["LastSeen"], record["Rssi"]) == (entry["last_seen"], entry["rssi"])
    await sigterm(proc)


def _valid_file() -> bytes:
    document = {
        "format": "dbus-ble-scanner devices",
        "version": 1,
        "saved": 1.7e9,
        "devices": [
            {
                "address": VICTRON,
                "address_type": "public",
                "adapter": ADAPTER,
                "path": f"/org/bluez/{ADAPTER}/dev_{VICTRON.replace(':', '_')}",
                "rssi": -60,
                "first_seen": 1.7e9,
                "last_seen": 1.7e9,
                "age": 0.0,
                "interval": None,
                "name": None,
                "tx_power": None,
                "manufacturer_data": {"737": "1002"},
                "service_data": {},
                "service_uuids": [],
            }
        ],
    }
    return json.dumps(document).encode()


def _bad_file(kind: str, path: Path) -> None:
    if kind == "corrupt JSON":
        path.write_bytes(b'{"format": "dbus-ble-scanner devices", "version": 1, "saved": }')
    elif kind == "truncated":
        data = _valid_file()
        path.write_bytes(data[: len(data) * 2 // 3])
    elif kind == "foreign version":
        path.write_bytes(_valid_file().replace(b'"version": 1', b'"version": 99'))
    else:  # unreadable: root reads any file whatever its mode, but not a directory
        path.mkdir()


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("corrupt JSON", "not JSON (corrupt or truncated)"),
        ("truncated", "not JSON (corrupt or truncated)"),
        ("foreign version", "format version 99, this service reads 1"),
        ("unreadable", "cannot be read: Is a directory"),
    ],
)
async def test_a_bad_state_file_is_logged_once_and_the_service_starts_empty(
    kind: str, reason: str, services: Services
) -> None:
    state = services.state
    _bad_file(kind, state)
    proc = await services.start()
    assert await devices(services.bus) == {}
    lines = [line for line in output_of(proc).splitlines() if "ignored" in line]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"WARNING ble_scanner: state file {state} ignored: {reason}")
    await sigterm(proc)
    if kind != "unreadable":
        assert json.loads(state.read_bytes())["version"] == 1  # replaced by a good one


async def test_a_state_directory_that_cannot_be_written_is_logged_once_and_the_service_runs(
    tmp_path: Path, services: Services
) -> None:
    # Root writes anywhere a mode forbids it, but not below a regular file.
    (tmp_path / "file").write_text("")
    state = services.state = tmp_path / "file" / "devices.json"
    bus = services.bus
    proc = await services.start("--state-save-interval", SAVE_INTERVAL)
    await wait_until(
        lambda: "not written" in output_of(proc), timeout=PROCESS_START, what="the failed save"
    )
    reply = await scanner_call(bus, "GetStatus")
    assert reply.error_name is None, reply.body
    await sigterm(proc)  # a second attempt, the same reason: not logged again
    lines = [line for line in output_of(proc).splitlines() if "not written" in line]
    assert lines == [
        f"WARNING ble_scanner: state file {state} not written: File exists: {tmp_path / 'file'}"
    ], lines
    assert os.listdir(tmp_path) == ["file"]


async def test_a_second_instance_that_finds_the_name_taken_never_writes_the_file(
    services: Services,
) -> None:
    first = await services.start()
    second = spawn_service(services.test_bus, "--state-file", str(services.state))
    services.processes.append(second)
    assert await wait_exit(second, PROCESS_START) == 2
    assert not services.state.exists()  # the first has not saved yet; the second must not
    await sigterm(first)
    assert services.state.exists()
