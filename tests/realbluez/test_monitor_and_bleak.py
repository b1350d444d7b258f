"""Passive scanning through AdvertisementMonitorManager1, and bleak against the real BlueZ."""

from __future__ import annotations

import asyncio
import os
import time

import pytest
from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from dbus_fast.aio import MessageBus

from tests.helpers import assert_ok, call, wait_until
from tests.realbluez.backends import Advert, Backend
from tests.realbluez.bluez import (
    BLUEZ,
    DEVICE_TIMEOUT,
    MONITOR_MANAGER,
    READVERTISE_EVERY,
    discovering,
    manufacturer_is,
    remove_all_devices,
    wait_for_device,
)
from tests.realbluez.monitor import OrPatternsMonitor

VICTRON = 0x02E1
APP = "/rbz/monitors"


@pytest.fixture
async def scanner(bluez: Backend, bus: MessageBus) -> MessageBus:
    await remove_all_devices(bus)
    return bus


async def test_monitor_makes_matching_advertiser_appear_without_discovery(
    bluez: Backend, scanner: MessageBus
) -> None:
    monitor = OrPatternsMonitor([(0, 0xFF, VICTRON.to_bytes(2, "little"))])
    scanner.export(f"{APP}/m0", monitor)
    reply = await call(
        scanner, BLUEZ, bluez.scan_adapter_path, MONITOR_MANAGER, "RegisterMonitor", "o", [APP],
        timeout=15,
    )  # fmt: skip
    assert_ok(reply)
    try:
        await wait_until(
            lambda: bool(monitor.called("Activate")), timeout=10, what="Activate from bluetoothd"
        )
        data = os.urandom(6)
        path, props = await wait_for_device(
            bluez,
            scanner,
            Advert(manufacturer_data={VICTRON: data}),
            manufacturer_is(VICTRON, data),
        )
        assert not await discovering(scanner)
        assert props["Address"].value == bluez.advertiser_address
        await wait_until(
            lambda: path in monitor.called("DeviceFound"), timeout=10, what="DeviceFound(path)"
        )
    finally:
        reply = await call(
            scanner, BLUEZ, bluez.scan_adapter_path, MONITOR_MANAGER, "UnregisterMonitor", "o",
            [APP],
        )  # fmt: skip
        assert_ok(reply)
        scanner.unexport(f"{APP}/m0")


async def test_bleak_scanner_sees_the_advertiser(bluez: Backend, scanner: MessageBus) -> None:
    data = os.urandom(6)
    seen: list[tuple[BLEDevice, AdvertisementData]] = []
    found = asyncio.Event()

    def detected(device: BLEDevice, adv: AdvertisementData) -> None:
        if adv.manufacturer_data.get(VICTRON) == data:
            seen.append((device, adv))
            found.set()

    advert = Advert(manufacturer_data={VICTRON: data}, name="rbz-bleak")
    async with BleakScanner(detected, bluez={"adapter": bluez.scan_adapter}):
        deadline = time.monotonic() + DEVICE_TIMEOUT
        while not found.is_set():
            assert time.monotonic() < deadline, "bleak saw no matching advertisement"
            await bluez.advertise(advert)
            try:
                await asyncio.wait_for(found.wait(), READVERTISE_EVERY)
            except TimeoutError:
                pass
    device, adv = seen[0]
    assert device.address == bluez.advertiser_address
    assert adv.local_name == "rbz-bleak"
    assert device.details["path"].startswith("/org/bluez/hci0/dev_")
