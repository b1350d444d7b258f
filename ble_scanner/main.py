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
from .bluez.claimsdir import ClaimsDir
from .bluez.ingest import MgmtUnavailable
from .bluez.objects import Bluez
from .bus.calls import (
    BusGoneError,
    CallError,
    call_bus,
    connection_lost,
    disconnect_reason,
    name_owner,
    quiet_after_loss,
)
from .bus.writer import WriterGuard, guard_writer
from .config import ScannerConfig, add_options, config_from_args, with_values
from .const import DEFAULT_STATE_SAVE_INTERVAL, SCANNER_SERVICE, SHUTDOWN_TIMEOUT
from .core import statefile
from .core.hub import Hub, HubSettings
from .core.leases import LeaseRegistry
from .core.loadcap import LoadPolicy
from .core.loadguard import LoadGuard, ProcSampler
from .core.state import ServiceStatus
from .core.timer import HubTimer
from .modes import Ingest, ScanMode
from .service import ScannerService
from .signals import ScannerSignals
from .tasks import Periodic, TaskSet
from .venus.busitem import BusItemTree
from .venus.const import PREFERRED_DEVICE_INSTANCE
from .venus.feed import BleSensorsFeed
from .venus.settings import SettingsClient
from .venus.tree import ScannerTree

_LOGGER = logging.getLogger("ble_scanner")

