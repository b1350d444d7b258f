"""A GLib/dbus-python consumer on the system python reads the service: snapshot and signals."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess

import pytest
from dbus_fast.aio import MessageBus

from ble_scanner.client.records import BATCH_OPTIONS
from ble_scanner.config import ScannerConfig
from ble_scanner.main import ScannerApp
from ble_scanner.testing.simulator import BluezSimulator
from ble_scanner.testing.testbus import TestBus, start_test_bus
from tests.client.conftest import ROOT, VICTRON, advertise_scene, start_service
from tests.helpers import call, wait_until

SYSTEM_PYTHON = "/usr/bin/python3"
CONSUMER = os.path.join(os.path.dirname(__file__), "glib_consumer.py")
LATE = "C0:11:22:33:44:0E"
# A bare interpreter importing a few modules; 30 s covers a loaded CI machine.
IMPORT_TIMEOUT = 30

pytestmark = pytest.mark.skipif(
    shutil.which(SYSTEM_PYTHON) is None, reason="needs the system python with dbus-python"
)


def test_the_glib_helper_and_the_records_import_without_dbus_fast() -> None:
    """A GLib program on the GX's system python (dbus-python, no dbus-fast) can use the client."""
    code = (
        "import sys\n"
        "import ble_scanner.client.records, ble_scanner.client.glib\n"
        "assert 'dbus_fast' not in sys.modules, sorted(sys.modules)\n"
        "print('ok')"
    )
    out = subprocess.run(
        [SYSTEM_PYTHON, "-c", code],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ROOT},
        capture_output=True,
        text=True,
        timeout=IMPORT_TIMEOUT,
    )
    assert out.returncode == 0 and out.stdout == "ok\n", out.stderr


async def start_consumer(test_bus: TestBus, count: int, *mode: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        SYSTEM_PYTHON,
        CONSUMER,
        str(count),
        "20",
        *mode,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": ROOT,
            "DBUS_SYSTEM_BUS_ADDRESS": test_bus.address,
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def read_json(proc: asyncio.subprocess.Process) -> dict[str, object]:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 20)
    if not line:
        assert proc.stderr is not None
        raise AssertionError((await proc.stderr.read()).decode())
    result: dict[str, object] = json.loads(line)
    return result


async def test_glib_consumer_gets_snapshot_replay_and_signals(
    test_bus: TestBus, scanner: ScannerApp, bluez: BluezSimulator
) -> None:
    await advertise_scene(bluez)
    await wait_until(lambda: len(scanner.hub.cache) == 3, what="the scene")  # type: ignore[union-attr]
    proc = await start_consumer(test_bus, count=2)
    snapshot = await read_json(proc)
    victron = snapshot["snapshot"][VICTRON]  # type: ignore[index]
    assert victron["manufacturer_data"] == {str(0x02E1): "1002a3"}
    assert len(snapshot["snapshot"]) == 3  # type: ignore[arg-type]
    assert await read_json(proc) == {"subscribed": True}
    replay = await read_json(proc)
    assert (replay["event"], replay["address"]) == ("discovered", VICTRON)
    await bluez.advertise("hci0", LATE, rssi=-50, manufacturer_data={0x02E1: b"\x10\x07"})
    live = await read_json(proc)
    assert (live["address"], live["manufacturer_data"]) == (LATE, {str(0x02E1): "1007"})
    assert await asyncio.wait_for(proc.wait(), 20) == 0, await proc.stderr.read()  # type: ignore[union-attr]


