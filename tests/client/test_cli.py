"""The ble-scanner command as a user runs it: a subprocess against the service on the test bus."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import pytest

from ble_scanner.client import ScannerClient
from ble_scanner.main import ScannerApp
from ble_scanner.testing.simulator import BluezSimulator
from ble_scanner.testing.testbus import TestBus
from tests.client.conftest import BTHOME, ROOT, RUUVI, VICTRON, advertise_scene
from tests.helpers import wait_until

CLI = [sys.executable, "-m", "ble_scanner.client.cli"]


async def start(test_bus: TestBus | None, *args: str) -> asyncio.subprocess.Process:
    env = dict(os.environ, PYTHONPATH=ROOT)
    if test_bus is not None:
        env["DBUS_SYSTEM_BUS_ADDRESS"] = test_bus.address
    return await asyncio.create_subprocess_exec(
        *CLI,
        *args,
        env=env,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def run(test_bus: TestBus | None, *args: str) -> tuple[int, str, str]:
    proc = await start(test_bus, *args)
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def scene(bluez: BluezSimulator, test_bus: TestBus) -> None:
    await advertise_scene(bluez)
    async with ScannerClient(bus_address=test_bus.address) as client:

        async def three() -> bool:
            return len(await client.devices()) == 3

        await wait_until(three, what="the scene in the service")


async def test_status_shows_adapters_and_counts(test_bus: TestBus, scanner: ScannerApp) -> None:
    code, out, err = await run(test_bus, "status")
    assert code == 0, err
    assert "Scanning       yes" in out
    assert "Load shedding  off" in out
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("ADAPTER"))
    assert header.split() == [
        "ADAPTER", "ADDRESS", "POWERED", "DISCOVERING", "OURS", "LISTENING", "INGEST", "STATE"
    ]  # fmt: skip
    hci0 = next(line for line in lines if line.startswith("hci0"))
    assert "00:1A:7D:DA:71:10" in hci0
    code, out, _ = await run(test_bus, "status", "--json")
    assert code == 0
    assert json.loads(out)["Adapters"]["hci0"]["Session"] is True


async def test_devices_table_is_readable_and_filterable(
    test_bus: TestBus, scanner: ScannerApp, bluez: BluezSimulator
) -> None:
    await scene(bluez, test_bus)
    code, out, err = await run(test_bus, "devices")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["ADDRESS", "NAME", "RSSI", "AGE", "COMPANY", "ADAPTER"]
    # Strongest first, company by name.
    assert [line.split()[0] for line in lines[1:]] == [VICTRON, RUUVI, BTHOME]
    assert "Victron Energy" in lines[1] and "SmartShunt" in lines[1] and "-60" in lines[1]
    assert lines[1].rstrip().endswith("hci0")
    code, out, _ = await run(test_bus, "devices", "--company", "0x0499", "--json")
    records = json.loads(out)
    assert [r["address"] for r in records] == [RUUVI]
    assert records[0]["manufacturer_data"] == {str(0x0499): "0512fc"}
    code, out, _ = await run(test_bus, "devices", "--name", "Nothing*")
    assert (code, out) == (0, "No devices.\n")


@pytest.mark.parametrize("batching", [(), ("--no-batch",)], ids=["batched", "no-batch"])
async def test_watch_json_prints_one_object_per_line(
    test_bus: TestBus, scanner: ScannerApp, bluez: BluezSimulator, batching: tuple[str, ...]
) -> None:
    await scene(bluez, test_bus)
    proc = await start(test_bus, "watch", "--json", "-c", "0x02E1", "--count", "2", *batching)
    assert proc.stdout is not None
    first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
    assert first["event"] == "discovered" and first["address"] == VICTRON  # the replay
    await bluez.advertise("hci0", VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x10\x05"})
    second = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
    assert second["manufacturer_data"] == {str(0x02E1): "1005"}
    assert await asyncio.wait_for(proc.wait(), 20) == 0


async def test_watch_text_stops_cleanly_on_sigint(
    test_bus: TestBus, scanner: ScannerApp, bluez: BluezSimulator
) -> None:
    await scene(bluez, test_bus)
    proc = await start(test_bus, "watch", "--name", "Ruuvi*")
    assert proc.stdout is not None
    line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
    assert RUUVI in line and "Ruuvi Innovations" in line and "0499:0512fc" in line
    proc.send_signal(signal.SIGINT)
    assert await asyncio.wait_for(proc.wait(), 20) == 0


async def test_service_not_running_exits_2_with_a_clear_message(test_bus: TestBus) -> None:
    code, out, err = await run(test_bus, "devices")
    assert code == 2
    assert "com.victronenergy.ble.scanner is not running" in err
    assert out == ""


async def test_unreachable_bus_exits_1() -> None:
    code, _, err = await run(None, "--bus", "unix:path=/tmp/no-such-bus-here", "status")
    assert code == 1
    assert "cannot connect to the system bus" in err


async def test_usage_errors_exit_64(test_bus: TestBus) -> None:
    code, _, err = await run(test_bus, "devices", "--company", "apple")
    assert code == 64
    assert "not a company id" in err
    code, _, err = await run(test_bus, "frobnicate")
    assert code == 64
    code, _, err = await run(test_bus, "devices", "--address", "nonsense")
    assert code == 64 and "not a Bluetooth address" in err


async def test_help_texts_explain_commands_filters_and_exit_codes() -> None:
    code, out, _ = await run(None, "--help")
    assert code == 0
    for word in ("status", "devices", "watch", "exit codes:", "service is not running"):
        assert word in out
    code, out, _ = await run(None, "devices", "--help")
    assert code == 0
    for option in ("--address", "--company", "--name", "--min-rssi", "--json", "--max-age"):
        assert option in out
    code, out, _ = await run(None, "watch", "--help")
    assert "--all-reports" in out and "one JSON object per line" in out
