"""``python -m ble_scanner.testing.simulator``: the simulator as a process on the system bus.

Honours DBUS_SYSTEM_BUS_ADDRESS, prints one ready line on stdout once
``org.bluez`` is owned and the adapters exist, and exits 0 on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence

from .const import DEFAULT_TEMPORARY_TIMEOUT, SUPPORTED_VERSIONS
from .scene import SCENES, load_scene
from .simulator import BluezSimulator, SimulatorError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ble-scanner-sim", description=__doc__.splitlines()[0])
    p.add_argument("--scene", choices=[*SCENES, "none"], default="none", help="devices to simulate")
    p.add_argument("--adapters", default="hci0", help="comma-separated adapter names")
    p.add_argument("--no-experimental", action="store_true", help="no AdvertisementMonitorManager1")
    p.add_argument("--version", dest="bluez_version", choices=SUPPORTED_VERSIONS, default="5.72")
    p.add_argument("--temporary-timeout", type=float, default=DEFAULT_TEMPORARY_TIMEOUT)
    p.add_argument("--period", type=float, default=1.0, help="scene advertising period, s")
    p.add_argument("--bus-address", default=None, help="default: DBUS_SYSTEM_BUS_ADDRESS")
    p.add_argument(
        "--mgmt-socket",
        default=None,
        metavar="PATH",
        help="serve the kernel's management channel on a Unix SOCK_SEQPACKET socket here",
    )
    return p


async def _run(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    adapters = [a.strip() for a in args.adapters.split(",") if a.strip()]
    sim = BluezSimulator(
        bus_address=args.bus_address,
        version=args.bluez_version,
        experimental=not args.no_experimental,
        temporary_timeout=args.temporary_timeout,
        mgmt_socket=args.mgmt_socket,
    )
    try:
        await sim.start()
    except SimulatorError as exc:
        print(f"ble-scanner-sim: {exc}", file=sys.stderr)
        return 1
    scene = None
    try:
        for name in adapters:
            await sim.add_adapter(name)
        if args.scene != "none":
            scene = load_scene(sim, args.scene, adapters, period=args.period)
        print(
            f"bluez simulator ready: org.bluez={sim.unique_name} adapters={','.join(adapters)} "
            f"scene={args.scene} version={args.bluez_version}"
            + (f" mgmt={args.mgmt_socket}" if args.mgmt_socket else ""),
            flush=True,
        )
        await stop.wait()
    finally:
        if scene is not None:
            await scene.stop()
        await sim.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
