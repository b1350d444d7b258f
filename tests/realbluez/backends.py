"""What a scenario test needs from "a BlueZ": the real bluetoothd in a guest, or the simulator.

Scenario tests talk to ``org.bluez`` over D-Bus only, on ``backend.bus``, and
use a :class:`Backend` for what D-Bus cannot do: put an advertiser on the air,
kill or restart bluetoothd. The same test then runs unchanged against
:class:`GuestBackend` (Debian's bluetoothd 5.66 / 5.82 in QEMU) and against
the project's simulator, and any difference is a finding.

:class:`SimulatorBackend` wraps ``ble_scanner.testing.simulator.BluezSimulator``
(a fresh one per test, because it lives on the test's event loop).
"""

from __future__ import annotations

import asyncio
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from typing import Any

from ble_scanner.config import ScannerConfig
from ble_scanner.testing.testbus import TestBus
from tests import ingest
from tests.realbluez.vm import Guest, GuestError

# The kernel's LE discovery timeout (10.24 s) plus margin for TCG.
ORPHAN_SCAN_LIMIT = 20.0
# hci1's address in btvirt (00:AA:01:<index>:00:01-ish); read from the guest at
# boot, this is only the simulator's stand-in so that both look alike.
SIM_ADVERTISER_ADDRESS = "00:AA:01:01:00:01"
SCAN_ADAPTER = "hci0"
# An LE connect with GATT discovery between two btvirt controllers under TCG:
# seconds; the margin is for a loaded 2-core machine.
CONNECT_TIMEOUT = 60.0
ADVERTISING_ADAPTER = "hci1"
# btvirt restarted in a running guest (another scene) until its controllers
# are all powered on bluetoothd; each try waits up to BLUETOOTHD_TIMEOUT, so
# three stay inside a test's timeout (guest/agent.py tries five at boot).
BTVIRT_ATTEMPTS = 3
# The two-listener scene (``Backend.reset(two_listeners=True)``): three
# controllers on one radio, hci0 and hci1 hear the advertiser on hci2.
TWO_LISTENERS = ("hci0", "hci1")
TWO_LISTENER_ADVERTISER = "hci2"
# The simulator's stand-in for btvirt's hci2, and what each listener hears
# there: the two adapters of a GX at the RSSI the issue saw (-50 and -65 dBm).
# btvirt's radio gives both 127 ("not available"), so only the simulator can
# show a stronger and a weaker source.
SIM_THIRD_ADDRESS = "00:AA:01:02:00:02"
SIM_LISTENER_RSSI = {"hci0": -50, "hci1": -65}
# Advertising interval unit of the HCI (and btmgmt's -r/-x): 0.625 ms.
ADV_INTERVAL_UNIT = 0.000625
# Where the guest's btmon records the management channel while reports are counted.


def uuid16_to_128(uuid16: int) -> str:
    return f"0000{uuid16:04x}-0000-1000-8000-00805f9b34fb"


@dataclass(frozen=True)
class Advert:
    """One legacy advertisement (≤ 31 bytes on air), described by what BlueZ should show."""

    manufacturer_data: dict[int, bytes] = field(default_factory=dict)
    service_data16: dict[int, bytes] = field(default_factory=dict)
    name: str | None = None
    flags: int | None = 0x06  # LE General Discoverable + BR/EDR not supported

    def ad_bytes(self) -> bytes:
        """The AD structures as the controller sends them."""
        parts: list[tuple[int, bytes]] = []
        if self.flags is not None:
            parts.append((0x01, bytes([self.flags])))
        if self.name is not None:
            parts.append((0x09, self.name.encode()))
        for uuid16, data in self.service_data16.items():
            parts.append((0x16, uuid16.to_bytes(2, "little") + data))
        for company, data in self.manufacturer_data.items():
            parts.append((0xFF, company.to_bytes(2, "little") + data))
        raw = b"".join(bytes([len(value) + 1, kind]) + value for kind, value in parts)
        if len(raw) > 31:
            raise ValueError(f"legacy advertisement is {len(raw)} bytes, more than 31")
        return raw

    @property
    def service_data(self) -> dict[str, bytes]:
        """ServiceData as BlueZ keys it: 128-bit lower-case UUID strings."""
        return {uuid16_to_128(k): v for k, v in self.service_data16.items()}


