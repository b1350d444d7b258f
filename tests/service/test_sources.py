"""One device heard by two adapters, and time the service was not listening (real bus, simulator).

Runs on the suite's ingest (tests/ingest.py: the management seam or Device1).
Short settings keep it quick: devices advertise every 0.25 s, so each is lost
about 5.75 s after its last report (three intervals plus 5 s); the service's
LostTimeout is 15 s; each spell of not listening lasts ``DEAF``, twice a
device's lost time and less than LostTimeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest
import pytest_asyncio
from dbus_fast import Variant
from dbus_fast.aio import MessageBus

from ble_scanner.config import ScannerConfig
from ble_scanner.const import SCANNER_SERVICE
from ble_scanner.core.presence import INTERVAL_FACTOR, INTERVAL_SLACK
from ble_scanner.main import ScannerApp
from ble_scanner.testing.simulator import BluezSimulator
from ble_scanner.testing.testbus import TestBus
from ble_scanner.venus.const import BUSITEM_INTERFACE
from tests.conftest import start_scanner, wait_scanning
from tests.helpers import SignalRecorder, call, scanner_call, wait_until
from tests.service.conftest import get_devices, watch_broadcast

# Each scene waits on the service's timers for 10-20 s: run first (conftest.py).
pytestmark = pytest.mark.slow

PERIOD = 0.25
LOST_TIMEOUT = 15.0
# A device's lost time, with the radio's jitter on a loaded machine.
PRESENCE = (PERIOD + 0.25) * INTERVAL_FACTOR + INTERVAL_SLACK
DEAF = 12.0
SENSOR = "C0:11:22:33:44:01"
SENSORS = ("C0:11:22:33:44:11", "C0:11:22:33:44:12", "C0:11:22:33:44:13")
PAYLOAD = {0x02E1: b"\x10\x02\xff"}
# Nothing is to happen in it: a window, not a sync.
OBSERVATION = 3.0


@pytest_asyncio.fixture
async def service(test_bus: TestBus, bluez: BluezSimulator) -> AsyncIterator[ScannerApp]:
    """The service scanning hci0 and hci1, with LostTimeout 15 s."""
    await bluez.add_adapter("hci1", address="00:1A:7D:DA:71:11")
    app = await start_scanner(test_bus, replace(ScannerConfig(), lost_timeout=LOST_TIMEOUT))
    try:
        await wait_scanning(app, bluez, "hci0")
        await wait_scanning(app, bluez, "hci1")
        yield app
    finally:
        await app.stop()


async def record(bus: MessageBus, address: str) -> dict[str, Any] | None:
    found = (await get_devices(bus)).get(address)
    return None if found is None else {k: v.value for k, v in found.items()}


def listening(app: ScannerApp, adapter: str) -> bool:
    return any(a.name == adapter and a.listening for a in app.status().adapters)


async def learned(bus: MessageBus, addresses: tuple[str, ...]) -> dict[str, float]:
    """Waits until every device has an Interval; returns them."""
    intervals: dict[str, float] = {}

    async def all_learned() -> bool:
        devices = await get_devices(bus)
        for address in addresses:
            if address not in devices or "Interval" not in devices[address]:
                return False
            intervals[address] = devices[address]["Interval"].value
        return True

    await wait_until(all_learned, timeout=30.0, interval=0.2, what="intervals learned")
    return intervals


async def sensors_advertising(
    bluez: BluezSimulator, bus: MessageBus
) -> tuple[SignalRecorder, dict[str, float]]:
    """SENSORS advertising on hci0 until their intervals are learned; the broadcast
    recorded from before, and the intervals."""
    await watch_broadcast(bus)
    broadcast = SignalRecorder(bus, path="/")
    for address in SENSORS:
        bluez.add_advertiser("hci0", address, period=PERIOD, manufacturer_data=PAYLOAD)
    return broadcast, await learned(bus, SENSORS)


async def all_lost(broadcast: SignalRecorder, timeout: float) -> float:
    """Seconds until DeviceLost came for each of SENSORS."""
    start = time.monotonic()
    await broadcast.wait_for(
        lambda ms: set(SENSORS) <= {m.body[0] for m in ms if m.member == "DeviceLost"},
        timeout=timeout,
        what="DeviceLost for each",
    )
    return time.monotonic() - start


def lost(signals: SignalRecorder) -> list[str]:
    return [m.body[0] for m in signals.of("DeviceLost")]


def discovered(signals: SignalRecorder, address: str) -> list[dict[str, Any]]:
    return [
        {k: v.value for k, v in m.body[1].items()}
        for m in signals.of("DeviceDiscovered")
        if m.body[0] == address
    ]


# --- two adapters, one device -----------------------------------------------------------


async def test_two_adapters_hearing_one_device_tell_it_once_and_the_record_stays_on_the_stronger(
    service: ScannerApp, bluez: BluezSimulator, bus: MessageBus
) -> None:
    await watch_broadcast(bus)
    broadcast = SignalRecorder(bus, path="/")
    reply = await scanner_call(bus, "Subscribe", "a{sv}", [{"Replay": Variant("b", False)}])
    assert reply.error_name is None, reply.body
    subscription = SignalRecorder(bus, path=reply.body[0])
    bluez.add_shared_advertiser(
        SENSOR, {"hci1": -65, "hci0": -50}, period=PERIOD, manufacturer_data=PAYLOAD
    )

    async def on_hci0_heard_by_both() -> bool:
        found = await record(bus, SENSOR)
        return (
            found is not None
            and found["Adapter"] == "hci0"
            and found.get("Sources") == {"hci0": -50, "hci1": -65}
        )

    await wait_until(on_hci0_heard_by_both, timeout=10.0, interval=0.1, what="both sources")
    await asyncio.sleep(OBSERVATION)  # about 24 reports more: nothing is news
    found = await record(bus, SENSOR)
    assert found is not None
    assert (found["Adapter"], found["Rssi"]) == ("hci0", -50)
    assert found["Path"] == "/org/bluez/hci0/dev_C0_11_22_33_44_01"
    for signals in (broadcast, subscription):
        told = discovered(signals, SENSOR)
        # The first report, and the move to hci0 if hci1 reported first.
        assert 1 <= len(told) <= 2, told
        assert told[-1]["Adapter"] == "hci0"
    assert lost(broadcast) == []


async def test_when_the_stronger_adapter_stops_hearing_the_record_moves_and_nothing_is_lost(
    service: ScannerApp, bluez: BluezSimulator, bus: MessageBus
) -> None:
    await watch_broadcast(bus)
    broadcast = SignalRecorder(bus, path="/")
    bluez.add_shared_advertiser(
        SENSOR, {"hci0": -50, "hci1": -65}, period=PERIOD, manufacturer_data=PAYLOAD
    )
    await learned(bus, (SENSOR,))
    found = await record(bus, SENSOR)
    assert found is not None and found["Adapter"] == "hci0"
    bluez.set_silent("hci0")  # hci0's radio goes quiet; it still scans
    await wait_until(
        lambda: record_on(bus, "hci1"), timeout=5.0, interval=0.1, what="the record on hci1"
    )

    async def hci0_no_longer_a_source() -> bool:
        found = await record(bus, SENSOR)
        return found is not None and "Sources" not in found

    await wait_until(
        hci0_no_longer_a_source, timeout=PRESENCE + 3.0, interval=0.2, what="hci0 dropped"
    )
    found = await record(bus, SENSOR)
    assert found is not None
    assert (found["Adapter"], found["Rssi"]) == ("hci1", -65)
    assert found["Path"] == "/org/bluez/hci1/dev_C0_11_22_33_44_01"
    assert lost(broadcast) == []
    assert discovered(broadcast, SENSOR)[-1]["Adapter"] == "hci1"


async def record_on(bus: MessageBus, adapter: str) -> bool:
    found = await record(bus, SENSOR)
    return found is not None and found["Adapter"] == adapter


# --- not listening is not losing --------------------------------------------------------


async def pause(app: ScannerApp, bluez: BluezSimulator, bus: MessageBus) -> None:
    """A client pauses our scan for DEAF seconds (PauseScan), as before a connection."""
    reply = await scanner_call(bus, "PauseScan", "sd", ["hci0", DEAF])
    assert reply.error_name is None, reply.body
    await wait_until(lambda: not listening(app, "hci0"), what="paused")
    await wait_until(
        lambda: listening(app, "hci0"), timeout=DEAF + 5.0, interval=0.1, what="lease over"
    )


# bluetoothd slow to answer (a loaded GX): each call of a restart takes this long.
SLOW_CALL = 3.5
RESTART_CALLS = ("StopDiscovery", "SetDiscoveryFilter", "StartDiscovery")


async def restart(app: ScannerApp, bluez: BluezSimulator, bus: MessageBus) -> None:
    """The kernel stops the scan under us and bluetoothd answers slowly: the service's
    restart (StopDiscovery, SetDiscoveryFilter, StartDiscovery) takes about 10 s."""
    for member in RESTART_CALLS:
        bluez.set_reply_delay(member, SLOW_CALL, adapter="hci0")
    bluez.drop_discovering("hci0", keep_sessions=False)
    await wait_until(lambda: not listening(app, "hci0"), what="discovery stopped")
    await wait_until(
        lambda: listening(app, "hci0"), timeout=DEAF + 10.0, interval=0.1, what="re-armed"
    )
    for member in RESTART_CALLS:
        bluez.set_reply_delay(member, 0.0, adapter="hci0")


async def power_off(app: ScannerApp, bluez: BluezSimulator, bus: MessageBus) -> None:
    await bluez.set_powered("hci0", False)
    await wait_until(lambda: not listening(app, "hci0"), what="powered off")
    await asyncio.sleep(DEAF)  # the adapter stays off this long: the scene, not a sync
    await bluez.set_powered("hci0", True)
    await wait_until(lambda: listening(app, "hci0"), timeout=10.0, what="powered on")


async def bluetoothd_away(app: ScannerApp, bluez: BluezSimulator, bus: MessageBus) -> None:
    await bluez.stop_bluetoothd()
    await wait_until(lambda: not listening(app, "hci0"), what="bluetoothd gone")
    await asyncio.sleep(DEAF)  # bluetoothd stays away this long: the scene, not a sync
    await bluez.start_bluetoothd()
    await wait_until(lambda: listening(app, "hci0"), timeout=10.0, what="bluetoothd back")


Spell = Callable[[ScannerApp, BluezSimulator, MessageBus], Awaitable[None]]


@pytest.mark.parametrize("spell", [pause, restart, power_off, bluetoothd_away])
async def test_time_the_service_was_not_listening_loses_no_device_and_teaches_no_interval(
    spell: Spell, service: ScannerApp, bluez: BluezSimulator, bus: MessageBus
) -> None:
    broadcast, before = await sensors_advertising(bluez, bus)
    started = time.time()
    await spell(service, bluez, bus)
    listening_again = time.time()
    assert listening_again - started >= PRESENCE  # long enough to lose them, were it counted

    async def all_heard_again() -> bool:
        devices = await get_devices(bus)
        return all(a in devices and devices[a]["LastSeen"].value > listening_again for a in SENSORS)

    await wait_until(all_heard_again, timeout=10.0, interval=0.2, what="heard again")
    assert lost(broadcast) == []
    after = await learned(bus, SENSORS)
    for address in SENSORS:
        # A gap across the spell would have made the interval DEAF seconds long; a
        # busy machine's late timer may stretch a 0.25 s gap well past 0.25 s.
        assert after[address] < 3.0, (address, before[address], after[address])


async def test_devices_that_go_silent_while_the_service_listens_are_lost_on_time(
    service: ScannerApp, bluez: BluezSimulator, bus: MessageBus
) -> None:
    broadcast, _ = await sensors_advertising(bluez, bus)
    for address in SENSORS:
        bluez.remove_advertiser("hci0", address)
    took = await all_lost(broadcast, PRESENCE + 5.0)
    assert INTERVAL_SLACK <= took <= PRESENCE + 4.0, took  # the sweep, a busy machine
    assert listening(service, "hci0")


async def test_an_adapter_off_longer_than_the_lost_timeout_loses_its_devices_then_with_one_line(
    service: ScannerApp, bluez: BluezSimulator, bus: MessageBus, caplog: pytest.LogCaptureFixture
) -> None:
    broadcast, _ = await sensors_advertising(bluez, bus)
    with caplog.at_level(logging.WARNING, logger="ble_scanner.core.hub"):
        await bluez.set_powered("hci0", False)
        took = await all_lost(broadcast, LOST_TIMEOUT + 10.0)
    assert LOST_TIMEOUT <= took <= LOST_TIMEOUT + 5.0, took  # the sweep, a busy machine
    lines = [r.getMessage() for r in caplog.records if r.name == "ble_scanner.core.hub"]
    assert lines == ["hci0 has not listened for 15 s (LostTimeout): 3 device(s) it heard are lost"]
    status = await scanner_call(bus, "GetStatus")
    adapters = status.body[0]["Adapters"].value
    assert adapters["hci0"]["Listening"].value is False
    assert adapters["hci1"]["Listening"].value is True

    async def tree_says(adapter: str, value: int) -> bool:
        path = f"/Adapters/{adapter}/Listening"
        reply = await call(bus, SCANNER_SERVICE, path, BUSITEM_INTERFACE, "GetValue")
        return reply.error_name is None and reply.body == [Variant("i", value)]

    # The tree is refreshed once a second.
    await wait_until(lambda: tree_says("hci0", 0), interval=0.2, what="hci0 not listening")
    await wait_until(lambda: tree_says("hci1", 1), interval=0.2, what="hci1 listening")