# Exit codes a supervisor or script can rely on.
EXIT_OK = 0
EXIT_BUS_UNREACHABLE = 1
EXIT_NAME_TAKEN = 2
# The bus went away under a running (or starting) service: only a restart, by
# the supervisor once the bus is back, puts the service on the bus again.
EXIT_BUS_LOST = 3
EXIT_USAGE = 64  # sysexits.h EX_USAGE; argparse's own 2 would read as "name taken"
# --ingest mgmt and the management channel cannot be opened (sysexits.h EX_UNAVAILABLE).
EXIT_NO_MGMT = 69
# Connecting to the system bus is a local socket and a SASL exchange: ten seconds
# means the bus daemon is wedged, not slow.
BUS_CONNECT_TIMEOUT: Final = 10.0
# The bus daemon answers about its own connections in milliseconds; this only
# bounds the "who owns the name" message when we cannot start.
NAME_OWNER_TIMEOUT: Final = 2.0
# Each cleanup step other than BlueZ's (SHUTDOWN_TIMEOUT) gets this, so SIGTERM
# still ends within 2 s (docs/behaviour.md "Against BlueZ") when the bus is slow.
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
        watchdog_silence: float | None = None,
        state_file: str = "",
        state_save_interval: float = DEFAULT_STATE_SAVE_INTERVAL,
        load_sampler: ProcSampler | None = None,
        load_policy: LoadPolicy | None = None,
        claims_dir: str = "",
    ) -> None:
        """``watchdog_silence``: both watchdog steps, below the settings' 5 s minimum (tests).

        ``claims_dir``: the bt-claims directory; "" coordinates with no other process.
        """
        self.config = config
        self.claims_dir = claims_dir
        # The device cache across restarts (statefile.py); "" keeps none.
        self.state_file = state_file
        self.state_save_interval = state_save_interval
        self._saver = Periodic(
            "writing the state file", state_save_interval, self.save_state, _LOGGER
        )
        self._save_error = ""  # the last failure logged, so a failing disk logs once
        # Set once the name is ours: only then may the state file be written.
        self._owns_name = False
        # The load budget (loadguard.py) samples when given a sampler: the process
        # gives /proc's; an in-process service (tests) runs without one, so that
        # the test process's CPU and the machine's load do not make it shed,
        # unless a test points one at files it writes.
        self.load_sampler = load_sampler
        self.load_policy = load_policy
        self.load_guard: LoadGuard | None = None
        self.timer: HubTimer | None = None
        self.watchdog_silence = watchdog_silence
        self.use_settings = use_settings
        self.settings_wait = settings_wait
        self.settings: SettingsClient | None = None
        self.tree: ScannerTree | None = None
        self.feed: BleSensorsFeed | None = None
        self.bus_address = bus_address
        self.bus: MessageBus | None = None
        self.writer: WriterGuard | None = None
        self.bluez: Bluez | None = None
        self.service: ScannerService | None = None
        self.signals: ScannerSignals | None = None
        self.hub: Hub | None = None
        self.ready = asyncio.Event()
        self.leases = LeaseRegistry(per_user=self.config.max_leases_per_user)
        self._background = TaskSet(_LOGGER, "storing the custom name")
        self._bus_watch: asyncio.Task[None] | None = None
        self._stopping = False
        self.bus_lost = asyncio.Event()
        self.bus_lost_reason = ""

    def status(self) -> ServiceStatus:
        hub, bluez = self.hub, self.bluez
        assert hub is not None
        shed_by_path = self.writer.shed_by_path if self.writer is not None else {}
        return ServiceStatus(
            version=__version__,
            bluez_present=bluez is not None and bluez.owner is not None,
            adapters=tuple(bluez.adapter_statuses()) if bluez else (),
            devices=len(hub.cache),
            subscriptions=len(hub.subscriptions),
            reports=hub.stats.reports,
            ignored=hub.stats.ignored,
            lost_timeout=hub.settings.lost_timeout,
            shed=(self.writer.shed if self.writer is not None else 0)
            + (self.signals.batches.shed if self.signals is not None else 0),
            subscriptions_shed=tuple(
                (s.path, shed)
                for s in hub.subscriptions
                if (shed := (s.batch.shed if s.batch else 0) + shed_by_path.get(s.path, 0))
            ),
            load_shedding=int(hub.shedding),
            leases=len(self.leases),
            users=len(hub.subscriptions.uids() | self.leases.uids()),
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
        self._bus_watch = asyncio.get_running_loop().create_task(
            self._watch_bus(bus), name="bus-watch"
        )
        self.writer = guard_writer(bus)  # EAGAIN waits; overload sheds news (writer.py)
        # Settings first: the hub and every other part start from their values.
        device_instance, custom_name = await self._start_settings(bus)
        self.feed = BleSensorsFeed(
            bus,
            self.config,
            self._adapter_addresses,
            self._store_setting if self.settings is not None else None,
        )
        await self.feed.start()
        # A report's path, built from its end (docs/architecture.md): the signals
        # the hub's decisions become, the hub, the BlueZ side that reports to it.
        signals = self.signals = ScannerSignals(bus, self.writer)
        alarm = asyncio.Event()  # the hub wakes its timer through it
        hub = self.hub = Hub(
            signals, HubSettings.of(self.config), tap=self.feed.report, wake=alarm.set
        )
        self.bluez = Bluez(
            bus,
            hub,
            adapters_wanted=self.config.adapters,
            scan_mode=ScanMode(self.config.scan_mode),
            leases=self.leases,
            report_counts=lambda: hub.stats.per_adapter,
            claims=ClaimsDir(self.claims_dir) if self.claims_dir else None,
            ingest=Ingest(self.config.ingest),
            mgmt_socket=self.config.mgmt_socket,
            wake_up=signals.outbox,
        )
        if self.load_sampler is not None:
            self.load_guard = LoadGuard(hub, self.load_sampler, self.load_policy)
        # Sweeps, flushes, lease expiry and load samples; leases converge on BlueZ.
        self.timer = HubTimer(hub, alarm, self.leases, self.bluez.leases_changed, self.load_guard)
        self.service = ScannerService(
            bus,
            hub,
            signals,
            self.status,
            self.leases,
            self.timer.leases_changed,
            self.config.steer_group,
        )
        busitems = BusItemTree(bus)
        self.tree = ScannerTree(
            busitems,
            self.status,
            lambda: list(hub.cache),
            device_instance,
            custom_name,
            self._custom_name_set,
            feed=self.feed.status,
        )
        if self.settings is not None:
            values = self.settings.values
            self.tree.set_publish(values.publish_devices, values.publish_devices_max)
        self.tree.refresh()
        # Restored devices answer the first call, and the settings' lost timeout judges them.
        self._restore_state()
        # Every path exists before the name is requested (docs/dbus-api.md "Scanner1").
        await self.service.start()
        reply = await busitems.register(SCANNER_SERVICE)
        if reply not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
            _LOGGER.error("%s is already taken by %s", SCANNER_SERVICE, await self._who_owns())
            return EXIT_NAME_TAKEN
        self._owns_name = True
        self._configure_watchdog(self.config)
        try:
            await self.bluez.start()
        except MgmtUnavailable as exc:
            _LOGGER.error("--ingest mgmt: %s; use --ingest auto to fall back to D-Bus", exc)
            return EXIT_NO_MGMT
        self.timer.start()
        self.tree.start()
        if self.state_file:
            self._saver.start()
        self.ready.set()
        _LOGGER.info("%s %s ready", SCANNER_SERVICE, __version__)
        return EXIT_OK

    async def _watch_bus(self, bus: MessageBus) -> None:
        """Set ``bus_lost`` when the connection ends without our asking (the daemon went)."""
        reason = await connection_lost(bus)
        if not self._stopping:
            self.bus_lost_reason = reason
            self.bus_lost.set()

    def lost_the_bus(self) -> bool:
        """The connection ended without our asking (the watch may not have run yet)."""
        bus = self.bus
        return self.bus_lost.is_set() or (
            bus is not None and not bus.connected and not self._stopping
        )

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

    def _adapter_addresses(self) -> dict[str, str]:
        """Each adapter's address by name, for the dbus-ble-sensors feed's datagrams."""
        if self.bluez is None:
            return {}
        return {a.name: a.address for a in self.bluez.adapters.values()}

    async def _store_setting(self, field: str, value: int) -> bool:
        """One of our settings stored in localsettings (the feed remembers what it took over)."""
        assert self.settings is not None
        return await self.settings.set_value(field, value)

    def _device_instance_changed(self, instance: int) -> None:
        if self.tree is not None:
            self.tree.tree["/DeviceInstance"] = instance

    def _custom_name_set(self, name: str) -> None:
        """A client wrote /CustomName: persist it in localsettings."""
        if self.settings is not None and self.settings.present:
            self._background.spawn(self.settings.set_custom_name(name))

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
        self.leases.per_user = config.max_leases_per_user
        if self.service is not None:
            self.service.set_steer_group(config.steer_group)
        if self.hub is not None:
            self.hub.configure(HubSettings.of(config))
        if self.load_guard is not None:
            self.load_guard.configure(HubSettings.of(config))
        if self.feed is not None:
            self.feed.configure(config)
        if self.bluez is not None:
            self.bluez.set_adapters_wanted(config.adapters)
            self.bluez.set_scan_mode(ScanMode(config.scan_mode))
            self.bluez.ingest.set(Ingest(config.ingest))
            self._configure_watchdog(config)

    def _configure_watchdog(self, config: ScannerConfig) -> None:
        assert self.bluez is not None
        silence = self.watchdog_silence
        self.bluez.set_watchdog(
            config.silence_restart if silence is None else silence,
            config.silence_power_cycle if silence is None else silence,
            config.drain_timeout,
        )

    # --- the state file ---------------------------------------------------------------

    def _restore_state(self) -> None:
        """Load the state file into the cache; whatever is wrong with it is one log line."""
        hub, path = self.hub, self.state_file
        if hub is None or not path:
            return
        try:
            data = statefile.read(path)
            if data is None:
                _LOGGER.info("state file %s: none yet; starting with an empty cache", path)
                return
            devices, too_old = statefile.decode(
                data, hub.monotonic(), hub.wall(), hub.settings.lost_timeout
            )
            restored = hub.restore(devices)
        except statefile.StateFileError as exc:
            _LOGGER.warning("state file %s ignored: %s", path, exc)
            return
        except Exception as exc:  # never a crash over a file
            _LOGGER.warning("state file %s ignored: %s: %s", path, type(exc).__name__, exc)
            return
        _LOGGER.info(
            "state file %s: restored %d device(s), %d too long unheard",
            path,
            len(restored),
            too_old + len(devices) - len(restored),
        )

    def _state_bytes(self) -> bytes:
        hub = self.hub
        assert hub is not None
        return statefile.encode(hub.cache, hub.monotonic(), hub.wall())

    def _saved(self, error: OSError | None) -> None:
        """Log a failed save once per reason (a full or read-only disk repeats it every time)."""
        if error is None:
            if self._save_error:
                _LOGGER.info("state file %s written again", self.state_file)
            self._save_error = ""
            return
        reason = error.strerror or str(error)
        if error.filename:
            reason = f"{reason}: {error.filename}"
        if reason != self._save_error:
            _LOGGER.warning("state file %s not written: %s", self.state_file, reason)
        self._save_error = reason

    async def save_state(self) -> None:
        """Write the state file now; only once the name is ours, so a second
        instance that found it taken never overwrites the running one's file."""
        if not self.state_file or self.hub is None or not self._owns_name:
            return
        try:
            data = self._state_bytes()
            # The write and fsync may take a while on flash: not on the loop.
            await asyncio.to_thread(statefile.write_atomically, self.state_file, data)
        except OSError as exc:
            self._saved(exc)
        except Exception:
            _LOGGER.exception("state file %s not written", self.state_file)
        else:
            self._saved(None)

    async def stop_for_lost_bus(self) -> None:
        """One line for the log, then a stop that asks nothing of the bus."""
        watch = self._bus_watch
        if watch is not None and not watch.done():
            # A start-up call saw the loss first; the watch has the reason a moment later.
            await asyncio.wait({watch}, timeout=SHUTDOWN_STEP_TIMEOUT)
        _LOGGER.error(
            "lost the system bus (%s); exiting with code %d for the supervisor to restart us",
            self.bus_lost_reason or disconnect_reason(None),
            EXIT_BUS_LOST,
        )
        await self.stop()

    async def stop(self) -> None:
        """Save the cache, stop discovery, release the name, disconnect; bounded in time.

        With the bus gone every step that needs it is skipped: nothing waits for it.
        """
        self._stopping = True  # the bus watch ends with the connection, quietly
        self._saver.cancel()
        await self.save_state()
        if self.timer is not None:
            await self.timer.stop()
        if self.tree is not None:
            await self.tree.stop()
        if self.feed is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.feed.close(), SHUTDOWN_STEP_TIMEOUT)
        if self.settings is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.settings.close(), SHUTDOWN_STEP_TIMEOUT)
        bus = self.bus
        if bus is None or not bus.connected:
            if self.bluez is not None:  # its timers and tasks, no call
                await self.bluez.close(stop_sessions=False)
            if self.service is not None:
                self.service.close()
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


