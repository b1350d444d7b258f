"""Other D-Bus implementations read the tree: busctl, dbus-send and velib-style dbus-python."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from typing import Any

import pytest

from ble_scanner.testing.testbus import TestBus
from tests.venus.conftest import SERVICE, TreeService

HERE = os.path.dirname(os.path.abspath(__file__))
SYSTEM_PYTHON = "/usr/bin/python3"


async def run(*argv: str, timeout: float = 10.0) -> str:
    """Run a tool without blocking the loop that serves the tree."""
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode == 0, err.decode()
    return out.decode()


@pytest.mark.skipif(shutil.which("busctl") is None, reason="busctl not installed")
async def test_busctl_reads_getitems_and_per_path_values(
    test_bus: TestBus, tree_service: TreeService
) -> None:
    address = f"--address={test_bus.address}"
    out = await run(
        "busctl",
        address,
        "--json=short",
        "call",
        SERVICE,
        "/",
        "com.victronenergy.BusItem",
        "GetItems",
    )
    reply = json.loads(out)
    assert reply["type"] == "a{sa{sv}}"
    items: dict[str, Any] = reply["data"][0]
    assert items["/ProductName"]["Value"] == {"type": "s", "data": "BLE scanner"}
    assert items["/Adapters/hci0/Powered"]["Value"] == {"type": "ai", "data": []}
    out = await run(
        "busctl", address, "call", SERVICE, "/ProductId", "com.victronenergy.BusItem", "GetText"
    )
    assert out.strip() == 's "0xA1FF"'


@pytest.mark.skipif(shutil.which("dbus-send") is None, reason="dbus-send not installed")
async def test_dbus_send_reads_values_and_invalid_as_empty_array(
    test_bus: TestBus, tree_service: TreeService
) -> None:
    async def get(path: str) -> str:
        return await run(
            "dbus-send",
            f"--bus={test_bus.address}",
            "--print-reply",
            f"--dest={SERVICE}",
            path,
            "com.victronenergy.BusItem.GetValue",
        )

    assert 'variant       string "dbus_ble_scanner.py"' in await get("/Mgmt/ProcessName")
    assert "variant       int32 20" in await get("/DeviceInstance")
    assert "variant       array [" in await get("/Adapters/hci0/Powered")


@pytest.mark.skipif(not os.path.exists(SYSTEM_PYTHON), reason="no system python")
async def test_velib_style_dbus_python_consumer_sees_what_dbus_spy_shows(
    test_bus: TestBus, tree_service: TreeService
) -> None:
    check = await asyncio.create_subprocess_exec(SYSTEM_PYTHON, "-c", "import dbus, gi")
    if await check.wait() != 0:
        pytest.skip("system python lacks dbus-python / PyGObject")
    process = await asyncio.create_subprocess_exec(
        SYSTEM_PYTHON,
        os.path.join(HERE, "velib_consumer.py"),
        test_bus.address,
        SERVICE,
        "/Stats/Reports",
        stdout=asyncio.subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert process.stdout is not None
    try:
        ready = json.loads(await asyncio.wait_for(process.stdout.readline(), 10))["ready"]
        expected = {
            p: {"Value": tree_service.tree[p], "Text": tree_service.tree.text(p)}
            for p in tree_service.tree
        }
        assert ready["items"] == expected
        assert ready["imported"] == expected
        assert ready["items"]["/Adapters/hci0/Powered"] == {"Value": None, "Text": "---"}
        assert ready["root"]["Mgmt/ProcessName"] == "dbus_ble_scanner.py"
        tree_service.tree["/Stats/Reports"] = 1234
        changed = json.loads(await asyncio.wait_for(process.stdout.readline(), 10))["changed"]
        assert changed == {"Value": 1234, "Text": "1234"}
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