async def test_glib_consumer_survives_a_service_restart(
    test_bus: TestBus, bluez: BluezSimulator
) -> None:
    app = await start_service(test_bus)
    proc = await start_consumer(test_bus, count=2)
    try:
        assert (await read_json(proc))["snapshot"] == {}
        assert await read_json(proc) == {"subscribed": True}
        # Until the service scans, the simulated radio reports nothing.
        await wait_until(lambda: bluez.is_discovering("hci0"), what="discovery armed")
        await bluez.advertise("hci0", VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x01"})
        assert (await read_json(proc))["address"] == VICTRON
        await app.stop()
        app = await start_service(test_bus)
        await wait_until(lambda: bluez.is_discovering("hci0"), what="discovery re-armed")
        # Unchanged: swallowed. Changed: delivered on the new subscription.
        await bluez.advertise("hci0", VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x01"})
        await bluez.advertise("hci0", VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x02"})
        event = await read_json(proc)
        assert event["manufacturer_data"] == {str(0x02E1): "02"}
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        await stop(app, [proc])


async def subscribed(
    app: ScannerApp, bluez: BluezSimulator, procs: list[asyncio.subprocess.Process]
) -> None:
    """Each consumer's empty snapshot and "subscribed", then the service holding them all,
    scanning (until then the simulated radio reports nothing).

    A consumer says "subscribed" once the call is sent; the service has it when it answers.
    """
    for proc in procs:
        assert (await read_json(proc))["snapshot"] == {}
        assert await read_json(proc) == {"subscribed": True}
    await wait_until(
        lambda: app.hub is not None and len(app.hub.subscriptions) == len(procs),
        what="every consumer's subscription in the service",
    )
    await wait_until(lambda: bluez.is_discovering("hci0"), what="discovery armed")


async def stop(app: ScannerApp, procs: list[asyncio.subprocess.Process]) -> None:
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    await app.stop()


def brief(events: list[list[dict[str, object]]]) -> list[list[tuple[object, ...]]]:
    """What each consumer printed, short enough for an assertion's message."""
    return [[(e.get("event"), e.get("address"), e.get("manufacturer_data")) for e in got]
            for got in events]  # fmt: skip


async def test_glib_consumer_batched_gets_what_one_per_report_does(
    test_bus: TestBus, bluez: BluezSimulator
) -> None:
    """Batched with changed keys only (the default) against ``batch=False``: the same events,
    a device lost and heard again included."""
    app = await start_service(test_bus, ScannerConfig(lost_timeout=1.0))
    procs = [await start_consumer(test_bus, 6), await start_consumer(test_bus, 6, "single")]
    try:
        await subscribed(app, bluez, procs)
        await bluez.advertise("hci0", VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x01"})
        await bluez.advertise("hci0", VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x02"})
        await bluez.advertise(
            "hci0", LATE, rssi=-50, name="late", manufacturer_data={0x02E1: b"\x07"}
        )
        events = [[await read_json(proc) for _ in range(5)] for proc in procs]
        lost = [[e for e in got if e.get("event") == "lost"] for got in events]
        assert [len(each) for each in lost] == [2, 2], brief(events)
        await bluez.advertise("hci0", VICTRON, rssi=-55, manufacturer_data={0x02E1: b"\x03"})
        for proc, got in zip(procs, events, strict=True):
            got.append(await read_json(proc))
            assert await asyncio.wait_for(proc.wait(), 20) == 0, brief(events)
        batched, single = events
        for address in (VICTRON, LATE):
            assert [e for e in batched if e["address"] == address] == [
                e for e in single if e["address"] == address
            ]
        assert batched[-1]["manufacturer_data"] == {str(0x02E1): "03"}
        signals = [(await read_json(proc))["signals"] for proc in procs]
        assert isinstance(signals[0], dict) and isinstance(signals[1], dict)
        assert signals[0].get("DevicesDiscovered", 0) > 0 and "DeviceDiscovered" not in signals[0]
        assert signals[1].get("DeviceDiscovered", 0) > 0 and "DevicesDiscovered" not in signals[1]
    finally:
        await stop(app, procs)


async def test_glib_consumer_falls_back_when_the_service_refuses_batch(
    test_bus: TestBus, bluez: BluezSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service older than ``Batch`` answers InvalidArgs: one signal per report instead."""
    from ble_scanner.core import filters

    older = {k: v for k, v in filters.SUBSCRIPTION_KEYS.items() if k not in BATCH_OPTIONS}
    monkeypatch.setattr(filters, "SUBSCRIPTION_KEYS", older)
    app = await start_service(test_bus)
    proc = await start_consumer(test_bus, 1)
    try:
        await subscribed(app, bluez, [proc])  # made again without Batch
        await bluez.advertise("hci0", VICTRON, rssi=-60, manufacturer_data={0x02E1: b"\x01"})
        assert (await read_json(proc))["manufacturer_data"] == {str(0x02E1): "01"}
        assert (await read_json(proc))["signals"] == {"DeviceDiscovered": 1}
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    finally:
        await stop(app, [proc])


DRIVER = os.path.join(os.path.dirname(__file__), "glib_driver.py")
DRIVER_NAME = "com.victronenergy.test.driver"
DRIVER_POLICY = f"""<!DOCTYPE busconfig PUBLIC
 "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy context="default">
    <allow own="{DRIVER_NAME}"/><allow send_destination="{DRIVER_NAME}"/>
  </policy>
</busconfig>
"""


async def test_a_driver_using_the_glib_client_still_answers_its_own_calls() -> None:
    """The client's message filter leaves every message to the program's own objects.

    dbus-python takes a filter's ``None`` as "handled": a client filter returning it
    kept a velib driver on the same connection from ever seeing a method call.
    """
    bus_ = start_test_bus({"driver.conf": DRIVER_POLICY})
    proc = await asyncio.create_subprocess_exec(
        SYSTEM_PYTHON,
        DRIVER,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": ROOT, "DBUS_SYSTEM_BUS_ADDRESS": bus_.address},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), IMPORT_TIMEOUT) == b"ready\n"
        caller = await MessageBus(bus_address=bus_.address).connect()
        try:
            reply = await call(
                caller, DRIVER_NAME, "/Driver", "com.victronenergy.BusItem", "GetText"
            )
            assert reply.body == ["alive"]
        finally:
            caller.disconnect()
    finally:
        proc.kill()
        await proc.wait()
        bus_.stop()