async def run(
    config: ScannerConfig,
    use_settings: bool = True,
    settings_wait: float = 0.0,
    state_file: str = "",
    state_save_interval: float = DEFAULT_STATE_SAVE_INTERVAL,
    claims_dir: str = "",
) -> int:
    """The service until SIGTERM/SIGINT (EXIT_OK), or until the bus goes (EXIT_BUS_LOST)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    app = ScannerApp(
        config,
        use_settings=use_settings,
        settings_wait=settings_wait,
        state_file=state_file,
        state_save_interval=state_save_interval,
        load_sampler=ProcSampler(),
        claims_dir=claims_dir,
    )
    quiet_after_loss(loop, app.lost_the_bus)
    starting = loop.create_task(app.start())
    stopping = loop.create_task(stop.wait())
    losing = loop.create_task(app.bus_lost.wait())
    try:
        await asyncio.wait({starting, stopping, losing}, return_when=asyncio.FIRST_COMPLETED)
        started, code = starting.done(), EXIT_OK
        if not started:
            starting.cancel()
            with contextlib.suppress(BaseException):
                await starting
        else:
            try:
                code = starting.result()
            except Exception:
                if not app.lost_the_bus():  # else a start-up call failed with the loss
                    raise
            if code == EXIT_OK and not app.lost_the_bus():
                await asyncio.wait({stopping, losing}, return_when=asyncio.FIRST_COMPLETED)
        if app.lost_the_bus():
            await app.stop_for_lost_bus()
            return EXIT_BUS_LOST
        if code == EXIT_OK:
            _LOGGER.info("stopping" if started else "stopped during start-up")
        await app.stop()
        return code
    finally:
        stopping.cancel()
        losing.cancel()


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
    state_file = statefile.default_path() if args.state_file is None else args.state_file
    return asyncio.run(
        run(
            config,
            not args.no_settings,
            args.settings_wait,
            state_file,
            args.state_save_interval,
            args.claims_dir,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
