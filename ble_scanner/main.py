"""The service process: command line, wiring, name, signals, shutdown."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import replace

from dbus_fast import BusType, Message, MessageType, RequestNameReply
from dbus_fast.aio import MessageBus

from . import __version__
from .bluez.objects import Bluez, ScanMode
from .bus.writer import WriterGuard, guard_writer
from .const import (
    DBUS_INTERFACE,
    DBUS_PATH,
    DBUS_SERVICE,
    DEFAULT_BROADCAST_KEEPALIVE,
    DEFAULT_BROADCAST_RSSI_DELTA,
    DEFAULT_CACHE_SIZE,
    DEFAULT_LOST_TIMEOUT,
    LOST_SWEEP_INTERVAL,
    SCANNER_SERVICE,
    SHUTDOWN_TIMEOUT,
    WATCHDOG_SILENCE,
)
from .hub import Hub, ScannerConfig
from .leases import LeaseRegistry
from .record import MalformedData, normalize_address
from .service import ScannerService
from .state import ServiceStatus
from .venus.busitem import BusItemTree
from .venus.const import PREFERRED_DEVICE_INSTANCE
from .venus.settings import ScannerSettings, SettingsClient
from .venus.tree import ScannerTree

_LOGGER = logging.getLogger("ble_scanner")

# Exit codes a supervisor or script can rely on.
EXIT_OK = 0
EXIT_BUS_UNREACHABLE = 1
EXIT_NAME_TAKEN = 2
EXIT_USAGE = 64
# service/run's softlimit allows 150 MB; at ~1 KB a device this leaves room.
MAX_CACHE_SIZE = 50_000


def _company_id(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a company id: {text!r}") from None
    if not 0 <= value <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"company id out of range: {text!r}")
    return value


def _address(text: str) -> str:
    try:
        return normalize_address(text)
    except MalformedData as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dbus_ble_scanner.py",
        description=(
            "The one BLE scanning service: owns BlueZ discovery on every adapter and serves "
            f"advertisements as {SCANNER_SERVICE} on the system bus "
            "(DBUS_SYSTEM_BUS_ADDRESS is honoured)."
        ),
    )
    parser.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="HCI",
        help="use only this adapter (repeatable; default: every adapter)",
    )
    parser.add_argument(
        "--lost-timeout",
        type=float,
        default=DEFAULT_LOST_TIMEOUT,
        metavar="S",
        help=f"a device unheard this long is lost (default {DEFAULT_LOST_TIMEOUT:g})",
    )
    parser.add_argument(
        "--cache-size",
        type=int,
        default=DEFAULT_CACHE_SIZE,
        metavar="N",
        help=f"most devices kept; the least recently heard go first (default {DEFAULT_CACHE_SIZE})",
    )
    parser.add_argument(
        "--keep-alive",
        type=float,
        default=DEFAULT_BROADCAST_KEEPALIVE,
        metavar="S",
        help="re-broadcast an unchanged device this often while it advertises; 0 = never "
        f"(default {DEFAULT_BROADCAST_KEEPALIVE:g})",
    )
    parser.add_argument(
        "--rssi-delta",
        type=int,
        default=DEFAULT_BROADCAST_RSSI_DELTA,
        metavar="DBM",
        help=f"RSSI change that is news to the broadcast (default {DEFAULT_BROADCAST_RSSI_DELTA})",
    )
    parser.add_argument(
        "--ignore-company-id",
        type=_company_id,
        action="append",
        default=[],
        metavar="ID",
        help="drop reports whose manufacturer data is only this company's (repeatable; "
        "e.g. 0x004C for Apple)",
    )
    parser.add_argument(
        "--ignore-address",
        type=_address,
        action="append",
        default=[],
        metavar="ADDR",
        help="drop reports from this address (repeatable)",
    )
    parser.add_argument(
        "--min-rssi", type=int, default=None, metavar="DBM", help="drop reports weaker than this"
    )
    parser.add_argument(
        "--scan-mode",
        choices=[m.value for m in ScanMode],
        default=ScanMode.ACTIVE.value,
        help="active: BlueZ discovery (names from scan responses); passive: an "
        "AdvertisementMonitor, no scan requests (needs bluetoothd -E); auto: passive, with "
        "active windows while a client asks for them (default active)",
    )
    parser.add_argument(
        "--no-settings",
        action="store_true",
        help="do not use localsettings (com.victronenergy.settings); the options here apply",
    )
    parser.add_argument(
        "--settings-wait",
        type=float,
        default=0.0,
        metavar="S",
        help="how long to wait for localsettings before scanning with the defaults "
        "(default 0: settings are applied live whenever localsettings appears)",
    )
    parser.add_argument("--debug", action="store_true", help="log every decision")
    parser.add_argument("--version", action="version", version=__version__)
    return parser


def config_from_args(args: argparse.Namespace) -> ScannerConfig:
    return ScannerConfig(
        lost_timeout=args.lost_timeout,
        cache_size=args.cache_size,
        broadcast_keep_alive=args.keep_alive,
        broadcast_rssi_delta=args.rssi_delta,
        ignore_company_ids=frozenset(args.ignore_company_id),
        ignore_addresses=frozenset(args.ignore_address),
        min_rssi=args.min_rssi,
        adapters=frozenset(args.adapter),
        scan_mode=args.scan_mode,
    )


def validate_config(config: ScannerConfig) -> list[str]:
    problems = []
    if not 1 <= config.lost_timeout <= 86_400:
        problems.append("lost timeout must be 1..86400 s")
    if not 1 <= config.cache_size <= MAX_CACHE_SIZE:
        problems.append(f"cache size must be 1..{MAX_CACHE_SIZE}")
    if not 0 <= config.broadcast_keep_alive <= 86_400:
        problems.append("keep-alive must be 0..86400 s")
    if not 0 <= config.broadcast_rssi_delta <= 147:
        problems.append("RSSI delta must be 0..147")
    if config.scan_mode not in {mode.value for mode in ScanMode}:
        problems.append("scan mode must be active, passive or auto")
    return problems


def _cmdline(pid: object) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def settings_from_config(config: ScannerConfig) -> ScannerSettings:
    """Command-line values become the defaults localsettings is created with."""
    return ScannerSettings(
        adapters=tuple(sorted(config.adapters)),
        lost_timeout=config.lost_timeout,
        cache_size=config.cache_size,
        broadcast_keepalive=config.broadcast_keep_alive,
        broadcast_rssi_delta=config.broadcast_rssi_delta,
        ignore_company_ids=config.ignore_company_ids,
        scan_mode=config.scan_mode,
    )


def config_from_settings(settings: ScannerSettings, base: ScannerConfig) -> ScannerConfig:
    """localsettings wins where it has a value; the rest stays as the command line said."""
    return replace(
        base,
        adapters=frozenset(settings.adapters),
        lost_timeout=settings.lost_timeout,
        cache_size=settings.cache_size,
        broadcast_keep_alive=settings.broadcast_keepalive,
        broadcast_rssi_delta=settings.broadcast_rssi_delta,
        ignore_company_ids=settings.ignore_company_ids,
        scan_mode=settings.scan_mode,
    )


class ScannerApp:
    """The running service: one connection, the hub, the BlueZ side, Scanner1 and the Venus tree."""

    def __init__(
        self,
        config: ScannerConfig,
        bus_address: str | None = None,
        use_settings: bool = True,
        settings_wait: float = 0.0,
        watchdog_silence: float = WATCHDOG_SILENCE,
    ) -> None:
        self.config = config
        self.watchdog_silence = watchdog_silence
        self.use_settings = use_settings
        self.settings_wait = settings_wait
        self.settings: SettingsClient | None = None
        self.tree: ScannerTree | None = None
        self.bus_address = bus_address
        self.bus: MessageBus | None = None
        self.writer: WriterGuard | None = None
        self.bluez: Bluez | None = None
        self.service: ScannerService | None = None
        self.hub: Hub | None = None
        self.ready = asyncio.Event()
        self.leases = LeaseRegistry()
        self._background: set[asyncio.Task[bool]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def status(self) -> ServiceStatus:
        hub, bluez = self.hub, self.bluez
        assert hub is not None
        return ServiceStatus(
            version=__version__,
            bluez_present=bluez is not None and bluez.owner is not None,
            adapters=tuple(bluez.adapter_statuses()) if bluez else (),
            devices=len(hub.cache),
            subscriptions=len(hub.subscriptions),
            reports=hub.stats.reports,
            ignored=hub.stats.ignored,
            lost_timeout=hub.config.lost_timeout,
            shed=self.writer.shed if self.writer is not None else 0,
            malformed=hub.stats.malformed + (sum(bluez.malformed.counts.values()) if bluez else 0),
        )

    async def start(self) -> int:
        """Connect, serve, own the name, start scanning; returns an exit code on failure."""
        try:
            self.bus = await asyncio.wait_for(
                MessageBus(bus_address=self.bus_address, bus_type=BusType.SYSTEM).connect(), 10
            )
        except Exception as exc:
            _LOGGER.error("cannot connect to the system bus: %s", exc)
            return EXIT_BUS_UNREACHABLE
        bus = self.bus
        self.writer = guard_writer(bus)  # EAGAIN waits; overload sheds news (writer.py)
        self.service = ScannerService(bus, self.status, self.leases)
        self.hub = Hub(self.service, self.config)
        self.service.attach(self.hub)
        device_instance, custom_name = await self._start_settings(bus)
        busitems = BusItemTree(bus)
        self.tree = ScannerTree(
            busitems,
            self.status,
            lambda: list(self.hub.cache) if self.hub else [],
            device_instance,
            custom_name,
            self._custom_name_set,
        )
        if self.settings is not None:
            values = self.settings.values
            self.tree.set_publish(values.publish_devices, values.publish_devices_max)
        self.tree.refresh()
        # Every path exists before the name is requested (SPEC §4).
        await self.service.start()
        reply = await busitems.register(SCANNER_SERVICE)
        if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
            _LOGGER.error("%s is already taken by %s", SCANNER_SERVICE, await self._who_owns())
            return EXIT_NAME_TAKEN
        self.bluez = Bluez(
            bus,
            self.hub.report,
            adapters_wanted=self.config.adapters,
            scan_mode=ScanMode(self.config.scan_mode),
            leases=self.leases,
            report_counts=lambda: self.hub.stats.per_adapter if self.hub else {},
            watchdog_silence=self.watchdog_silence,
        )
        self.service.on_leases_changed = self.bluez.leases_changed
        await self.bluez.start()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="sweep")
        self.tree.start()
        self.ready.set()
        _LOGGER.info("%s %s ready", SCANNER_SERVICE, __version__)
        return EXIT_OK

    async def _start_settings(self, bus: MessageBus) -> tuple[int, str]:
        """localsettings: our settings (applied now and live) and the VRM device instance."""
        if not self.use_settings:
            _LOGGER.info("localsettings not used (--no-settings); command-line options apply")
            return PREFERRED_DEVICE_INSTANCE, ""
        self.settings = SettingsClient(
            bus,
            on_change=self._settings_changed,
            defaults=settings_from_config(self.config),
            on_device_instance=self._device_instance_changed,
        )
        if await self.settings.start(wait=self.settings_wait):
            self.configure(config_from_settings(self.settings.values, self.config))
        instance = await self.settings.allocate_device_instance()
        return instance, self.settings.values.custom_name

    def _settings_changed(self, values: ScannerSettings, changed: object) -> None:
        self.configure(config_from_settings(values, self.config))
        if self.tree is not None:
            self.tree.set_publish(values.publish_devices, values.publish_devices_max)
            self.tree.set_custom_name(values.custom_name)

    def _device_instance_changed(self, instance: int) -> None:
        if self.tree is not None:
            self.tree.tree["/DeviceInstance"] = instance

    def _custom_name_set(self, name: str) -> None:
        """A client wrote /CustomName: persist it in localsettings."""
        if self.settings is not None and self.settings.present:
            task = asyncio.get_running_loop().create_task(self.settings.set_custom_name(name))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _who_owns(self) -> str:
        assert self.bus is not None

        async def ask(member: str, arg: str) -> object:
            msg = Message(
                destination=DBUS_SERVICE,
                path=DBUS_PATH,
                interface=DBUS_INTERFACE,
                member=member,
                signature="s",
                body=[arg],
            )
            reply = await asyncio.wait_for(self.bus.call(msg), 2)  # type: ignore[union-attr]
            if reply is None or reply.message_type != MessageType.METHOD_RETURN:
                return None
            return reply.body[0]

        try:
            owner = str(await ask("GetNameOwner", SCANNER_SERVICE))
            pid = await ask("GetConnectionUnixProcessID", owner)
            uid = await ask("GetConnectionUnixUser", owner)
        except Exception:
            return "another connection"
        cmdline = _cmdline(pid)
        return f"{owner} (pid {pid}, uid {uid}{', ' + cmdline if cmdline else ''})"

    def configure(self, config: ScannerConfig) -> None:
        """Apply new settings live."""
        self.config = config
        if self.hub is not None:
            self.hub.configure(config)
        if self.bluez is not None:
            self.bluez.set_adapters_wanted(config.adapters)
            self.bluez.set_scan_mode(ScanMode(config.scan_mode))

    async def _sweep(self) -> None:
        assert self.hub is not None
        while True:
            await asyncio.sleep(LOST_SWEEP_INTERVAL)
            try:
                self.hub.sweep()
            except Exception:
                _LOGGER.exception("lost-device sweep failed")

    async def stop(self) -> None:
        """Stop our discovery sessions, release the name, disconnect; bounded in time."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.tree is not None:
            await self.tree.stop()
        if self.settings is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.settings.close(), 0.3)
        bus = self.bus
        if bus is None or not bus.connected:
            return
        with contextlib.suppress(Exception):
            if self.bluez is not None:
                await asyncio.wait_for(self.bluez.close(stop_sessions=True), SHUTDOWN_TIMEOUT)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(bus.release_name(SCANNER_SERVICE), 0.3)
        if self.service is not None:
            self.service.close()
        bus.disconnect()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(bus.wait_for_disconnect(), 0.3)  # type: ignore[no-untyped-call]


async def run(config: ScannerConfig, use_settings: bool = True, settings_wait: float = 0.0) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    app = ScannerApp(config, use_settings=use_settings, settings_wait=settings_wait)
    starting = loop.create_task(app.start())
    stopping = loop.create_task(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        _LOGGER.info("stopped during start-up")
        starting.cancel()
        with contextlib.suppress(BaseException):
            await starting
        await app.stop()
        return EXIT_OK
    stopping.cancel()
    code = starting.result()
    if code != EXIT_OK:
        await app.stop()
        return code
    await stop.wait()
    _LOGGER.info("stopping")
    await app.stop()
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    config = config_from_args(args)
    problems = validate_config(config)
    if problems:
        for problem in problems:
            _LOGGER.error("%s", problem)
        return EXIT_USAGE
    return asyncio.run(run(config, not args.no_settings, args.settings_wait))


if __name__ == "__main__":
    sys.exit(main())
