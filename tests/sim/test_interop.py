"""Other D-Bus implementations read the simulator; the standalone process runs and stops."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest
from dbus_fast import Variant

from ble_scanner.const import BLUEZ_ADAPTER, BLUEZ_DEVICE, BLUEZ_SERVICE, OBJECT_MANAGER
from ble_scanner.testing.testbus import TestBus
from tests.helpers import assert_ok, call, wait_until
from tests.sim.conftest import ADAPTER, ADAPTER_PATH, adapter_call, get_all, set_filter

ADDR = "C0:11:22:33:44:55"


async def _run(*argv: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 10)
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def _scan_one_device(sim, bus) -> str:
    assert_ok(await set_filter(bus, Transport=Variant("s", "le")))
    assert_ok(await adapter_call(bus, "StartDiscovery"))
    await wait_until(lambda: sim.is_discovering(ADAPTER))
    await sim.advertise(ADAPTER, ADDR, rssi=-42, name="Tank", manufacturer_data={0x02E1: b"\x10"})
    path = sim.device_path(ADAPTER, ADDR)
    assert path is not None
    return path


@pytest.mark.skipif(not os.path.exists("/usr/bin/busctl"), reason="busctl not installed")
async def test_busctl_reads_tree_properties_and_introspection(sim, bus, test_bus: TestBus):
    path = await _scan_one_device(sim, bus)
    address = f"--address={test_bus.address}"
    tree = await _run("busctl", address, "--list", "tree", "org.bluez")
    assert {"/org/bluez", ADAPTER_PATH, path} <= set(tree.split())
    assert (
        await _run("busctl", address, "get-property", "org.bluez", path, BLUEZ_DEVICE, "RSSI")
    ).strip() == "n -42"
    assert (
        await _run(
            "busctl",
            address,
            "get-property",
            "org.bluez",
            ADAPTER_PATH,
            BLUEZ_ADAPTER,
            "Discovering",
        )
    ).strip() == "b true"
    introspection = await _run("busctl", address, "introspect", "org.bluez", path, BLUEZ_DEVICE)
    assert ".ManufacturerData" in introspection and "a{qv}" in introspection


@pytest.mark.skipif(not os.path.exists("/usr/bin/gdbus"), reason="gdbus not installed")
async def test_gdbus_calls_get_managed_objects(sim, bus, test_bus: TestBus):
    path = await _scan_one_device(sim, bus)
    out = await _run(
        "gdbus",
        "call",
        "--address",
        test_bus.address,
        "--dest",
        "org.bluez",
        "--object-path",
        "/",
        "--method",
        "org.freedesktop.DBus.ObjectManager.GetManagedObjects",
    )
    assert f"'{path}': " in out
    assert "'ManufacturerData': <{uint16 737: <[byte 0x10]>}>" in out
    assert "'RSSI': <int16 -42>" in out


async def test_standalone_process_serves_a_scene_and_exits_cleanly(test_bus: TestBus, bus):
    env = dict(
        os.environ,
        DBUS_SYSTEM_BUS_ADDRESS=test_bus.address,
        PYTHONPATH=os.pathsep.join(p for p in sys.path if p),
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ble_scanner.testing.simulator",
        "--scene",
        "demo",
        "--adapters",
        "hci0,hci1",
        "--period",
        "0.1",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        # A process start: seconds on a busy machine.
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert line.startswith("bluez simulator ready:") and "adapters=hci0,hci1" in line
        props = await get_all(bus, "/org/bluez/hci1", BLUEZ_ADAPTER)
        assert props["Powered"] is True
        monitors = await get_all(bus, "/org/bluez/hci0", "org.bluez.AdvertisementMonitorManager1")
        assert monitors["SupportedMonitorTypes"] == ["or_patterns"]
        # The scene's devices show up once someone scans.
        assert_ok(
            await set_filter(bus, Transport=Variant("s", "le"), DuplicateData=Variant("b", True))
        )
        assert_ok(await adapter_call(bus, "StartDiscovery"))

        async def victron_seen() -> bool:
            reply = await call(bus, BLUEZ_SERVICE, "/", OBJECT_MANAGER, "GetManagedObjects")
            for props in reply.body[0].values():
                data = props.get(BLUEZ_DEVICE, {}).get("ManufacturerData")
                if data is not None and 0x02E1 in data.value:
                    return data.value[0x02E1].value[0] == 0x10
            return False

        await wait_until(victron_seen, timeout=5, what="the Victron device of the scene")
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(proc.wait(), 5)
    assert rc == 0
