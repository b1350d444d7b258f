"""BroadcastInterval on the real bus: the broadcast at most once a second per device,
subscribers every change, 0 as before, live through localsettings, DeviceLost at once.

One client connection both watches the broadcast and holds the subscriptions:
the bus daemon keeps one sender's messages in order to one receiver, so once a
subscriber has the last report's signal, any broadcast of that report has
arrived too. That is the synchronisation; the only sleeps pace the advertiser.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from ble_scanner import main
from ble_scanner.bus.writer import guard_writer
from ble_scanner.config import ScannerConfig, config_from_args
from ble_scanner.main import ScannerApp, build_parser
from ble_scanner.testing.localsettings import LocalSettingsStandIn
from ble_scanner.testing.simulator import BluezSimulator
from ble_scanner.testing.testbus import TestBus
from tests.conftest import start_scanner, wait_scanning
from tests.helpers import assert_ok, scanner_call, wait_until
from tests.reliability.test_load import DEVICES as BURST_DEVICES
from tests.reliability.test_load import burst, reports, shrink_send_buffer
from tests.service.conftest import watch_broadcast

RUUVI = "C0:11:22:33:44:05"
RUUVI_ID = 0x0499
# A sensor whose every advertisement is new (Ruuvi's measurement counter), at 20 Hz.
PERIOD = 0.05
# Seconds of reports in the rate test: long enough that a broadcast at every
# change (60) and one a second (4) are far apart.
WINDOW = 3.0
# A busy 2-core machine may deliver a broadcast late, so that two land in one
# second of reception time: one more than the arithmetic is tolerated.
TOLERANCE = 1
# A write budget the burst below must reach (the real one is 4 MB): ~250 signals.
SMALL_BUDGET = 64 * 1024


class Signals:
    """Every DeviceDiscovered/DeviceLost this connection receives, with its path."""

    def __init__(self, bus: MessageBus) -> None:
        self.messages: list[Message] = []
        bus.add_message_handler(self._on_message)

    def _on_message(self, msg: Message) -> bool:
        if msg.message_type == MessageType.SIGNAL and msg.member in (
            "DeviceDiscovered",
            "DeviceLost",
        ):
            self.messages.append(msg)
        return False

    def on(self, path: str, member: str = "DeviceDiscovered") -> list[int]:
        """The counter values (or, for DeviceLost, 0s) of ``member`` signals from ``path``."""
        return [
            _counter(m.body) if member == "DeviceDiscovered" else 0
            for m in self.messages
            if m.path == path and m.member == member
        ]

    def members(self, path: str) -> list[str]:
        return [str(m.member) for m in self.messages if m.path == path]


def _counter(body: list[Any]) -> int:
    record: dict[str, Variant] = body[1]
    data: bytes = record["ManufacturerData"].value[RUUVI_ID]
    return int.from_bytes(data, "little")


async def subscribe(bus: MessageBus, **options: Variant) -> str:
    flt = {"Addresses": Variant("as", [RUUVI]), "Replay": Variant("b", False), **options}
    (path,) = assert_ok(await scanner_call(bus, "Subscribe", "a{sv}", [flt]))
    return str(path)


async def report(bluez: BluezSimulator, value: int) -> None:
    """One advertisement, on the socket before the next (the simulator, like gdbus,
    would fold two changes of one main-loop iteration into one signal)."""
    assert await bluez.advertise(
        "hci0", RUUVI, manufacturer_data={RUUVI_ID: value.to_bytes(4, "little")}
    )
    await bluez.drain()


async def counter_for(
    app: ScannerApp, bluez: BluezSimulator, bus: MessageBus, seconds: float
) -> tuple[Signals, str, str, int, float]:
    """A counter advertised every PERIOD for ``seconds``, a plain and an AllReports
    subscriber watching; returns when both have the last value."""
    await wait_scanning(app, bluez)
    await watch_broadcast(bus)
    signals = Signals(bus)
    plain = await subscribe(bus)
    every = await subscribe(bus, AllReports=Variant("b", True))
    loop = asyncio.get_running_loop()
    start = loop.time()
    value = 0
    while loop.time() - start < seconds:
        await report(bluez, value)
        value += 1
        await asyncio.sleep(PERIOD)  # pacing the advertiser, not waiting for anything
    took = loop.time() - start
    last = value - 1
    await wait_until(
        lambda: last in signals.on(plain) and last in signals.on(every),
        timeout=10,
        what="the subscribers' last report",
    )
    return signals, plain, every, last, took


async def test_a_counter_is_broadcast_once_a_second_and_subscribers_get_every_report(
    test_bus: TestBus, bluez: BluezSimulator, bus: MessageBus
) -> None:
    app = await start_scanner(test_bus)
    try:
        assert app.config.broadcast_interval == 1.0
        signals, plain, every, last, took = await counter_for(app, bluez, bus, WINDOW)
        values = list(range(last + 1))
        assert signals.on(plain) == values  # every change, in order
        assert signals.on(every) == values  # every report
        # The last change is not lost: it is broadcast when its interval ends.
        await wait_until(
            lambda: bool(signals.on("/")) and signals.on("/")[-1] == last,
            timeout=1.0 + 5.0,
            what="the broadcast of the last reading",
        )
        broadcast = signals.on("/")
        # The first sighting, then one per second while the readings change.
        most = 1 + int(took / app.config.broadcast_interval) + 1 + TOLERANCE
        assert 2 <= len(broadcast) <= most, (len(broadcast), took, broadcast)
        assert broadcast == sorted(broadcast)  # always a newer reading
        assert len(broadcast) < len(values) / 5  # not the every-change broadcast
    finally:
        await app.stop()


async def test_broadcast_interval_0_from_the_command_line_broadcasts_every_change(
    test_bus: TestBus, bluez: BluezSimulator, bus: MessageBus
) -> None:
    config = config_from_args(build_parser().parse_args(["--broadcast-interval", "0"]))
    assert config == ScannerConfig(broadcast_interval=0.0)
    app = await start_scanner(test_bus, config)
    try:
        signals, plain, _every, last, _took = await counter_for(app, bluez, bus, 1.0)
        assert signals.on("/") == signals.on(plain) == list(range(last + 1))
    finally:
        await app.stop()


async def test_the_interval_follows_localsettings_live(
    test_bus: TestBus,
    bluez: BluezSimulator,
    bus: MessageBus,
    localsettings: LocalSettingsStandIn,
) -> None:
    path = "/Settings/BleScanner/BroadcastInterval"
    app = await start_scanner(test_bus)  # with localsettings
    try:
        assert localsettings.value(path) == 1.0  # created with its default
        await wait_scanning(app, bluez)
        await watch_broadcast(bus)
        signals = Signals(bus)
        plain = await subscribe(bus)

        assert localsettings.set_value(path, 60.0) == 0
        await wait_until(lambda: app.config.broadcast_interval == 60.0, what="60 s applied")
        for value in range(5):
            await report(bluez, value)
        await wait_until(lambda: 4 in signals.on(plain), what="the subscriber's fifth report")
        assert signals.on("/") == [0]  # the first sighting; the rest held for a minute

        assert localsettings.set_value(path, 0.0) == 0
        await wait_until(lambda: app.config.broadcast_interval == 0.0, what="0 applied")
        # The held reading goes out at once, and every change from now on.
        await wait_until(lambda: signals.on("/") == [0, 4], what="the held reading")
        for value in range(5, 10):
            await report(bluez, value)
        await wait_until(lambda: 9 in signals.on(plain), what="the subscriber's tenth report")
        assert signals.on("/") == [0, *range(4, 10)]

        assert localsettings.set_value(path, 75.0) != 0  # past the range's top: refused
        assert app.config.broadcast_interval == 0.0
    finally:
        await app.stop()


async def test_device_lost_is_not_held_and_drops_the_held_change(
    test_bus: TestBus, bluez: BluezSimulator, bus: MessageBus
) -> None:
    app = await start_scanner(test_bus, ScannerConfig(broadcast_interval=60.0, lost_timeout=2.0))
    try:
        await wait_scanning(app, bluez)
        await watch_broadcast(bus)
        signals = Signals(bus)
        plain = await subscribe(bus)
        await report(bluez, 0)
        await report(bluez, 1)  # held on the broadcast for a minute
        await wait_until(lambda: 1 in signals.on(plain), what="the subscriber's report")
        assert app.hub is not None and RUUVI in app.hub.broadcast.held
        # Lost after the 2 s lost timeout (and the 1 s sweep), not after the interval.
        await wait_until(
            lambda: "DeviceLost" in signals.members("/"), timeout=10, what="DeviceLost"
        )
        assert signals.members("/") == ["DeviceDiscovered", "DeviceLost"]
        assert signals.on("/") == [0]
        assert RUUVI not in app.hub.broadcast.held
        assert app.hub.next_due() is None
        await report(bluez, 2)  # back: a first sighting, at once
        await wait_until(lambda: 2 in signals.on(plain), what="the subscriber's report")
        assert signals.on("/") == [0, 2]
    finally:
        await app.stop()


async def test_status_answers_while_the_broadcast_holds(
    test_bus: TestBus, bluez: BluezSimulator, bus: MessageBus
) -> None:
    """Held devices are in snapshots in their latest state: the hold is the broadcast's only."""
    app = await start_scanner(test_bus, ScannerConfig(broadcast_interval=60.0))
    try:
        await wait_scanning(app, bluez)
        signals = Signals(bus)
        plain = await subscribe(bus)
        for value in range(3):
            await report(bluez, value)
        await wait_until(lambda: 2 in signals.on(plain), what="the subscriber's report")
        (devices,) = assert_ok(await scanner_call(bus, "GetDiscoveredDevices", "a{sv}", [{}]))
        assert _counter([RUUVI, devices[RUUVI]]) == 2
    finally:
        await app.stop()


