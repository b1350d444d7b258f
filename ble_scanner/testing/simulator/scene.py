"""A realistic radio neighbourhood for the demo and the benchmarks.

Payload layouts follow the public formats: Victron "instant readout"
(company 0x02E1: 0x10, model id, record type, IV, key byte, encrypted
record), Ruuvi RAWv2 (0x0499, data format 5), Apple iBeacon (0x004C 0x02
0x15), BTHome v2 (service data 0xFCD2); phones use resolvable private
addresses that rotate, so devices come and go. RSSI jitters around a base.
"""

from __future__ import annotations

import asyncio
import random
import struct
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ...tasks import cancel_and_wait
from .report import Report

if TYPE_CHECKING:
    from .simulator import BluezSimulator

VICTRON = 0x02E1
RUUVI = 0x0499
APPLE = 0x004C
BTHOME_UUID = "0000fcd2-0000-1000-8000-00805f9b34fb"
# Phones rotate their resolvable private address about every 15 min; the demo
# compresses that so the stream shows devices appearing and being lost.
PHONE_LIFETIME = (20.0, 60.0)
RSSI_JITTER_DB = 3.0


def _jitter(base: int, rng: random.Random) -> int:
    return max(-127, min(20, round(rng.gauss(base, RSSI_JITTER_DB))))


def victron_instant_readout(model_id: int, record_type: int, iv: int, key0: int) -> bytes:
    """0x10 prefix, model id (LE), record type, IV/nonce (LE), first key byte, ciphertext."""
    ciphertext = random.Random(iv ^ model_id).randbytes(12)
    return struct.pack("<BHBHB", 0x10, model_id, record_type, iv & 0xFFFF, key0) + ciphertext


def ruuvi_rawv2(temp_c: float, humidity: float, pressure_pa: int, seq: int, mac: bytes) -> bytes:
    """Data format 5: big-endian fields, battery 1600 mV + 11 bits, TX power 5 bits."""
    power = ((2980 - 1600) << 5) | ((4 + 40) // 2)
    return struct.pack(
        ">BhHHhhhHBH6s",
        5,
        round(temp_c / 0.005),
        round(humidity / 0.0025),
        pressure_pa - 50000,
        12,
        -8,
        1032,
        power,
        seq % 255,
        seq & 0xFFFF,
        mac,
    )


def ibeacon(uuid: bytes, major: int, minor: int, measured_power: int) -> bytes:
    return b"\x02\x15" + uuid + struct.pack(">HHb", major, minor, measured_power)


def bthome_v2(battery: int, temp_c: float, humidity: float) -> bytes:
    """Device info 0x40 (v2, unencrypted), then battery, temperature, humidity objects."""
    return struct.pack(
        "<BBBBhBH", 0x40, 0x01, battery, 0x02, round(temp_c * 100), 0x03, round(humidity * 100)
    )


def _bind(make: Callable[[random.Random], Report], rng: random.Random) -> Callable[[], Report]:
    def factory() -> Report:
        return make(rng)

    return factory


def _random_private_address(rng: random.Random) -> str:
    raw = bytearray(rng.randbytes(6))
    raw[0] = (raw[0] & 0x3F) | 0x40  # resolvable private address: top bits 01
    return ":".join(f"{b:02X}" for b in raw)


class Scene:
    """Registers advertisers on the simulator's radio and rotates phones until stopped."""

    def __init__(
        self, sim: BluezSimulator, adapters: Sequence[str], period: float, seed: int | None
    ) -> None:
        self.sim = sim
        self.adapters = list(adapters)
        self.period = period
        self.rng = random.Random(seed)
        self.phones: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    def _add(self, address: str, make: Callable[[random.Random], Report], period: float) -> None:
        for index, adapter in enumerate(self.adapters):
            rng = random.Random(self.rng.random() + index)
            self.sim.add_advertiser(adapter, address, period=period, factory=_bind(make, rng))

    def populate(self) -> None:
        start = time.time()
        iv = [0]

        def victron(rng: random.Random) -> Report:
            iv[0] += 1
            return Report.build(
                "C0:3B:8D:12:34:56",
                address_type="random",
                rssi=_jitter(-62, rng),
                name="SmartShunt HQ2207",
                manufacturer_data={VICTRON: victron_instant_readout(0xA389, 0x02, iv[0], 0x5C)},
                flags=0x06,
            )

        def ruuvi(rng: random.Random) -> Report:
            t = time.time() - start
            return Report.build(
                "E4:6A:9C:0B:11:22",
                address_type="random",
                rssi=_jitter(-74, rng),
                name="Ruuvi 1122",
                manufacturer_data={
                    RUUVI: ruuvi_rawv2(
                        21.5 + (t % 60) / 60, 45.0, 101325, int(t), b"\xe4\x6a\x9c\x0b\x11\x22"
                    )
                },
                flags=0x06,
            )

        def beacon(rng: random.Random) -> Report:
            return Report.build(
                "F0:0D:BE:AC:00:01",
                rssi=_jitter(-80, rng),
                manufacturer_data={APPLE: ibeacon(bytes(range(16)), 1, 42, -59)},
                flags=0x04,
                connectable=False,
            )

        def bthome(rng: random.Random) -> Report:
            return Report.build(
                "A4:C1:38:00:AB:CD",
                rssi=_jitter(-68, rng),
                name="ATC_00ABCD",
                service_data={BTHOME_UUID: bthome_v2(87, 19.8, 52.3)},
                flags=0x06,
            )

        self._add("C0:3B:8D:12:34:56", victron, self.period)
        self._add("E4:6A:9C:0B:11:22", ruuvi, self.period)
        self._add("F0:0D:BE:AC:00:01", beacon, self.period)
        self._add("A4:C1:38:00:AB:CD", bthome, self.period * 2)
        for _ in range(3):
            self._new_phone()

    def _new_phone(self) -> None:
        address = _random_private_address(self.rng)
        base = self.rng.randint(-95, -55)
        payload = b"\x10\x05" + self.rng.randbytes(5)

        def phone(rng: random.Random) -> Report:
            return Report.build(
                address,
                address_type="random",
                rssi=_jitter(base, rng),
                manufacturer_data={APPLE: payload},
                flags=0x1A,
                tx_power=12,
            )

        self._add(address, phone, self.period)
        self.phones[address] = time.monotonic() + self.rng.uniform(*PHONE_LIFETIME)

    async def _rotate(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for address, deadline in list(self.phones.items()):
                if deadline <= now:
                    del self.phones[address]
                    for adapter in self.adapters:
                        self.sim.remove_advertiser(adapter, address)
                    self._new_phone()

    def start(self) -> None:
        self.populate()
        self._task = asyncio.get_running_loop().create_task(self._rotate())

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)


SCENES = ("demo",)


def load_scene(
    sim: BluezSimulator,
    name: str = "demo",
    adapters: Sequence[str] = ("hci0",),
    period: float = 1.0,
    seed: int | None = None,
) -> Scene:
    """Start a named scene on ``adapters``; ``await scene.stop()`` ends the phone rotation."""
    if name not in SCENES:
        raise ValueError(f"unknown scene {name!r}; known: {', '.join(SCENES)}")
    scene = Scene(sim, adapters, period, seed)
    scene.start()
    return scene
