"""The service process: command line, wiring, name, signals, shutdown."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Final, NoReturn

from dbus_fast import BusType, RequestNameReply
from dbus_fast.aio import MessageBus

from . import __version__
from .bluez.objects import Bluez, ScanMode
from .bus.calls import BusGoneError, CallError, call_bus, name_owner
from .bus.writer import WriterGuard, guard_writer
from .config import ScannerConfig, add_options, config_from_args, with_values
from .const import LOST_SWEEP_INTERVAL, SCANNER_SERVICE, SHUTDOWN_TIMEOUT, WATCHDOG_SILENCE
from .hub import Hub
from .leases import LeaseRegistry
from .loadcap import LoadPolicy
from .loadguard import LoadGuard, ProcSampler
from .service import ScannerService
from .state import ServiceStatus
from .venus.busitem import BusItemTree
from .venus.const import PREFERRED_DEVICE_INSTANCE
from .venus.settings import SettingsClient
from .venus.tree import ScannerTree

_LOGGER = logging.getLogger("ble_scanner")

# Exit codes a supervisor or script can rely on.
EXIT_OK = 0
EXIT_BUS_UNREACHABLE = 1
EXIT_NAME_TAKEN = 2
EXIT_USAGE = 64  # sysexits.h EX_USAGE; argparse's own 2 would read as "name taken"
# Connecting to the system bus is a local socket and a SASL exchange: ten seconds
# means the bus daemon is wedged, not slow.
BUS_CONNECT_TIMEOUT: Final = 10.0
# The bus daemon answers about its own connections in milliseconds; this only
# bounds the "who owns the name" message when we cannot start.
NAME_OWNER_TIMEOUT: Final = 2.0
# Each cleanup step other than BlueZ's (SHUTDOWN_TIMEOUT) gets this, so SIGTERM
# still ends within SPEC §6's 2 s when the bus is slow.
SHUTDOWN_STEP_TIMEOUT: Final = 0.3


class _Parser(argparse.ArgumentParser):
    """argparse, exiting with EXIT_USAGE on a bad option (its own 2 is EXIT_NAME_TAKEN)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The command line: every option and its --help text come from config.py's table."""
    parser = _Parser(
        prog="dbus_ble_scanner.py",
        description=(
            "The one BLE scanning service: owns BlueZ discovery on every adapter and serves "
            f"advertisements as {SCANNER_SERVICE} on the system bus "
            "(DBUS_SYSTEM_BUS_ADDRESS is honoured). Where localsettings "
            "(com.victronenergy.settings) keeps a setting, its value wins over the option: "
            "the stored one, or the default it creates."
        ),
    )
    add_options(parser)
    parser.add_argument("--version", action="version", version=__version__)
    return parser


def _cmdline(pid: object) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


class ScannerApp:
    """The running service: one connection, the hub, the BlueZ side, Scanner1 and the Venus tree."""

    def __init__(
        self,
        config: ScannerConfig,
        bus_address: str | None = None,
        use_settings: bool = True,
        settings_wait: float = 0.0,
        watchdog_silence: float = WATCHDOG_SILENCE,
        load_sampler: ProcSampler | None = None,
        load_policy: LoadPolicy | None = None,
    ) -> None:
        self.config = config
        # The load budget (loadguard.py) runs when given a sampler: the process
        # gives /proc's; an in-process service (tests) runs without one, so that
        # the test process's CPU and the machine's load do not make it shed,
        # unless a test points one at files it writes.
        self.load_sampler = load_sampler
        self.load_policy = load_policy
        self.load_guard: LoadGuard | None = None
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
            load_shedding=int(hub.shedding),
            malformed=hub.stats.malformed + (sum(bluez.malformed.counts.values()) if bluez else 0),
        )

    async def start(self) -> int:
        """Connect, serve, own the name, start scanning; returns an exit code on failure."""
        try:
            self.bus = await asyncio.wait_for(
                MessageBus(bus_address=self.bus_address, bus_type=BusType.SYSTEM).connect(),
                BUS_CONNECT_TIMEOUT,
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
        if self.load_sampler is not None:
            self.load_guard = LoadGuard(self.hub, self.load_sampler, self.load_policy)
            self.load_guard.start()
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
            defaults=self.config,
            on_device_instance=self._device_instance_changed,
        )
        if await self.settings.start(wait=self.settings_wait):
            self.configure(self.settings.values)
        instance = await self.settings.allocate_device_instance()
        return instance, self.settings.values.custom_name

    def _settings_changed(self, values: ScannerConfig, changed: frozenset[str]) -> None:
        """localsettings changed ``changed``: those fields, and only those, apply now."""
        self.configure(with_values(self.config, {name: getattr(values, name) for name in changed}))
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
        """The connection that holds our name, for the log: unique name, pid, uid, command line."""
        assert self.bus is not None
        bus = self.bus
        try:
            owner = await name_owner(bus, SCANNER_SERVICE, timeout=NAME_OWNER_TIMEOUT)
            if owner is None:
                return "another connection (gone since)"
            (pid,) = await call_bus(
                bus, "GetConnectionUnixProcessID", "s", [owner], timeout=NAME_OWNER_TIMEOUT
            )
            (uid,) = await call_bus(
                bus, "GetConnectionUnixUser", "s", [owner], timeout=NAME_OWNER_TIMEOUT
            )
        except (CallError, TimeoutError, BusGoneError):
            return "another connection"
        cmdline = _cmdline(pid)
        return f"{owner} (pid {pid}, uid {uid}{', ' + cmdline if cmdline else ''})"

    def configure(self, config: ScannerConfig) -> None:
        """Apply new settings live."""
        self.config = config
        if self.hub is not None:
            self.hub.configure(config)
        if self.load_guard is not None:
            self.load_guard.configure(config)
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
        if self.load_guard is not None:
            await self.load_guard.stop()
        if self.tree is not None:
            await self.tree.stop()
        if self.settings is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.settings.close(), SHUTDOWN_STEP_TIMEOUT)
        bus = self.bus
        if bus is None or not bus.connected:
            return
        with contextlib.suppress(Exception):
            if self.bluez is not None:
                await asyncio.wait_for(self.bluez.close(stop_sessions=True), SHUTDOWN_TIMEOUT)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(bus.release_name(SCANNER_SERVICE), SHUTDOWN_STEP_TIMEOUT)
        if self.service is not None:
            self.service.close()
        bus.disconnect()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(bus.wait_for_disconnect(), SHUTDOWN_STEP_TIMEOUT)  # type: ignore[no-untyped-call]


async def run(config: ScannerConfig, use_settings: bool = True, settings_wait: float = 0.0) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    app = ScannerApp(
        config, use_settings=use_settings, settings_wait=settings_wait, load_sampler=ProcSampler()
    )
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
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return asyncio.run(run(config, not args.no_settings, args.settings_wait))


if __name__ == "__main__":
    sys.exit(main())