class Backend(ABC):
    """A BlueZ to test against, on a private system-like bus."""

    #: "bookworm", "trixie" or "simulator"
    name: str
    bus: TestBus
    #: BlueZ version as (major, minor); the simulator reports the version it models.
    bluez_version: tuple[int, int]
    #: True when bluetoothd runs with -E (AdvertisementMonitorManager1 present).
    experimental: bool = True
    #: Virtual radio: RSSI is always 127 and reports are few; the first may be missed.
    virtual_radio: bool = False

    scan_adapter = SCAN_ADAPTER
    #: The adapters that hear :meth:`advertise`: hci0 alone, or hci0 and hci1 in
    #: the two-listener scene (:meth:`reset`).
    listeners: tuple[str, ...] = (SCAN_ADAPTER,)

    @property
    def scan_adapter_path(self) -> str:
        return f"/org/bluez/{self.scan_adapter}"

    @property
    @abstractmethod
    def advertiser_address(self) -> str:
        """The address a connectable advertisement from :meth:`advertise` appears with."""

    @abstractmethod
    async def advertise(self, advert: Advert, *, connectable: bool = True) -> None:
        """Put ``advert`` on the air (replacing the previous one) where hci0 can hear it."""

    @abstractmethod
    async def stop_advertising(self) -> None: ...

    @abstractmethod
    async def connect(self, bus: Any) -> None:
        """An LE connection from hci0 to the advertiser, made by another client (``bus``)."""

    @abstractmethod
    async def disconnect(self, bus: Any) -> None:
        """That connection ends."""

    @abstractmethod
    async def kill_bluetoothd(self) -> None:
        """bluetoothd dies (SIGKILL): its bus connection drops, org.bluez loses its owner."""

    @abstractmethod
    async def start_bluetoothd(self, experimental: bool = True) -> None:
        """Start bluetoothd and return once org.bluez has both adapters powered."""

    async def restart_bluetoothd(self, experimental: bool = True) -> None:
        await self.kill_bluetoothd()
        await self.start_bluetoothd(experimental)

    #: The advertiser can repeat on its own (extended advertising on a timer).
    repeats_extended_advertising: bool = True

    @abstractmethod
    async def advertise_repeating(self, advert: Advert, interval: float) -> None:
        """``advert`` on the air every ``interval`` seconds without being re-sent."""

    @abstractmethod
    async def count_reports(self) -> None:
        """From now on, count the advertising reports hci0's bluetoothd receives."""

    @abstractmethod
    async def reports_so_far(self) -> int:
        """Reports counted so far (counting goes on)."""

    @abstractmethod
    async def reports_counted(self) -> int:
        """Stop counting; how many reports reached bluetoothd (``Device Found`` on hci0)."""

    @abstractmethod
    async def reports_counted_per_listener(self) -> dict[str, int]:
        """Stop counting; the reports that reached bluetoothd, per adapter in :attr:`listeners`."""

    @abstractmethod
    async def reset(self, two_listeners: bool = False) -> None:
        """Back to the state every test starts from: bluetoothd -E up, adapters on, silent.

        ``two_listeners``: the two-listener scene instead, three controllers with
        the advertiser on hci2 and hci0 and hci1 both hearing every advertisement
        (:data:`TWO_LISTENERS`); a module asks for it with ``TWO_LISTENERS_SCENE = True``.
        """

    async def teardown(self) -> None:
        """After each test."""
        await self.stop_advertising()

    def service_config(self, config: ScannerConfig) -> ScannerConfig:
        """``config`` for an in-process service here: D-Bus ingest, as the host's
        kernel channel would hear none of the guest's radio."""
        return replace(config, ingest="dbus")


