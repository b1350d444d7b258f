"""What a shipped client costs per delivered report: ``python -m tests.client.cost``.

The bench's own machinery (``tests.bench``: a private bus, the simulator
process, the service as Venus starts it) plays the fan-out ``counter`` scene
(200 devices, each reporting every 0.2 s with new content every time) while
one process of each kind listens to every device:

- ``raw``: the bench's minimal subscriber (``tests.bench.client``), the
  floor of one signal per report: dbus-fast's receive path and nothing else;
- ``raw-batched``: the same floor for a subscription with ``Batch`` and
  ``ChangedKeysOnly`` (it counts the items, and reads nothing of them);
- ``scanner``: ``ScannerClient.on_advertisement`` with a counting callback;
- ``bleak``: ``BleakScanner(callback, backend=ScannerServiceBackend)``;
- ``scanner-single`` / ``bleak-single``: the same, opted out of batching
  (one ``DeviceDiscovered`` per report, as a service without ``Batch`` sends);
- ``bleak-bluez``: the same bleak program on bleak's own BlueZ backend (its
  own discovery session on the simulator, BlueZ's signals), what a bleak
  program costs without the service.

Each process's CPU (utime + stime from ``/proc``) over the scene, divided by
the reports its callback got, is its µs per report. The service, the bus
daemon and the simulator share the machine, so compare kinds within a run.
Run as ``--client KIND`` the module is one of those listeners.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from typing import Any, Final

from tests.bench.common import commands, cpu_seconds, reply

KINDS: Final = (
    "raw",
    "raw-batched",
    "scanner",
    "bleak",
    "scanner-single",
    "bleak-single",
    "bleak-bluez",
)
PROFILE_DIR: Final = "CLIENT_COST_PROFILE"  # set: each listener writes KIND.prof there
SCENE: Final = {"devices": 200, "period": 0.2, "change_every": 1, "duration": 10.0}


async def _disconnect(bus: Any) -> None:
    bus.disconnect()


async def _listener(kind: str) -> None:
    """A client process: counts what its callback gets until told to stop."""
    from dbus_fast import BusType, Message, Variant
    from dbus_fast.aio import MessageBus

    from ble_scanner.client import ScannerClient
    from ble_scanner.client.records import BATCH_OPTIONS, Advertisement, Event
    from ble_scanner.const import SCANNER_INTERFACE, SCANNER_PATH, SCANNER_SERVICE

    got = signals = 0
    # Only the opt-out is spelled out, so that this runs on a client without the option.
    options: dict[str, Any] = {"batch": False} if kind.endswith("-single") else {}
    address = os.environ["DBUS_SYSTEM_BUS_ADDRESS"]

    def on_event(event: Event) -> None:
        nonlocal got
        if isinstance(event, Advertisement):
            got += 1

    def on_bleak(device: Any, data: Any) -> None:
        nonlocal got
        got += 1

    def on_signal(msg: Message) -> None:
        nonlocal got, signals
        if msg.member == "DevicesDiscovered" or msg.member == "DeviceDiscovered":
            signals += 1
            if kind == "raw-batched":
                got += len(msg.body[0])

    closer: Any = None
    profiler = cProfile.Profile() if os.environ.get(PROFILE_DIR) else None
    reply(ready=True, pid=os.getpid())
    async for cmd in commands():
        name = cmd.pop("cmd")
        if name == "listen":
            if kind == "raw-batched":
                bus = await MessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()
                bus.add_message_handler(on_signal)
                options = {key: Variant(sig, value) for key, (sig, value) in BATCH_OPTIONS.items()}
                await bus.call(
                    Message(
                        destination=SCANNER_SERVICE,
                        path=SCANNER_PATH,
                        interface=SCANNER_INTERFACE,
                        member="Subscribe",
                        signature="a{sv}",
                        body=[options],
                    )
                )
                closer = functools.partial(_disconnect, bus)
            elif kind.startswith("scanner"):
                client = ScannerClient(bus_address=address, **options)
                await client.connect()
                await client.on_advertisement(on_event)
                assert client._bus is not None
                client._bus.add_message_handler(on_signal)
                closer = client.close
            else:
                from bleak import BleakScanner

                from ble_scanner.client.bleak import ScannerServiceBackend

                if kind == "bleak-bluez":
                    scanner = BleakScanner(on_bleak)
                    await scanner.start()
                else:
                    scanner = BleakScanner(
                        on_bleak,
                        backend=ScannerServiceBackend,  # type: ignore[arg-type]
                        client_options={"bus_address": address, **options},
                    )
                    await scanner.start()
                    backend_client = scanner._backend._client  # type: ignore[attr-defined]
                    backend_client._bus.add_message_handler(on_signal)
                closer = scanner.stop
            reply(ok=True)
        elif name == "reset":
            got = signals = 0
            if profiler is not None:
                profiler.enable()
            reply(ok=True)
        elif name == "stats":
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(os.path.join(os.environ[PROFILE_DIR], f"{kind}.prof"))
            reply(callbacks=got, signals=signals)
        elif name == "quit":
            break
    if closer is not None:
        await closer()


async def _measure(repeats: int, kinds: Sequence[str], ingest: str) -> list[dict[str, float]]:
    from tests.bench.runner import FULL, Bench, Proc

    runs: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="client-cost-") as workdir:
        bench = Bench(FULL, workdir, ingests=(ingest,))
        async with bench.running():
            assert bench.sim is not None
            for _ in range(repeats):
                service = await bench.service(ingest=ingest)
                clients: dict[str, Proc] = {}
                try:
                    await bench.sessions(1)
                    for kind in kinds:
                        if kind == "raw":
                            proc = await bench.client("cost-raw")
                            await proc.ask("listen", mode="subscribe", filter={})
                        else:
                            argv = [sys.executable, "-m", "tests.client.cost", "--client", kind]
                            proc = await bench.spawn(f"cost-{kind}", argv)
                            await proc.ask("listen")
                        clients[kind] = proc
                    await asyncio.sleep(0.5)
                    for proc in clients.values():
                        await proc.ask("reset", run=bench.next_run())
                    before = {kind: cpu_seconds(p.pid) for kind, p in clients.items()}
                    played = await bench.sim.ask(
                        "scene", **SCENE, timeout=float(SCENE["duration"]) + 30
                    )
                    await asyncio.sleep(0.5)  # the last reports through
                    run: dict[str, float] = {"reports": played["reports"]}
                    for kind, proc in clients.items():
                        used = cpu_seconds(proc.pid) - before[kind]
                        stats = await proc.ask("stats")
                        got = stats["callbacks"]
                        run[kind] = used / max(1, got) * 1e6
                        run[f"{kind}/got"] = got
                        run[f"{kind}/signals"] = stats["signals"]
                    runs.append(run)
                    print(_line(run), flush=True)
                finally:
                    for proc in clients.values():
                        await proc.stop()
                    await service.stop()
                    await bench.sessions(0)
    return runs


def _line(run: dict[str, float]) -> str:
    parts = [f"{int(run['reports'])} reports"]
    parts += [
        f"{k} {run[k]:.1f} µs ({int(run[k + '/got'])} in {int(run[k + '/signals'])} signals)"
        for k in run
        if "/" not in k and k != "reports"
    ]
    return "; ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.client.cost", description=__doc__)
    parser.add_argument("--client", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--kind", action="append", choices=KINDS, help="default: every kind")
    parser.add_argument("--ingest", choices=("mgmt", "dbus"), default="mgmt")
    parser.add_argument("--profile", metavar="DIR", help="cProfile each listener into DIR")
    args = parser.parse_args(argv)
    if args.client:
        asyncio.run(_listener(args.client))
        return 0
    if args.profile:
        os.environ[PROFILE_DIR] = os.path.abspath(args.profile)
    runs = asyncio.run(_measure(args.repeat, args.kind or KINDS, args.ingest))
    print("median µs per delivered report (client process CPU):")
    for kind in args.kind or KINDS:
        print(f"  {kind:15s} {statistics.median(r[kind] for r in runs):6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
