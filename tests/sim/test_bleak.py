"""bleak's own BlueZ backend against the simulator: the fidelity check that matters most."""

from __future__ import annotations

import pytest
from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData

from tests.helpers import wait_until
from tests.sim.conftest import ADAPTER

VICTRON = 0x02E1
BTHOME = "0000fcd2-0000-1000-8000-00805f9b34fb"
ADDRESS = "C0:11:22:33:44:55"


@pytest.mark.parametrize(
    ("le_only", "rssis"),
    [
        # Dual-mode adapter: bleak's Transport=le is not the adapter's scan type,
        # so discovery is filtered and every report carries its RSSI.
        (False, [-70, -71, -60]),
        # LE-only adapter (Venus: ControllerMode = le): Transport=le repeats the
        # default, discovery is unfiltered and -71 is within 8 dBm of -70.
        (True, [-70, -70, -60]),
    ],
    ids=["dual-mode", "le-only"],
)
async def test_bleak_scanner_sees_data_and_the_rssi_rule(sim, test_bus, le_only, rssis):
    seen: list[tuple[str, int, dict[int, bytes], dict[str, bytes]]] = []
    adapter = "hci1"
    await sim.add_adapter(adapter, address="00:1A:7D:DA:71:11", le_only=le_only)

    def on_advert(device: BLEDevice, adv: AdvertisementData) -> None:
        seen.append((device.address, adv.rssi, adv.manufacturer_data, adv.service_data))

    async with BleakScanner(on_advert, bluez={"adapter": adapter}):
        await wait_until(lambda: sim.is_discovering(adapter), what="bleak's discovery")
        # bleak asks for Transport=le, DuplicateData=false.
        assert list(sim.sessions(adapter).values()) == [{"Transport": "le", "DuplicateData": False}]
        for rssi, payload in ((-70, b"\x10\x00"), (-71, b"\x10\x01"), (-60, b"\x10\x02")):
            await sim.advertise(
                adapter,
                ADDRESS,
                rssi=rssi,
                manufacturer_data={VICTRON: payload},
                service_data={"fcd2": b"\x40\x01\x64"},
            )
        await wait_until(lambda: len(seen) >= 3, what="three callbacks")
    assert seen[0] == (ADDRESS, -70, {VICTRON: b"\x10\x00"}, {BTHOME: b"\x40\x01\x64"})
    assert [rssi for _, rssi, _, _ in seen[:3]] == rssis
    assert [mfg for _, _, mfg, _ in seen[1:3]] == [{VICTRON: b"\x10\x01"}, {VICTRON: b"\x10\x02"}]


async def test_bleak_discover_finds_radio_advertisers(sim, test_bus):
    sim.add_advertiser(ADAPTER, "D0:00:00:00:00:01", period=0.1, rssi=-50, name="Sensor A")
    sim.add_advertiser(
        ADAPTER, "D0:00:00:00:00:02", period=0.1, rssi=-80, manufacturer_data={0x0499: b"\x05"}
    )
    found = await BleakScanner.discover(timeout=0.6, bluez={"adapter": ADAPTER}, return_adv=True)
    assert set(found) == {"D0:00:00:00:00:01", "D0:00:00:00:00:02"}
    device, adv = found["D0:00:00:00:00:01"]
    assert (device.name, adv.rssi) == ("Sensor A", -50)
    assert found["D0:00:00:00:00:02"][1].manufacturer_data == {0x0499: b"\x05"}
    # bleak stopped and cleared its filter: no session or pre-set filter is left.
    await wait_until(lambda: not sim.is_discovering(ADAPTER), what="discovery stopped")
    assert sim.sessions(ADAPTER) == {} and sim.preset_filters(ADAPTER) == {}


async def test_bleak_passive_scan_uses_an_advertisement_monitor(sim, test_bus):
    from bleak.args.bluez import BlueZScannerArgs, OrPattern
    from bleak.assigned_numbers import AdvertisementDataType

    seen: list[tuple[str, dict[int, bytes]]] = []
    args = BlueZScannerArgs(
        adapter=ADAPTER,
        or_patterns=[OrPattern(0, AdvertisementDataType.MANUFACTURER_SPECIFIC_DATA, b"\xe1\x02")],
    )

    def on_advert(device: BLEDevice, adv: AdvertisementData) -> None:
        seen.append((device.address, adv.manufacturer_data))

    async with BleakScanner(on_advert, scanning_mode="passive", bluez=args):
        await wait_until(lambda: bool(sim.monitors(ADAPTER)), what="monitor registered")
        assert not sim.is_discovering(ADAPTER)
        assert await sim.advertise(ADAPTER, ADDRESS, manufacturer_data={VICTRON: b"\x10"})
        assert not await sim.advertise(ADAPTER, "C0:00:00:00:00:09", manufacturer_data={1: b"x"})
        await wait_until(lambda: bool(seen), what="passive callback")
    assert seen == [(ADDRESS, {VICTRON: b"\x10"})]
    await wait_until(lambda: not sim.monitors(ADAPTER), what="monitor unregistered")
