"""The BlueZ side of a benchmark: ``BluezSimulator`` in a process of its own.

Commands (JSON lines on stdin, see ``common``): ``wait_sessions``,
``warm`` (create the ingest devices), ``ingest`` (paced, timestamped reports),
``burst`` (timestamped reports as fast as it can), ``scene`` (the 200-device
fan-out scene), ``forget`` (remove every device) and ``populate`` (N new
devices), for the memory and snapshot scenarios.

``--mgmt-socket PATH`` also serves every report on the management-channel seam
at PATH (the kernel's frames), for the service's management ingest.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from typing import Any

from ble_scanner.testing.simulator import BluezSimulator, Report
from tests.bench.common import ADAPTER, BENCH_COMPANY, commands, reply, stamp

# The pacing loop wakes this often; each wake-up emits every report now due.
TICK = 0.002
# Write everything queued at least this often, so the socket never holds a burst
# large enough to skew latency (and the writer's queue stays short).
DRAIN_EVERY = 64

VICTRON, RUUVI, APPLE, NORDIC = 0x02E1, 0x0499, 0x004C, 0x0059
BTHOME_UUID = "0000fcd2-0000-1000-8000-00805f9b34fb"
ENV_SENSING_UUID = "0000181a-0000-1000-8000-00805f9b34fb"


def ingest_address(i: int) -> str:
    return f"C0:00:00:00:{i >> 8:02X}:{i & 0xFF:02X}"


def scene_address(i: int) -> str:
    return f"D0:00:00:00:{i >> 8:02X}:{i & 0xFF:02X}"


def populate_address(i: int) -> str:
    return f"E0:00:00:{i >> 16:02X}:{(i >> 8) & 0xFF:02X}:{i & 0xFF:02X}"


def scene_report(i: int, counter: int, rssi: int) -> Report:
    """Device ``i`` of the fan-out scene; ``counter`` is its sensor reading."""
    body = counter.to_bytes(4, "little") + bytes(14)
    kind = i % 5
    if kind == 0:
        return Report(scene_address(i), rssi=rssi, manufacturer_data={VICTRON: b"\x10" + body})
    if kind == 1:
        return Report(scene_address(i), rssi=rssi, manufacturer_data={RUUVI: b"\x05" + body})
    if kind == 2:
        return Report(
            scene_address(i), address_type="random", rssi=rssi, manufacturer_data={APPLE: body}
        )
    if kind == 3:
        return Report(
            scene_address(i),
            address_type="random",
            rssi=rssi,
            name=f"BTHome {i}",
            service_data={BTHOME_UUID: b"\x40" + body[:10]},
        )
    return Report(
        scene_address(i),
        rssi=rssi,
        name=f"Env {i}",
        manufacturer_data={NORDIC: body},
        service_uuids=(ENV_SENSING_UUID,),
    )


class SimProcess:
    def __init__(self, sim: BluezSimulator) -> None:
        self.sim = sim

    async def wait_sessions(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until exactly ``count`` clients hold a discovery session on the adapter."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.sim.sessions(ADAPTER)) == count:
                return True
            await asyncio.sleep(0.01)
        return False

    async def warm(self, devices: int) -> None:
        """Create the ingest devices, so the timed run sees PropertiesChanged only."""
        for i in range(devices):
            self.sim.advertise_report(
                ADAPTER,
                Report(ingest_address(i), manufacturer_data={BENCH_COMPANY: stamp(0, i, 0.0)}),
            )
        await self.sim.drain()

    async def ingest(self, rate: float, duration: float, run: int, devices: int) -> dict[str, Any]:
        """``rate`` timestamped reports per second for ``duration``, round robin over devices."""
        sim, advertise = self.sim, self.sim.advertise_report
        addresses = [ingest_address(i) for i in range(devices)]
        total = max(1, int(rate * duration))
        monotonic = time.monotonic
        t0 = monotonic()
        sent = 0
        while sent < total:
            due = min(total, int((monotonic() - t0) * rate) + 1)
            while sent < due:
                report = Report(
                    addresses[sent % devices],
                    manufacturer_data={BENCH_COMPANY: stamp(run, sent, monotonic())},
                )
                advertise(ADAPTER, report)
                sent += 1
                if sent % DRAIN_EVERY == 0:
                    await sim.drain()
            await sim.drain()
            await asyncio.sleep(TICK)
        elapsed = monotonic() - t0
        return {"sent": sent, "elapsed": elapsed, "achieved": sent / elapsed}

    async def burst(self, count: int, run: int, devices: int) -> dict[str, Any]:
        """``count`` timestamped reports, round robin over devices, as fast as it can emit.

        ``t0`` (``CLOCK_MONOTONIC``, as the stamps) lets the orchestrator time
        delivery from the first emission to the last arrival.
        """
        sim, advertise = self.sim, self.sim.advertise_report
        addresses = [ingest_address(i) for i in range(devices)]
        monotonic = time.monotonic
        t0 = monotonic()
        for seq in range(count):
            report = Report(
                addresses[seq % devices],
                manufacturer_data={BENCH_COMPANY: stamp(run, seq, monotonic())},
            )
            advertise(ADAPTER, report)
            if (seq + 1) % DRAIN_EVERY == 0:
                await sim.drain()
        await sim.drain()
        elapsed = monotonic() - t0
        return {"sent": count, "t0": t0, "elapsed": elapsed, "achieved": count / elapsed}

    async def scene(
        self, devices: int, period: float, change_every: int, duration: float, first: int = 0
    ) -> dict[str, Any]:
        """Every device reports each ``period``; its reading changes every ``change_every``.

        Readings start at ``first``: a run's readings differ from every earlier
        run's, so a program can count the distinct readings it got against
        ``counts`` (each device's reports) and know that it missed none.
        """
        rng = random.Random(7)
        sim, advertise = self.sim, self.sim.advertise_report
        base = [-45 - (i % 40) for i in range(devices)]
        # Devices are out of phase, as real advertisers are.
        phase = [rng.uniform(0, period) for _ in range(devices)]
        counts = [0] * devices
        reports = fed = 0
        # Scene kinds whose company id dbus-ble-sensors handles: Victron, Ruuvi, Nordic.
        fed_kinds = (0, 1, 4)
        t0 = time.monotonic()
        while (elapsed := time.monotonic() - t0) < duration:
            for i in range(devices):
                due = int((elapsed - phase[i]) / period) + 1 if elapsed >= phase[i] else 0
                while counts[i] < due:
                    n = counts[i]
                    rssi = base[i] + rng.randint(-3, 3)
                    advertise(ADAPTER, scene_report(i, first + n // change_every, rssi))
                    counts[i] = n + 1
                    reports += 1
                    fed += i % 5 in fed_kinds
            await sim.drain()
            await asyncio.sleep(0.01)
        return {"reports": reports, "fed": fed, "counts": counts, "elapsed": time.monotonic() - t0}

    async def forget(self) -> int:
        """Remove every device (InterfacesRemoved, as RemoveDevice does); how many there were.

        The snapshot compares the service's GetDiscoveredDevices with
        GetManagedObjects, and both must hold the same devices.
        """
        adapter = self.sim.adapter(ADAPTER)
        devices = list(adapter.devices.values())
        for dev in devices:
            adapter.remove_device(dev)
        await self.sim.drain()
        return len(devices)

    async def populate(self, start: int, count: int) -> None:
        """``count`` new devices with typical content (name, 20-byte payload, a UUID)."""
        for i in range(start, start + count):
            self.sim.advertise_report(
                ADAPTER,
                Report(
                    populate_address(i),
                    rssi=-40 - i % 50,
                    name=f"Sensor {i}",
                    manufacturer_data={VICTRON: i.to_bytes(4, "little") + bytes(16)},
                    service_uuids=(ENV_SENSING_UUID,) if i % 2 else (),
                ),
            )
            if i % DRAIN_EVERY == 0:
                await self.sim.drain()
        await self.sim.drain()


async def main() -> None:
    parser = argparse.ArgumentParser(description="the BlueZ side of a benchmark")
    parser.add_argument("--mgmt-socket", default=None, metavar="PATH", help="management seam")
    args = parser.parse_args()
    sim = BluezSimulator(
        bus_address=os.environ["DBUS_SYSTEM_BUS_ADDRESS"], mgmt_socket=args.mgmt_socket
    )
    await sim.start()
    await sim.add_adapter(ADAPTER, address="00:1A:7D:DA:71:10")
    proc = SimProcess(sim)
    reply(ready=True, pid=os.getpid())
    async for cmd in commands():
        name = cmd.pop("cmd")
        if name == "quit":
            break
        if name == "wait_sessions":
            reply(ok=await proc.wait_sessions(**cmd))
        elif name == "warm":
            await proc.warm(**cmd)
            reply(ok=True)
        elif name == "ingest":
            reply(**await proc.ingest(**cmd))
        elif name == "burst":
            reply(**await proc.burst(**cmd))
        elif name == "scene":
            reply(**await proc.scene(**cmd))
        elif name == "forget":
            reply(removed=await proc.forget())
        elif name == "populate":
            await proc.populate(**cmd)
            reply(ok=True)
        else:
            reply(error=f"unknown command {name}")
    await sim.stop()


if __name__ == "__main__":
    asyncio.run(main())