class GuestBackend(Backend):
    """Debian's bluetoothd in a QEMU guest; its org.bluez lives on the host test bus."""

    virtual_radio = True

    def __init__(self, guest: Guest) -> None:
        self.guest = guest
        self.name = guest.suite
        self.bus = guest.bus
        self.bluez_version = guest.bluez_version
        self._advertiser_index = 1
        self._advertiser = self._read_advertiser_address()
        self._dirty = False
        self._btmon = 0
        self._btsnoop = ""  # the guest's recording of the management channel
        self._dual_mode = False
        self._three = False  # btvirt -l3: the two-listener scene
        # Measured: 5.82's btvirt re-broadcasts an extended advertising set at its
        # interval (emulator/btdev.c); 5.66's sends it once per scan enable.
        self.repeats_extended_advertising = self.bluez_version >= (5, 82)

    def _read_advertiser_address(self) -> str:
        out = self.guest.btmgmt("info", index=self._advertiser_index).check().out
        for line in out.splitlines():
            words = line.split()
            if words[:1] == ["addr"]:
                return words[1].upper()
        raise RuntimeError(f"no address for hci{self._advertiser_index} in btmgmt info:\n{out}")

    @property
    def experimental(self) -> bool:  # type: ignore[override]
        return self.guest.experimental

    @property
    def advertiser_address(self) -> str:
        return self._advertiser

    async def advertise(self, advert: Advert, *, connectable: bool = True) -> None:
        await asyncio.to_thread(
            self.guest.advertise, advert.ad_bytes(), connectable=connectable,
            index=self._advertiser_index,
        )  # fmt: skip

    async def stop_advertising(self) -> None:
        await asyncio.to_thread(self.guest.stop_advertising, index=self._advertiser_index)

    def _device_path(self) -> str:
        return f"/org/bluez/{SCAN_ADAPTER}/dev_{self._advertiser.replace(':', '_')}"

    async def connect(self, bus: Any) -> None:
        """Device1.Connect on hci0's object for hci1: btvirt makes a real LE link between them."""
        from tests.helpers import assert_ok, call

        self._dirty = True  # a link changes both controllers' state; the next test starts clean
        reply = await call(bus, "org.bluez", self._device_path(), "org.bluez.Device1", "Connect",
                           timeout=CONNECT_TIMEOUT)  # fmt: skip
        assert_ok(reply)

    async def disconnect(self, bus: Any) -> None:
        from tests.helpers import assert_ok, call

        reply = await call(bus, "org.bluez", self._device_path(), "org.bluez.Device1",
                           "Disconnect", timeout=CONNECT_TIMEOUT)  # fmt: skip
        assert_ok(reply)

    async def kill_bluetoothd(self) -> None:
        self._dirty = True
        await asyncio.to_thread(self.guest.kill_bluetoothd)

    async def count_reports(self) -> None:
        """btmon in the guest records the management channel (every control socket's events)."""
        # The recording goes to a directory made for it in the guest, not a fixed path.
        script = (
            "f=$(mktemp -d)/reports.btsnoop;"
            ' setsid btmon -w "$f" >/dev/null 2>&1 </dev/null & echo $! "$f"'
        )
        result = await asyncio.to_thread(self.guest.run, "sh", "-c", script)
        pid, self._btsnoop = result.check().out.split()
        self._btmon = int(pid)
        # btmon has opened its sockets once the file exists.
        await asyncio.to_thread(self.guest.run, "sh", "-c", f"while [ ! -s {self._btsnoop} ]; do sleep 0.05; done",
                                timeout=10)  # fmt: skip

    async def reports_so_far(self) -> int:
        return len(_device_found(await self._btmon_text(f"btmon -r {self._btsnoop}"), SCAN_ADAPTER))

    async def reports_counted(self) -> int:
        return len(_device_found(await self._stop_btmon(), SCAN_ADAPTER))

    async def reports_counted_per_listener(self) -> dict[str, int]:
        out = await self._stop_btmon()
        return {adapter: len(_device_found(out, adapter)) for adapter in self.listeners}

    async def _stop_btmon(self) -> str:
        """Stop the recording; btmon's text of it."""
        await asyncio.to_thread(self.guest.run, "kill", str(self._btmon))
        # The agent (PID 1) does not reap it: wait for gone or zombie, not for kill -0.
        stat = f"/proc/{self._btmon}/stat"
        return await self._btmon_text(
            f"while [ -e {stat} ] && [ \"$(cut -d' ' -f3 {stat})\" != Z ]; do sleep 0.05; done;"
            f" btmon -r {self._btsnoop}"
        )

    async def _btmon_text(self, script: str) -> str:
        return (await asyncio.to_thread(self.guest.run, "sh", "-c", script)).check().out

    async def start_bluetoothd(self, experimental: bool = True) -> None:
        self._dirty = True
        await asyncio.to_thread(self.guest.start_bluetoothd, experimental)

    async def advertise_repeating(self, advert: Advert, interval: float) -> None:
        """btvirt's -L controllers have no extended advertising: restart it dual-mode
        (:meth:`reset` puts -L back), then an extended set on hci1 at ``interval``."""
        self._dirty = self._dual_mode = True
        await asyncio.to_thread(self._restart_btvirt, "-l2")
        units = f"{round(interval / ADV_INTERVAL_UNIT):#x}"
        for args in (
            ("add-ext-adv-params", "-c", "-r", units, "-x", units, "1"),
            ("add-ext-adv-data", "-d", advert.ad_bytes().hex(), "1"),
        ):
            await asyncio.to_thread(lambda a=args: self.guest.btmgmt(*a).check())

    def _restart_btvirt(self, *args: str) -> None:
        """btvirt ``args`` in place of the running one; back when bluetoothd has
        every new controller powered (``-l<n>``: hci0 to hci<n-1>)."""
        import time

        from tests.realbluez.vm import BLUETOOTHD_TIMEOUT

        count = int(next(a for a in args if a.startswith("-l"))[2:])
        last = f"/sys/class/bluetooth/hci{count - 1}"
        # Every old controller gone first, so that the new ones take hci0 onwards.
        script = (
            "kill $(pidof btvirt); while ls /sys/class/bluetooth | grep -q hci; do sleep 0.05; done;"
            f" setsid btvirt {' '.join(args)} >/dev/null 2>&1 </dev/null &"
            f" while [ ! -e {last} ]; do sleep 0.05; done"
        )
        names = tuple(f"hci{i}" for i in range(count))
        # Under load a controller can miss its setup (HCI_INIT_TIMEOUT) and never
        # reach bluetoothd; btvirt again then, as guest/agent.py does at boot.
        for attempt in range(BTVIRT_ATTEMPTS):
            self.guest.run("sh", "-c", script).check()
            try:
                self.guest.wait_for_adapters(names, deadline=time.monotonic() + BLUETOOTHD_TIMEOUT)
                return
            except GuestError:
                if attempt == BTVIRT_ATTEMPTS - 1:
                    raise

    def mark_dirty(self) -> None:
        """A test changed adapter state by hand (btmgmt): :meth:`reset` restarts bluetoothd."""
        self._dirty = True

    async def reset(self, two_listeners: bool = False) -> None:
        if await asyncio.to_thread(self._reset, two_listeners):
            await self._wait_until_scanning_is_possible()

    def _reset(self, two_listeners: bool) -> bool:
        """True if bluetoothd was restarted."""
        import time

        from tests.realbluez.vm import BLUETOOTHD_TIMEOUT

        if self._dual_mode or self._three != two_listeners:
            # Three LE controllers on btvirt's one radio for two listeners: the
            # radio hands an advertisement to every scanning controller
            # (emulator/btdev.c), so hci0 and hci1 both hear hci2. Consecutive
            # tests of the scene keep it: btvirt is restarted only on a change.
            self._restart_btvirt("-L", "-l3" if two_listeners else "-l2")
            self._dual_mode, self._three = False, two_listeners
            self._advertiser_index = 2 if two_listeners else 1
            self._advertiser = self._read_advertiser_address()
            self.listeners = TWO_LISTENERS if two_listeners else (SCAN_ADAPTER,)
        self.guest.run("btmgmt", "--index", str(self._advertiser_index), "clr-adv")
        status = self.guest.control.request("bluetoothd_status")
        if self._dirty or not status.get("running") or not self.guest.experimental:
            self.guest.restart_bluetoothd(experimental=True)
            self._dirty = False
            return True
        self.guest.wait_for_adapters(deadline=time.monotonic() + BLUETOOTHD_TIMEOUT)
        return False

    async def _wait_until_scanning_is_possible(self) -> None:
        """A crashed bluetoothd leaves the kernel scanning for up to 10.24 s (InProgress)."""
        import time

        from dbus_fast import BusType, Message, MessageType
        from dbus_fast.aio import MessageBus

        bus = await asyncio.wait_for(
            MessageBus(bus_address=self.bus.address, bus_type=BusType.SYSTEM).connect(), 10
        )
        deadline = time.monotonic() + ORPHAN_SCAN_LIMIT
        try:
            while True:
                reply = await asyncio.wait_for(
                    bus.call(
                        Message(
                            destination="org.bluez",
                            path=f"/org/bluez/{SCAN_ADAPTER}",
                            interface="org.bluez.Adapter1",
                            member="StartDiscovery",
                        )
                    ),
                    10,
                )
                if reply is not None and reply.message_type == MessageType.METHOD_RETURN:
                    return  # our disconnect ends this session
                error = reply.error_name if reply is not None else None
                if error != "org.bluez.Error.InProgress" or time.monotonic() > deadline:
                    raise RuntimeError(f"hci0 cannot scan after a bluetoothd restart: {error}")
                await asyncio.sleep(0.5)
        finally:
            bus.disconnect()


