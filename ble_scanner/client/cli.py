"""``ble-scanner``: look at what the BLE scanner service sees, from a shell.

A client like any other (``ble_scanner.client``); it never touches BlueZ.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, NoReturn, TextIO

from .. import __version__
from ..bus.calls import quiet_after_loss
from ..const import MAX_COMPANY_ID, SCANNER_SERVICE
from .errors import (
    AccessDeniedError,
    BusUnreachableError,
    ScannerError,
    ServiceNotRunningError,
    UntrustedServiceError,
)
from .proxy import CALL_TIMEOUT, ScannerClient
from .records import Advertisement, DeviceLost, Event, make_filter

# Exit codes scripts can rely on (documented in --help and docs/client.md).
EXIT_OK: Final = 0
EXIT_BUS_UNREACHABLE: Final = 1  # also when the bus is lost mid-command (BusLostError)
EXIT_SERVICE_NOT_RUNNING: Final = 2
EXIT_UNTRUSTED: Final = 3
EXIT_SERVICE_ERROR: Final = 4  # the service refused the request or did not answer
EXIT_USAGE: Final = 64  # sysexits.h EX_USAGE
EXIT_DENIED: Final = 77  # sysexits.h EX_NOPERM: steering needs root or the steer group

# Seconds in the units ``age_text`` shows.
_MINUTE: Final = 60
_HOUR: Final = 3600
# The device table's columns; the numeric ones are right-aligned.
_COLUMNS: Final = ("ADDRESS", "NAME", "RSSI", "AGE", "COMPANY", "ADAPTER")
_NUMBER_COLUMNS: Final = frozenset({_COLUMNS.index("RSSI"), _COLUMNS.index("AGE")})

# Company identifiers people meet on a Venus device (Bluetooth SIG assigned numbers).
COMPANIES: Final = {
    0x0006: "Microsoft",
    0x004C: "Apple",
    0x0059: "Nordic Semiconductor",
    0x0075: "Samsung",
    0x0087: "Garmin",
    0x00E0: "Google",
    0x0131: "Cypress",
    0x0157: "Anhui Huami",
    0x02E1: "Victron Energy",
    0x038F: "Xiaomi",
    0x0499: "Ruuvi Innovations",
    0x0822: "adafruit",
    0x0969: "Woan (SwitchBot)",
    0x09AC: "Mopeka",
    0x0A12: "Renogy",
}

_EXIT_CODES_HELP: Final = f"""\
exit codes:
  {EXIT_OK:<3} success (watch: stopped by Ctrl-C, --count or --duration)
  {EXIT_BUS_UNREACHABLE:<3} the system bus cannot be reached, or was lost (dbus-daemon stopped)
  {EXIT_SERVICE_NOT_RUNNING:<3} the scanner service is not running
  {EXIT_UNTRUSTED:<3} the service's name is held by a process that is neither root nor you
  {EXIT_SERVICE_ERROR:<3} the service refused the request (e.g. a bad filter) or did not answer
  {EXIT_USAGE:<3} usage error
  {EXIT_DENIED:<3} not allowed: pause and active-scan need root or the service's steer group

