"""Real third-party parsers decode what the proxy delivers: the bytes arrive unchanged."""

from __future__ import annotations

import asyncio

# Both are in the test extra: a missing one is a failed install, not a reason to skip.
import ruuvitag_sensor.decoder as ruuvi_decoder
from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from victron_ble.devices import detect_device_type
from victron_ble.scanner import BaseScanner

from ble_scanner.client import ScannerClient
from ble_scanner.client.bleak import ScannerServiceBackend
from ble_scanner.client.records import Advertisement
from ble_scanner.testing.simulator import BluezSimulator

SHUNT = "C0:11:22:33:44:21"
RUUVI = "CB:B8:33:4C:88:4F"
# victron-ble's own test vector (tests/test_battery_monitor.py): a SmartShunt
# instant readout and its advertisement key.
SHUNT_KEY = "aff4d0995b7d1e176c0c33ecb9e70dcd"
SHUNT_READOUT = bytes.fromhex("100289a302b040af925d09a4d89aa0128bdef48c6298a9")
# Ruuvi's data format 5 test vector (docs.ruuvi.com, "valid data").
RUUVI_DF5 = bytes.fromhex("0512FC5394C37C0004FFFC040CAC364200CDCBB8334C884F")


async def test_victron_ble_decodes_an_instant_readout_from_the_stream(
    client: ScannerClient, bluez: BluezSimulator
) -> None:
    async with client.subscribe(manufacturer_id=0x02E1) as stream:
        await bluez.advertise("hci0", SHUNT, rssi=-60, manufacturer_data={0x02E1: SHUNT_READOUT})
        adv = await asyncio.wait_for(anext(stream), 5)
    assert isinstance(adv, Advertisement)
    payload = adv.manufacturer_data[0x02E1]
    parser = detect_device_type(payload)
    assert parser is not None and parser.__name__ == "BatteryMonitor"
    reading = parser(SHUNT_KEY).parse(payload)
    assert reading.get_voltage() == 12.53
    assert reading.get_soc() == 50.0


class _ServiceScanner(BaseScanner):  # type: ignore[misc]
    """victron-ble's own scanner class with one line changed: the bleak backend."""

    def __init__(self) -> None:
        super().__init__()
        self._scanner = BleakScanner(
            detection_callback=self._detection_callback,
            backend=ScannerServiceBackend,  # type: ignore[arg-type]
        )
        self.readouts: asyncio.Queue[tuple[BLEDevice, bytes]] = asyncio.Queue()

    def callback(self, device: BLEDevice, data: bytes, advertisement: AdvertisementData) -> None:
        self.readouts.put_nowait((device, data))


async def test_victron_bles_own_scanner_runs_on_the_bleak_backend(
    client: ScannerClient, bluez: BluezSimulator
) -> None:
    scanner = _ServiceScanner()
    await scanner.start()
    try:
        await bluez.advertise("hci0", SHUNT, rssi=-60, manufacturer_data={0x02E1: SHUNT_READOUT})
        device, data = await asyncio.wait_for(scanner.readouts.get(), 5)
    finally:
        await scanner.stop()
    assert device.address == SHUNT
    assert device.details["path"] == bluez.device_path("hci0", SHUNT)
    assert detect_device_type(data)(SHUNT_KEY).parse(data).get_voltage() == 12.53  # type: ignore[misc]


async def test_ruuvi_format_5_decodes_from_the_snapshot(
    client: ScannerClient, bluez: BluezSimulator
) -> None:
    await bluez.advertise(
        "hci0", RUUVI, address_type="random", rssi=-70, manufacturer_data={0x0499: RUUVI_DF5}
    )
    async with client.subscribe(address=RUUVI) as stream:
        await asyncio.wait_for(anext(stream), 5)
    adv = (await client.devices(manufacturer_id=0x0499))[RUUVI]
    decoded = ruuvi_decoder.Df5Decoder().decode_data(adv.manufacturer_data[0x0499].hex())
    assert decoded is not None
    assert decoded["temperature"] == 24.3
    assert decoded["humidity"] == 53.49
    assert decoded["battery"] == 2977
    assert decoded["mac"] == RUUVI.replace(":", "").lower()