def _device_found(btmon: str, adapter: str) -> set[str]:
    """``Device Found`` events for ``adapter`` in btmon's text, each once (btmon shows
    one per open control socket, with the same time stamp)."""
    return {
        line.split()[-1]
        for line in btmon.splitlines()
        if line.startswith("@ MGMT Event: Device Found") and f"[{adapter}]" in line
    }


def simulator_available() -> str | None:
    """None if the simulator can be used, else why not."""
    try:
        from ble_scanner.testing import simulator
    except ImportError as exc:
        return f"ble_scanner.testing.simulator cannot be imported: {exc}"
    if not hasattr(simulator, "BluezSimulator"):
        return "ble_scanner.testing.simulator has no BluezSimulator yet"
    return None


class SimulatorBackend(Backend):
    """The project's simulator, a fresh one per test (it lives on the test's event loop).

    Models BlueZ ``version`` ("5.66", "5.72", "head"). A crash leaves the
    kernel busy for :data:`SIM_ORPHAN_SCAN` seconds, as the real kernel does
    for up to 10.24 s (shortened so that the default suite stays fast), and a
    monitor with 8 or more patterns crashes it, as it crashes 5.66 and 5.82.
    """

    def __init__(self, bus: TestBus, version: str) -> None:
        self.bus = bus
        self.name = f"simulator-{version}"
        self.version = version
        major, _, minor = version.partition(".")
        self.bluez_version = (int(major), int(minor)) if minor.isdigit() else (5, 99)
        self.sim: Any = None
        self._reports: int | None = None
        self._reports_per_listener: dict[str, int] = {}

    @property
    def experimental(self) -> bool:  # type: ignore[override]
        return bool(self.sim is not None and self.sim.experimental)

    @property
    def advertiser_address(self) -> str:
        return SIM_THIRD_ADDRESS if self.listeners == TWO_LISTENERS else SIM_ADVERTISER_ADDRESS

    async def advertise(self, advert: Advert, *, connectable: bool = True) -> None:
        if connectable:
            address, address_type = self.advertiser_address, "public"
        else:
            # Like the kernel: non-connectable advertising gets a fresh random address.
            raw = bytearray(os.urandom(6))
            raw[0] |= 0xC0  # static random
            address, address_type = ":".join(f"{b:02X}" for b in raw), "random"
        if self.sim._server is None:
            return  # bluetoothd is down: nobody hears it
        two = self.listeners == TWO_LISTENERS
        for listener in self.listeners:
            reached = await self.sim.advertise(
                listener,
                address,
                address_type=address_type,
                name=advert.name,
                manufacturer_data=advert.manufacturer_data or None,
                service_data=advert.service_data or None,
                flags=advert.flags,
                connectable=connectable,
                **({"rssi": SIM_LISTENER_RSSI[listener]} if two else {}),
            )
            if reached and self._reports is not None:
                self._reports_per_listener[listener] = (
                    self._reports_per_listener.get(listener, 0) + 1
                )
                if listener == SCAN_ADAPTER:
                    self._reports += 1

    async def advertise_repeating(self, advert: Advert, interval: float) -> None:
        from ble_scanner.testing.simulator.report import Report

        report = Report.build(
            SIM_ADVERTISER_ADDRESS,
            name=advert.name,
            manufacturer_data=advert.manufacturer_data or None,
            service_data=advert.service_data or None,
            flags=advert.flags,
        )

        def factory() -> Report:  # called for each report the radio delivers
            if self._reports is not None:
                self._reports += 1
            return report

        self.sim.add_advertiser(SCAN_ADAPTER, SIM_ADVERTISER_ADDRESS, interval, factory)

    async def count_reports(self) -> None:
        self._reports = 0
        self._reports_per_listener = dict.fromkeys(self.listeners, 0)

    async def reports_so_far(self) -> int:
        return self._reports or 0

    async def reports_counted(self) -> int:
        counted, self._reports = self._reports or 0, None
        return counted

    async def reports_counted_per_listener(self) -> dict[str, int]:
        self._reports = None
        return dict(self._reports_per_listener)

    async def stop_advertising(self) -> None:
        pass  # the simulator reports only when told to

    async def connect(self, bus: Any) -> None:
        self.sim.set_connected(SCAN_ADAPTER, SIM_ADVERTISER_ADDRESS, True)

    async def disconnect(self, bus: Any) -> None:
        self.sim.set_connected(SCAN_ADAPTER, SIM_ADVERTISER_ADDRESS, False)

    async def kill_bluetoothd(self) -> None:
        await self.sim.stop_bluetoothd(graceful=False)  # a crash: the connection just drops

    async def start_bluetoothd(self, experimental: bool = True) -> None:
        await self.sim.start_bluetoothd(experimental)

    async def restart_bluetoothd(self, experimental: bool = True) -> None:
        await self.sim.stop_bluetoothd(graceful=True)
        await self.sim.start_bluetoothd(experimental)

    def service_config(self, config: ScannerConfig) -> ScannerConfig:
        """The suite's ingest (tests/ingest.py): the simulator serves the seam for it."""
        return ingest.config(self.bus.address, config)

    async def reset(self, two_listeners: bool = False) -> None:
        from ble_scanner.testing.simulator import BluezSimulator
        from ble_scanner.testing.simulator.const import MONITOR_CRASH_PATTERNS

        await self.teardown()
        self.listeners = TWO_LISTENERS if two_listeners else (SCAN_ADAPTER,)
        self.sim = BluezSimulator(
            self.bus.address,
            version=self.version,
            orphan_scan=SIM_ORPHAN_SCAN,
            monitor_crash_patterns=MONITOR_CRASH_PATTERNS,
            mgmt_socket=ingest.sim_mgmt_socket(self.bus.address),
        )
        await self.sim.start()
        # LE-only, as btvirt -L makes them: Transport=le is then the scan type.
        await self.sim.add_adapter(SCAN_ADAPTER, address="00:AA:01:00:00:00", le_only=True)
        await self.sim.add_adapter(
            ADVERTISING_ADAPTER, address=SIM_ADVERTISER_ADDRESS, le_only=True
        )
        if two_listeners:  # hci1 listens too; the advertiser is a third adapter
            await self.sim.add_adapter(
                TWO_LISTENER_ADVERTISER, address=SIM_THIRD_ADDRESS, le_only=True
            )

    async def teardown(self) -> None:
        if self.sim is not None:
            await self.sim.stop()
            self.sim = None


