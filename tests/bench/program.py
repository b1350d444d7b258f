"""Programs written as users write them, one per process, for the fan-out scene.

Each wants one slice of the scene (``SLICES``: the same five as the raw
subscribers of ``runner.FANOUT_SLICES``) and keeps the latest advertisement of
each device it wants, nothing more:

- ``bleak``: a ``BleakScanner`` with a detection callback that picks its
  devices, as bleak programs do (bleak's API gives a backend nothing to filter
  on but service UUIDs). ``backend`` "bluez" is bleak's own BlueZ backend, its
  own discovery session; "service" is the same program with one argument
  added, ``backend=ScannerServiceBackend`` (docs/client.md).
- ``scannerclient``: ``ScannerClient().subscribe(<the slice>)``, read with
  ``async for`` as docs/client.md's first example does.

The five programs on BlueZ's own signals, the baseline of ``scannerclient``,
are ``client.py``'s ``bluez`` mode. Besides keeping its devices each program
adds (address, payload) to a set: the bench's check that it got every reading
of the devices it wants (each run's readings are new, ``simproc.scene``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable
from typing import Any, Final

from tests.bench.common import reply, serve

VICTRON, RUUVI = 0x02E1, 0x0499
ESS_UUID: Final = "0000181a-0000-1000-8000-00805f9b34fb"
BTHOME_UUID: Final = "0000fcd2-0000-1000-8000-00805f9b34fb"
ADDRESSES: Final = frozenset(f"D0:00:00:00:00:{i:02X}" for i in range(0, 200, 20))

# What each program wants, as its bleak callback tests it ...
BLEAK_WANTS: Final[tuple[Callable[[Any, Any], bool], ...]] = (
    lambda device, adv: VICTRON in adv.manufacturer_data,
    lambda device, adv: RUUVI in adv.manufacturer_data,
    lambda device, adv: device.address in ADDRESSES,
    lambda device, adv: ESS_UUID in adv.service_uuids,
    lambda device, adv: BTHOME_UUID in adv.service_data,
)
# ... and as it asks ScannerClient for it.
CLIENT_FILTERS: Final[tuple[dict[str, Any], ...]] = (
    {"manufacturer_id": VICTRON},
    {"manufacturer_id": RUUVI},
    {"addresses": sorted(ADDRESSES)},
    {"service_uuid": ESS_UUID},
    {"service_data_uuid": BTHOME_UUID},
)


class Program:
    def __init__(self) -> None:
        self.kept: dict[str, Any] = {}  # address → the latest advertisement (the program's job)
        self.callbacks = 0
        self.readings: set[tuple[str, bytes]] = set()  # the bench's check
        self._stop: contextlib.AsyncExitStack | None = None
        self._task: asyncio.Task[None] | None = None

    def keep(self, address: str, adv: Any) -> None:
        self.callbacks += 1
        self.kept[address] = adv
        data = adv.manufacturer_data or adv.service_data
        if data:
            self.readings.add((address, next(iter(data.values()))))

    async def bleak(self, backend: str, slice_: int) -> None:
        from bleak import BleakScanner

        wants = BLEAK_WANTS[slice_]

        def callback(device: Any, adv: Any) -> None:
            if wants(device, adv):
                self.keep(device.address, adv)

        options: dict[str, Any] = {}
        if backend == "service":
            from ble_scanner.client.bleak import ScannerServiceBackend

            options["backend"] = ScannerServiceBackend
        elif backend != "bluez":
            raise ValueError(backend)
        self._stop = contextlib.AsyncExitStack()
        await self._stop.enter_async_context(BleakScanner(callback, **options))

    async def scannerclient(self, slice_: int) -> None:
        from ble_scanner.client import DeviceLost, ScannerClient

        self._stop = contextlib.AsyncExitStack()
        client = await self._stop.enter_async_context(ScannerClient())
        stream = await self._stop.enter_async_context(client.subscribe(**CLIENT_FILTERS[slice_]))
        started = asyncio.get_running_loop().create_future()

        async def read() -> None:
            started.set_result(None)
            async for event in stream:
                if not isinstance(event, DeviceLost):
                    self.keep(event.address, event)

        self._task = asyncio.create_task(read())
        await started


async def main() -> None:
    # SIGTERM (the orchestrator's stop) ends the program by cancelling it, so
    # that a profile (``launch.py --profile``) is written.
    current = asyncio.current_task()
    assert current is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, current.cancel)
    program = Program()

    async def handle(name: str, cmd: dict[str, Any]) -> dict[str, Any]:
        if name == "listen":
            if cmd["kind"] == "bleak":
                await program.bleak(cmd["backend"], cmd["slice"])
            elif cmd["kind"] == "scannerclient":
                await program.scannerclient(cmd["slice"])
            else:
                raise ValueError(cmd["kind"])
            return {"ok": True}
        if name == "reset":
            program.callbacks = 0
            program.readings = set()
            return {"ok": True}
        if name == "stats":
            return {
                "callbacks": program.callbacks,
                "signals": 0,
                "readings": len(program.readings),
                "kept": len(program.kept),
            }
        raise ValueError(f"unknown command {name}")

    reply(ready=True, pid=os.getpid())
    await serve(handle)


if __name__ == "__main__":
    asyncio.run(main())