The bus is the system bus; DBUS_SYSTEM_BUS_ADDRESS (or --bus) points elsewhere."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _company(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a company id: {text!r} (e.g. 0x02E1)") from None
    if not 0 <= value <= MAX_COMPANY_ID:
        raise argparse.ArgumentTypeError(f"company id out of range (0..0xFFFF): {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ble-scanner",
        description=f"Show what the BLE scanner service ({SCANNER_SERVICE}) sees.",
        epilog=_EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--bus", metavar="ADDRESS", help="D-Bus address (default: system bus)")
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=CALL_TIMEOUT,
        metavar="S",
        help=f"per call (default {CALL_TIMEOUT:g})",
    )
    parser.add_argument(
        "--wait",
        type=_seconds,
        default=0.0,
        metavar="S",
        help="wait this long for the service to start (default: fail at once)",
    )

    filters = _Parser(add_help=False)
    group = filters.add_argument_group("filters (AND across options, OR within a repeated one)")
    group.add_argument(
        "-a", "--address", action="append", metavar="ADDR", help="device address (repeatable)"
    )
    group.add_argument(
        "-c",
        "--company",
        action="append",
        type=_company,
        metavar="ID",
        help="manufacturer data company id, e.g. 0x02E1 for Victron (repeatable)",
    )
    group.add_argument(
        "-u", "--service-uuid", action="append", metavar="UUID", help="advertised service UUID"
    )
    group.add_argument(
        "--service-data-uuid", action="append", metavar="UUID", help="service data UUID, e.g. fcd2"
    )
    group.add_argument(
        "-n", "--name", action="append", metavar="GLOB", help="device name, shell glob: 'Ruuvi*'"
    )
    group.add_argument("--min-rssi", type=int, metavar="DBM", help="at least this strong, e.g. -80")

    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser(
        "status",
        help="the service, its adapters and counters",
        description="Show the service's version, its adapters and what they are doing.",
        epilog=_EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).add_argument("--json", action="store_true", help="one JSON object")

    devices = commands.add_parser(
        "devices",
        parents=[filters],
        help="the devices present now",
        description="List the devices present now: address, name, RSSI, age of the last "
        "report, company and adapter.",
        epilog=_EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    devices.add_argument("--max-age", type=_seconds, metavar="S", help="heard in the last S s")
    devices.add_argument(
        "--sort",
        choices=("rssi", "address", "name", "age"),
        default="rssi",
        help="row order (default: strongest first)",
    )
    devices.add_argument("--json", action="store_true", help="a JSON array of records")

    watch = commands.add_parser(
        "watch",
        parents=[filters],
        help="follow advertisements live",
        description="Print the devices present, then every report the service sends, "
        "until Ctrl-C. A report is sent when content changes, RSSI moves by the delta, "
        "or the keep-alive passes.",
        epilog=_EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    watch.add_argument("--json", action="store_true", help="one JSON object per line")
    watch.add_argument("--all-reports", action="store_true", help="every report, unthrottled")
    watch.add_argument("--rssi-delta", type=int, metavar="DBM", help="RSSI change worth a line")
    watch.add_argument(
        "--keep-alive", type=_seconds, metavar="S", help="repeat unchanged devices every S s"
    )
    watch.add_argument(
        "--no-batch",
        action="store_true",
        help="one signal per report, full records (for a service that cannot batch, the "
        "client falls back by itself)",
    )
    watch.add_argument("--count", type=int, metavar="N", help="stop after N events")
    watch.add_argument("--duration", type=_seconds, metavar="S", help="stop after S seconds")

    pause = commands.add_parser(
        "pause",
        help="stop the service's discovery on an adapter for a while (root or steer group)",
        description="Have the service stop its discovery on ADAPTER for SECONDS (at most 60), "
        "e.g. while another program connects to a device; Ctrl-C ends the pause early. "
        "Needs root or membership of the service's steer group (SteerGroup, default bluetooth).",
        epilog=_EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pause.add_argument("adapter", metavar="ADAPTER", help="e.g. hci0")
    pause.add_argument("seconds", type=_seconds, metavar="SECONDS")
    active = commands.add_parser(
        "active-scan",
        help="an active-scan window for a while (root or steer group)",
        description="Have the service scan actively (scan requests, names from scan "
        "responses) for SECONDS (at most 300); Ctrl-C ends the window early. Needs root or "
        "membership of the service's steer group (SteerGroup, default bluetooth).",
        epilog=_EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    active.add_argument("seconds", type=_seconds, metavar="SECONDS")
    active.add_argument(
        "--adapter", default="", metavar="HCI", help="one adapter (default: every adapter)"
    )
    return parser


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for option, key in (
        ("address", "addresses"),
        ("company", "manufacturer_ids"),
        ("service_uuid", "service_uuids"),
        ("service_data_uuid", "service_data_uuids"),
        ("name", "local_names"),
    ):
        value = getattr(args, option, None)
        if value:
            out[key] = value
    if getattr(args, "min_rssi", None) is not None:
        out["min_rssi"] = args.min_rssi
    return out


def company_text(adv: Advertisement) -> str:
    ids = list(adv.manufacturer_data)
    if not ids:
        return ""
    first = COMPANIES.get(ids[0], f"0x{ids[0]:04X}")
    return first + (f" +{len(ids) - 1}" if len(ids) > 1 else "")


def age_text(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < _MINUTE:
        return f"{seconds:.0f}s"
    if seconds < _HOUR:
        return f"{seconds / _MINUTE:.0f}m"
    return f"{seconds / _HOUR:.1f}h"


def table(rows: list[list[str]], right: frozenset[int] = frozenset()) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def devices_table(devices: list[Advertisement], now: float) -> str:
    rows = [list(_COLUMNS)]
    for adv in devices:
        rows.append(
            [
                adv.address,
                adv.name or "",
                "" if adv.rssi is None else str(adv.rssi),
                age_text(now - adv.last_seen),
                company_text(adv),
                adv.adapter,
            ]
        )
    return table(rows, right=_NUMBER_COLUMNS)


def event_line(event: Event) -> str:
    stamp = time.strftime("%H:%M:%S")
    if isinstance(event, DeviceLost):
        return f"{stamp}  {event.address}  lost"
    parts = [stamp, event.address, "    " if event.rssi is None else f"{event.rssi:4d}"]
    parts.append(event.name or "-")
    company = company_text(event)
    if company:
        parts.append(company)
    parts += [f"{k:04x}:{v.hex()}" for k, v in event.manufacturer_data.items()]
    parts += [
        f"{k[4:8] if k.endswith('-0000-1000-8000-00805f9b34fb') else k}:{v.hex()}"
        for k, v in event.service_data.items()
    ]
    return "  ".join(parts)


def _sort_key(order: str, now: float) -> Callable[[Advertisement], Any]:
    if order == "address":
        return lambda a: a.address
    if order == "name":
        return lambda a: (a.name is None, a.name or "", a.address)
    if order == "age":
        return lambda a: (now - a.last_seen, a.address)
    return lambda a: (a.rssi is None, -(a.rssi or 0), a.address)


async def _status(client: ScannerClient, args: argparse.Namespace, out: TextIO) -> int:
    status = await client.status()
    if args.json:
        out.write(json.dumps(status.as_dict(), sort_keys=True) + "\n")
        return EXIT_OK
    yes = {True: "yes", False: "no"}
    shedding = f"step {status.load_shedding} of 4" if status.load_shedding else "off"
    out.write(
        f"Service        {SCANNER_SERVICE} {status.version} ({client.service_owner})\n"
        f"BlueZ          {'present' if status.bluez_present else 'not running'}\n"
        f"Scanning       {yes[status.scanning]}\n"
        f"Devices        {status.devices}\n"
        f"Subscriptions  {status.subscriptions}\n"
        f"Reports        {status.reports}\n"
        f"Load shedding  {shedding}\n"
    )
    if status.adapters:
        rows = [
            ["ADAPTER", "ADDRESS", "POWERED", "DISCOVERING", "OURS", "LISTENING", "INGEST", "STATE"]
        ]
        for a in status.adapters.values():
            rows.append(
                [
                    a.name,
                    a.address,
                    yes[a.powered],
                    yes[a.discovering],
                    yes[a.session],
                    "?" if a.listening is None else yes[a.listening],
                    a.ingest,
                    a.state,
                ]
            )
        out.write("\n" + table(rows) + "\n")
    else:
        out.write("\nNo adapters.\n")
    return EXIT_OK


async def _devices(client: ScannerClient, args: argparse.Namespace, out: TextIO) -> int:
    found = await client.devices(max_age=args.max_age, **_filters(args))
    now = time.time()
    ordered = sorted(found.values(), key=_sort_key(args.sort, now))
    if args.json:
        out.write(json.dumps([a.as_dict() for a in ordered], indent=1) + "\n")
    elif ordered:
        out.write(devices_table(ordered, now) + "\n")
    else:
        out.write("No devices.\n")
    return EXIT_OK


def _stop_event(duration: float | None) -> asyncio.Event:
    """Set on Ctrl-C or SIGTERM, or after ``duration`` seconds."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
    if duration is not None:
        loop.call_later(duration, stop.set)
    return stop


async def _lease(client: ScannerClient, args: argparse.Namespace, out: TextIO) -> int:
    """Hold a pause or an active window for its seconds: it ends with our connection."""
    if args.command == "pause":
        path = await client.pause_scan(args.adapter, args.seconds)
        what = f"discovery paused on {args.adapter}"
    else:
        path = await client.request_active_scan(args.adapter, args.seconds)
        what = f"active scanning on {args.adapter or 'every adapter'}"
    out.write(f"{what} for {args.seconds:g} s ({path}); Ctrl-C ends it early\n")
    out.flush()
    await _stop_event(args.seconds).wait()
    return EXIT_OK


async def _watch(client: ScannerClient, args: argparse.Namespace, out: TextIO) -> int:
    loop = asyncio.get_running_loop()
    stop = _stop_event(args.duration)
    options = _filters(args)
    if args.all_reports:
        options["all_reports"] = True
    if args.rssi_delta is not None:
        options["rssi_delta"] = args.rssi_delta
    if args.keep_alive is not None:
        options["keep_alive"] = args.keep_alive
    count = 0
    async with client.subscribe(**options) as stream:
        stopping = loop.create_task(stop.wait())
        try:
            while args.count is None or count < args.count:
                nxt = loop.create_task(anext(stream))
                await asyncio.wait({nxt, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not nxt.done():
                    nxt.cancel()
                    break
                event = nxt.result()
                if args.json:
                    kind = "lost" if isinstance(event, DeviceLost) else "discovered"
                    line = json.dumps({"event": kind, **event.as_dict()})
                else:
                    line = event_line(event)
                out.write(line + "\n")
                out.flush()
                count += 1
        finally:
            stopping.cancel()
    return EXIT_OK


_COMMANDS: Final = {
    "status": _status,
    "devices": _devices,
    "watch": _watch,
    "pause": _lease,
    "active-scan": _lease,
}


# The exit code for each error, most specific first (ScannerError catches the rest).
_EXIT_FOR: Final = (
    (ServiceNotRunningError, EXIT_SERVICE_NOT_RUNNING),
    (UntrustedServiceError, EXIT_UNTRUSTED),
    (AccessDeniedError, EXIT_DENIED),
    (BusUnreachableError, EXIT_BUS_UNREACHABLE),
    (ScannerError, EXIT_SERVICE_ERROR),
)


def _failed(exc: ScannerError, connecting: bool = False) -> int:
    """One line on stderr, never a traceback; the exit code scripts rely on."""
    message = f"ble-scanner: {exc}"
    if connecting and isinstance(exc, ServiceNotRunningError):
        message += ". Is dbus-ble-scanner installed and started (svstat /service/dbus-ble-scanner)?"
    print(message, file=sys.stderr)
    return next(code for kind, code in _EXIT_FOR if isinstance(exc, kind))


async def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    client = ScannerClient(
        bus_address=args.bus,
        timeout=args.timeout,
        service_timeout=args.wait,
        batch=not getattr(args, "no_batch", False),
    )
    quiet_after_loss(asyncio.get_running_loop(), lambda: client.bus_lost is not None)
    try:
        await client.connect()
    except ScannerError as exc:
        return _failed(exc, connecting=True)
    try:
        return await _COMMANDS[args.command](client, args, out)
    except ScannerError as exc:
        return _failed(exc)
    finally:
        await client.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        make_filter(**_filters(args))
    except ValueError as exc:
        parser.error(str(exc))
    try:
        return asyncio.run(run(args))
    except ValueError as exc:  # a filter the client refuses before sending it
        print(f"ble-scanner: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # `ble-scanner watch | head`
        with contextlib.suppress(OSError):
            sys.stdout.close()
        return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