# The real kernel keeps a crashed bluetoothd's scan for up to 10.24 s; the
# simulator backends use a second, enough to take the same InProgress path.
SIM_ORPHAN_SCAN = 1.0
GUEST_SUITES = ("bookworm", "trixie")
# Always part of the default (non-bluez) run: Debian's bookworm version and Venus's.
DEFAULT_SIMULATOR_VERSIONS = ("5.66", "5.72")


@dataclass(frozen=True)
class BackendChoice:
    """One value of the ``backend`` parameter: which backend, and whether it needs a guest."""

    name: str  # "bookworm", "trixie", "simulator-5.66", ...
    guest: bool

    @property
    def simulator_version(self) -> str:
        return self.name.removeprefix("simulator-")


def selected_backends() -> list[BackendChoice]:
    """The backends this run parametrizes over.

    Guests come from BLE_SCANNER_BLUEZ_SUITES (default ``bookworm,trixie``) and
    carry the ``bluez`` marker. The simulator modelling 5.66 and 5.72 is always
    there, unmarked, so the scenarios run in the default suite too. Naming
    ``simulator`` (BLE_SCANNER_SIM_VERSION, default 5.72) or ``simulator-<version>``
    in BLE_SCANNER_BLUEZ_SUITES adds it to ``-m bluez`` runs as well.
    """
    raw = os.environ.get("BLE_SCANNER_BLUEZ_SUITES", ",".join(GUEST_SUITES))
    names = [name.strip() for name in raw.split(",") if name.strip()]
    chosen: list[BackendChoice] = []
    for name in names:
        if name == "simulator":
            name = "simulator-" + os.environ.get("BLE_SCANNER_SIM_VERSION", "5.72")
        if not name.startswith("simulator-") and name not in GUEST_SUITES:
            raise ValueError(f"BLE_SCANNER_BLUEZ_SUITES: unknown backend {name!r}")
        chosen.append(BackendChoice(name, guest=not name.startswith("simulator-")))
    return chosen