@pytest.mark.slow
async def test_when_the_bus_falls_behind_the_broadcast_is_shed_before_subscribers(
    test_bus: TestBus, bluez: BluezSimulator, bus: MessageBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst on a tiny send buffer and a small write budget, every report news on
    both (interval 0): the broadcast loses signals first, the subscriber fewer."""
    monkeypatch.setattr(main, "guard_writer", lambda b: guard_writer(b, SMALL_BUDGET))
    app = await start_scanner(test_bus, ScannerConfig(broadcast_interval=0))
    try:
        await wait_scanning(app, bluez)
        assert app.bus is not None and app.writer is not None and app.hub is not None
        guard, stats = app.writer, app.hub.stats
        shrink_send_buffer(app.bus)
        await watch_broadcast(bus)
        counts: Counter[str] = Counter()

        def count(msg: Message) -> bool:
            if msg.message_type == MessageType.SIGNAL and msg.member == "DeviceDiscovered":
                counts["/" if msg.path == "/" else "subscription"] += 1
            return False

        bus.add_message_handler(count)
        reply = await scanner_call(bus, "Subscribe", "a{sv}", [{"AllReports": Variant("b", True)}])
        assert_ok(reply)
        batch = reports(BURST_DEVICES * 10)
        await burst(bluez, batch, 5)
        total = len(batch) * 5
        await wait_until(
            lambda: stats.reports == total and guard.backlog_bytes == 0,
            timeout=60,
            what=f"{total} reports handled and written",
        )
        # Every DeviceDiscovered is either delivered or counted as shed.
        await wait_until(
            lambda: counts["/"] + counts["subscription"] + guard.shed >= 2 * total,
            timeout=30,
            what="every signal not shed delivered",
        )
        assert guard.shed > 0, "the budget was never reached: the test shows nothing"
        lost = {key: total - counts[key] for key in ("/", "subscription")}
        assert lost["subscription"] < lost["/"], lost
    finally:
        await app.stop()
