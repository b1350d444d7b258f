"""The load budget on the real bus: the service sheds, tells, refuses AllReports, keeps specific
subscribers served, and undoes it all when the load falls.

The service reads a load average and a /proc/self/stat that the test writes, so
when it sheds is up to the test, not to whatever else runs on the machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from dbus_fast import Variant
from dbus_fast.aio import MessageBus

from ble_scanner.client import ScannerClient
from ble_scanner.const import ERROR_LIMITS_EXCEEDED, SCANNER_SERVICE
from ble_scanner.core.loadcap import LoadPolicy, ShedStep
from ble_scanner.core.loadguard import ProcSampler
from ble_scanner.main import ScannerApp
from ble_scanner.testing.simulator import BluezSimulator
from ble_scanner.testing.testbus import TestBus
from ble_scanner.venus.const import BUSITEM_INTERFACE
from tests import ingest
from tests.conftest import connect, disconnect
from tests.helpers import SignalRecorder, assert_error, assert_ok, call, scanner_call, wait_until

VICTRON = "C0:11:22:33:44:01"
STRANGER = "C0:11:22:33:44:09"
# A dual-core GX well past its watchdog's limit, and one at rest.
OVERLOADED = "7.10 6.80 4.20 9/300 4242\n"
AT_REST = "0.40 0.50 0.60 1/300 4242\n"
# Our own CPU time never grows in the fake stat: only the load average triggers.
STAT = "4242 (python3) S " + " ".join(["0"] * 40) + "\n"
# Four steps at one sample a second, on a busy machine.
SHED_TIMEOUT = 15.0


class FakeProc:
    def __init__(self, folder: Path) -> None:
        self.loadavg = folder / "loadavg"
        self.stat = folder / "stat"
        self.loadavg.write_text(AT_REST)
        self.stat.write_text(STAT)

    def load(self, text: str) -> None:
        self.loadavg.write_text(text)


@pytest.fixture
def proc_files(tmp_path: Path) -> FakeProc:
    return FakeProc(tmp_path)


@pytest_asyncio.fixture
async def shedding_scanner(
    test_bus: TestBus, bluez: BluezSimulator, proc_files: FakeProc
) -> AsyncIterator[ScannerApp]:
    app = ScannerApp(
        ingest.config(test_bus.address),
        bus_address=test_bus.address,
        load_sampler=ProcSampler(str(proc_files.loadavg), str(proc_files.stat)),
        # Steps as fast as the samples come, and a short calm to step down.
        load_policy=LoadPolicy(step_up_interval=0.0, step_down_hold=0.5),
    )
    assert await asyncio.wait_for(app.start(), 10) == 0
    try:
        await wait_until(lambda: bluez.is_discovering("hci0"), what="discovery on hci0")
        yield app
    finally:
        await app.stop()


async def load_shedding(bus: MessageBus) -> int:
    (status,) = assert_ok(await scanner_call(bus, "GetStatus"))
    return int(status["LoadShedding"].value)


async def subscribe(bus: MessageBus, **flt: Variant) -> str:
    (path,) = assert_ok(await scanner_call(bus, "Subscribe", "a{sv}", [flt]))
    return str(path)


async def test_overload_sheds_refuses_all_reports_and_still_serves_specific_subscribers(
    test_bus: TestBus,
    bluez: BluezSimulator,
    shedding_scanner: ScannerApp,
    proc_files: FakeProc,
) -> None:
    specific, other = await connect(test_bus), await connect(test_bus)
    try:
        recorder = SignalRecorder(specific, member="DeviceDiscovered")
        path = await subscribe(specific, Addresses=Variant("as", [VICTRON]))
        assert await load_shedding(other) == 0

        proc_files.load(OVERLOADED)

        async def fully_shed() -> bool:
            return await load_shedding(other) == ShedStep.REFUSE_ALL_REPORTS

        await wait_until(fully_shed, timeout=SHED_TIMEOUT, interval=0.1, what="step 4")

        refused = await scanner_call(
            other, "Subscribe", "a{sv}", [{"AllReports": Variant("b", True)}]
        )
        assert_error(refused, ERROR_LIMITS_EXCEEDED)
        assert "shedding load" in refused.body[0]
        await subscribe(other, ManufacturerIds=Variant("aq", [0x02E1]))  # the rest still works

        async def tree_says_step_4() -> bool:
            item = "/Stats/LoadShedding"
            value = await call(other, SCANNER_SERVICE, item, BUSITEM_INTERFACE, "GetValue")
            text = await call(other, SCANNER_SERVICE, item, BUSITEM_INTERFACE, "GetText")
            return assert_ok(value)[0].value == 4 and "AllReports refused" in assert_ok(text)[0]

        await wait_until(tree_says_step_4, interval=0.1, what="/Stats/LoadShedding 4")
        async with ScannerClient(bus_address=test_bus.address, service_timeout=5) as client:
            assert (await client.status()).load_shedding == 4

        for reading in range(3):
            await bluez.advertise("hci0", STRANGER, rssi=-50, manufacturer_data={0x004C: b"x"})
            await bluez.advertise(
                "hci0", VICTRON, rssi=-60, manufacturer_data={0x02E1: bytes([0x10, reading])}
            )

        def latest_reading_arrived() -> bool:
            for msg in recorder.of("DeviceDiscovered"):
                data = msg.body[1]["ManufacturerData"].value.get(0x02E1)
                if msg.path == path and msg.body[0] == VICTRON and data == bytes([0x10, 2]):
                    return True
            return False

        await wait_until(latest_reading_arrived, what="the subscriber's device while shedding")
        assert {m.body[0] for m in recorder.of("DeviceDiscovered")} == {VICTRON}

        proc_files.load(AT_REST)

        async def back_to_normal() -> bool:
            return await load_shedding(other) == ShedStep.NONE

        await wait_until(back_to_normal, timeout=SHED_TIMEOUT, interval=0.1, what="step 0")
        await subscribe(other, AllReports=Variant("b", True))
    finally:
        await disconnect(specific)
        await disconnect(other)
