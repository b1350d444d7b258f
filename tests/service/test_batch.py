"""Batched subscriptions on the real bus (Subscribe's Batch, BatchWindow, ChangedKeysOnly).

Reports come from the simulator on the suite's ingest (tests/ingest.py); the
client is a plain dbus-fast connection reading DevicesDiscovered as any
program would. One connection holds every subscription of a test: the bus
daemon keeps one sender's messages in order to one receiver, so once the last
signal of one subscription has arrived, those sent before it to another have
too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

import pytest
import pytest_asyncio
from dbus_fast import Message, Variant
from dbus_fast.aio import MessageBus

from ble_scanner import main
from ble_scanner.bus import batches
from ble_scanner.bus.writer import guard_writer
from ble_scanner.config import ScannerConfig
from ble_scanner.const import ERROR_INVALID_ARGS, SCANNER_INTERFACE
from ble_scanner.main import ScannerApp
from ble_scanner.testing.simulator import BluezSimulator, Report
from ble_scanner.testing.testbus import TestBus
from tests import ingest
from tests.conftest import start_scanner, wait_scanning
from tests.helpers import SignalRecorder, assert_error, assert_ok, scanner_call, wait_until
from tests.reliability.test_load import burst, shrink_send_buffer
from tests.service.conftest import watch_broadcast

ADAPTER: Final = "hci0"
RUUVI_ID: Final = 0x0499
DEVICES: Final = [f"C0:11:22:33:44:{i:02X}" for i in range(5)]
# A window far longer than a loaded machine takes to pass PACED reports through.
WINDOW: Final = 1.0
PACED: Final = 4
# Replay split into signals of this many items (the real bound is 1 024).
REPLAY_SIGNAL_ITEMS: Final = 8
REPLAYED: Final = 20
# The burst on a full bus: tests/reliability/test_load.py's budget (the real one is
# 4 MiB), as many devices, every report news.
SMALL_BUDGET: Final = 64 * 1024
BURST_ADDRESSES: Final = [f"C0:00:00:00:00:{i:02X}" for i in range(200)]
BURST_ROUNDS: Final = 50
# Held batches given room for a shorter burst (16 times the small budget: 1 MiB,
# five times its changed-keys items), while its one-per-report signals overflow
# the budget itself.
ROOMY_HOLD_SHARE: Final = 16.0
ROOMY_ROUNDS: Final = 10


class Received(SignalRecorder):
    """Every Scanner1 signal this connection gets, per path, in arrival order."""

    def __init__(self, bus: MessageBus) -> None:
        super().__init__(bus, interface=SCANNER_INTERFACE)

    def signals(self, path: str, member: str = "DevicesDiscovered") -> list[Message]:
        return [m for m in self.messages if m.path == path and m.member == member]

    def items(self, path: str) -> list[tuple[str, dict[str, Variant]]]:
        """Every DevicesDiscovered item from ``path``, in order: (address, keys)."""
        return [(item[0], item[1]) for m in self.signals(path) for item in m.body[0]]

    def counters(self, path: str) -> dict[str, list[int]]:
        """Per device, the counters its items carried (ManufacturerData), in order."""
        out: dict[str, list[int]] = {}
        for address, keys in self.items(path):
            if "ManufacturerData" in keys:
                data = keys["ManufacturerData"].value[RUUVI_ID]
                out.setdefault(address, []).append(int.from_bytes(data, "little"))
        return out


def reading(address: str, counter: int, rssi: int = -60) -> Report:
    """A Ruuvi-like report whose payload carries a counter: every one is news."""
    return Report(address, rssi=rssi, manufacturer_data={RUUVI_ID: counter.to_bytes(4, "little")})


async def subscribe(bus: MessageBus, **options: Variant) -> str:
    reply = await scanner_call(bus, "Subscribe", "a{sv}", [options])
    path: str = assert_ok(reply)[0]
    return path


def batched(**more: Variant) -> dict[str, Variant]:
    return {
        "Batch": Variant("b", True),
        "AllReports": Variant("b", True),
        "Replay": Variant("b", False),
        **more,
    }


async def test_a_report_at_a_low_rate_is_one_item_sent_at_once(
    scanner: ScannerApp, bluez: BluezSimulator, bus: MessageBus
) -> None:
    got = Received(bus)
    path = await subscribe(bus, **batched())
    for counter in range(3):
        bluez.advertise_report(ADAPTER, reading(DEVICES[0], counter))
        # Nothing else is reported until this one's signal is here: it waits for no other.
        await wait_until(lambda n=counter: len(got.signals(path)) == n + 1, what="its signal")  # type: ignore[misc]
    assert [len(m.body[0]) for m in got.signals(path)] == [1, 1, 1]
    assert got.counters(path) == {DEVICES[0]: [0, 1, 2]}
    address, record = got.items(path)[0]
    assert address == DEVICES[0]
    assert record["Address"].value == DEVICES[0]
    assert record["Rssi"].value == -60
    assert not got.signals(path, "DeviceDiscovered")


async def test_one_per_report_subscribers_and_the_broadcast_get_what_they_got_before(
    scanner: ScannerApp, bluez: BluezSimulator, bus: MessageBus
) -> None:
    """Beside a batched subscriber: DeviceDiscovered per report to the others, the
    broadcast's first sighting from /, and no DevicesDiscovered to either."""
    await watch_broadcast(bus)
    got = Received(bus)
    batched_path = await subscribe(bus, **batched(ChangedKeysOnly=Variant("b", True)))
    one_each = await subscribe(bus, AllReports=Variant("b", True), Replay=Variant("b", False))
    for counter in range(3):
        bluez.advertise_report(ADAPTER, reading(DEVICES[0], counter))
    await wait_until(lambda: len(got.items(batched_path)) == 3, what="the batched items")
    await wait_until(
        lambda: len(got.signals(one_each, "DeviceDiscovered")) == 3, what="one signal each"
    )
    records = [m.body for m in got.signals(one_each, "DeviceDiscovered")]
    assert [body[0] for body in records] == [DEVICES[0]] * 3
    assert all("Address" in body[1] for body in records)  # full records, as always
    assert got.signals("/", "DeviceDiscovered")  # the first sighting, at once
    assert not got.signals("/") and not got.signals(one_each)


async def test_a_burst_is_few_signals_with_every_report_in_order_per_device(
    scanner: ScannerApp, bluez: BluezSimulator, bus: MessageBus
) -> None:
    got = Received(bus)
    path = await subscribe(bus, **batched())
    one_each = await subscribe(bus, AllReports=Variant("b", True), Replay=Variant("b", False))
    rounds = 100
    for counter in range(rounds):
        for address in DEVICES:
            bluez.advertise_report(ADAPTER, reading(address, counter))
    total = rounds * len(DEVICES)
    await bluez.drain()
    await wait_until(
        lambda: len(got.signals(one_each, "DeviceDiscovered")) == total, what="every report"
    )
    await wait_until(lambda: len(got.items(path)) == total, what="every item")
    assert got.counters(path) == {address: list(range(rounds)) for address in DEVICES}
    signals = len(got.signals(path))
    assert signals <= total // 5, f"{signals} signals for {total} reports"


async def test_a_batch_window_gathers_what_comes_within_it(
    scanner: ScannerApp, bluez: BluezSimulator, bus: MessageBus
) -> None:
    got = Received(bus)
    path = await subscribe(bus, **batched(BatchWindow=Variant("d", WINDOW)))
    one_each = await subscribe(bus, AllReports=Variant("b", True), Replay=Variant("b", False))
    for counter in range(PACED):
        bluez.advertise_report(ADAPTER, reading(DEVICES[0], counter))
        # The one-per-report subscriber has each before the next is sent: the
        # reports reach the service in separate wake-ups, well within the window.
        await wait_until(
            lambda n=counter: len(got.signals(one_each, "DeviceDiscovered")) == n + 1,  # type: ignore[misc]
            what="the report through the service",
        )
    await wait_until(lambda: len(got.items(path)) == PACED, timeout=5, what="the window's batch")
    assert len(got.signals(path)) == 1
    assert got.counters(path) == {DEVICES[0]: list(range(PACED))}


async def test_changed_keys_only_items_carry_what_changed_after_a_full_first(
    scanner: ScannerApp, bluez: BluezSimulator, bus: MessageBus
) -> None:
    got = Received(bus)
    path = await subscribe(bus, **batched(ChangedKeysOnly=Variant("b", True)))
    full = await subscribe(bus, **batched())
    steps = [
        reading(DEVICES[0], 1),
        reading(DEVICES[0], 2),  # a new reading, the same RSSI
        reading(DEVICES[0], 2, rssi=-70),  # the same reading, a new RSSI
        replace(reading(DEVICES[0], 2, rssi=-70), name="Ruuvi 1234"),
    ]
    for n, report in enumerate(steps, 1):
        bluez.advertise_report(ADAPTER, report)
        await wait_until(lambda n=n: len(got.items(full)) == n, what="the report")  # type: ignore[misc]
    items = got.items(path)
    first = items[0][1]
    assert set(first) == set(got.items(full)[0][1])  # the full record
    assert [set(keys) for _, keys in items[1:]] == [
        {"ManufacturerData", "LastSeen"},
        {"LastSeen", "Rssi"},
        {"Name", "LastSeen"},
    ]
    merged = dict(first)
    for _, keys in items[1:]:
        merged.update(keys)
    assert merged == got.items(full)[-1][1]


@pytest_asyncio.fixture
async def one_device(test_bus: TestBus, bluez: BluezSimulator) -> AsyncIterator[ScannerApp]:
    """The service with a cache of one device: hearing another loses the first at once
    (the cache bound's DeviceLost, docs/dbus-api.md), within the same wake-up."""
    app = await start_scanner(test_bus, ScannerConfig(cache_size=1))
    try:
        await wait_scanning(app, bluez)
        yield app
    finally:
        await app.stop()


def members(got: Received, path: str) -> list[tuple[str, list[str]]]:
    """Each signal from ``path``: its member and the addresses it carries, in order."""
    return [
        (str(m.member), [i[0] for i in m.body[0]] if m.member == "DevicesDiscovered" else m.body)
        for m in got.messages
        if m.path == path
    ]


async def test_device_lost_follows_the_items_gathered_before_it(
    one_device: ScannerApp, bluez: BluezSimulator, bus: MessageBus
) -> None:
    """A window still open when a device is lost is sent first: order per device holds."""
    got = Received(bus)
    path = await subscribe(bus, **batched(BatchWindow=Variant("d", WINDOW)))
    bluez.advertise_report(ADAPTER, reading(DEVICES[0], 0))
    bluez.advertise_report(ADAPTER, reading(DEVICES[1], 0))  # evicts the first
    await wait_until(lambda: bool(got.signals(path, "DeviceLost")), what="the first lost")
    first = members(got, path)
    assert first[0][0] == "DevicesDiscovered" and first[0][1][0] == DEVICES[0]
    assert first[-1] == ("DeviceLost", [DEVICES[0]])


async def test_after_device_lost_the_next_item_is_the_full_record(
    one_device: ScannerApp, bluez: BluezSimulator, bus: MessageBus
) -> None:
    got = Received(bus)
    path = await subscribe(bus, **batched(ChangedKeysOnly=Variant("b", True)))
    steps = [(DEVICES[0], 0), (DEVICES[0], 1), (DEVICES[1], 0), (DEVICES[0], 2)]
    for n, (address, counter) in enumerate(steps, 1):
        bluez.advertise_report(ADAPTER, reading(address, counter))
        await wait_until(lambda n=n: len(got.items(path)) == n, what="the item")  # type: ignore[misc]
    await wait_until(lambda: len(got.signals(path, "DeviceLost")) == 2, what="both lost")
    a, b = DEVICES[0], DEVICES[1]
    # Each device's report evicts the other, and its own item goes out before that loss.
    assert members(got, path) == [
        ("DevicesDiscovered", [a]),
        ("DevicesDiscovered", [a]),
        ("DevicesDiscovered", [b]),
        ("DeviceLost", [a]),
        ("DevicesDiscovered", [a]),
        ("DeviceLost", [b]),
    ]
    first, second, other, again = (set(keys) for _, keys in got.items(path))
    assert first == other == again and "Address" in again  # full records
    assert second == {"ManufacturerData", "LastSeen"}


async def test_replay_comes_as_full_records_in_signals_of_bounded_size(
    scanner: ScannerApp,
    bluez: BluezSimulator,
    bus: MessageBus,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(batches, "MAX_ITEMS_PER_SIGNAL", REPLAY_SIGNAL_ITEMS)
    addresses = [f"C0:11:22:33:55:{i:02X}" for i in range(REPLAYED)]
    for i, address in enumerate(addresses):
        bluez.advertise_report(ADAPTER, reading(address, i))
    await bluez.drain()
    await wait_until(lambda: len(scanner.hub.cache) == REPLAYED, what="every device cached")  # type: ignore[union-attr]
    got = Received(bus)
    options = batched(ChangedKeysOnly=Variant("b", True), Replay=Variant("b", True))
    path = await subscribe(bus, **options)
    await wait_until(lambda: len(got.items(path)) == REPLAYED, what="the replay")
    sizes = [len(m.body[0]) for m in got.signals(path)]
    assert sizes == [REPLAY_SIGNAL_ITEMS] * (REPLAYED // REPLAY_SIGNAL_ITEMS) + [
        REPLAYED % REPLAY_SIGNAL_ITEMS
    ]
    assert all("Address" in keys for _, keys in got.items(path))  # full records
    assert sorted(address for address, _ in got.items(path)) == addresses
    # The next item of a replayed device is what changed since the replay.
    bluez.advertise_report(ADAPTER, reading(addresses[0], 1000))
    await wait_until(lambda: len(got.items(path)) == REPLAYED + 1, what="the next report")
    assert "Address" not in got.items(path)[-1][1]


async def test_an_item_names_the_keys_gone_in_removed(
    test_bus: TestBus, bluez: BluezSimulator, bus: MessageBus, tmp_path: Path
) -> None:
    """A device restored from the state file is Restored until heard again: then the
    key is gone, and a changed-keys item says so."""
    state = str(tmp_path / "state")
    first = ScannerApp(
        ingest.config(test_bus.address), bus_address=test_bus.address, state_file=state
    )
    assert await first.start() == 0
    try:
        await wait_scanning(first, bluez)
        bluez.advertise_report(ADAPTER, reading(DEVICES[0], 1))
        await wait_until(lambda: DEVICES[0] in first.hub.cache, what="cached")  # type: ignore[union-attr]
    finally:
        await first.stop()
    second = ScannerApp(
        ingest.config(test_bus.address), bus_address=test_bus.address, state_file=state
    )
    assert await second.start() == 0
    try:
        await wait_scanning(second, bluez)
        got = Received(bus)
        options = batched(ChangedKeysOnly=Variant("b", True), Replay=Variant("b", True))
        path = await subscribe(bus, **options)
        await wait_until(lambda: bool(got.items(path)), what="the replay")
        assert got.items(path)[0][1]["Restored"].value is True
        bluez.advertise_report(ADAPTER, reading(DEVICES[0], 2))
        await wait_until(lambda: len(got.items(path)) == 2, what="heard again")
        heard = got.items(path)[1][1]
        assert heard["Removed"].value == ["Restored"]
        assert "Restored" not in heard and "ManufacturerData" in heard
    finally:
        await second.stop()


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"Batch": Variant("s", "yes")}, "Batch"),
        ({"Batch": Variant("b", True), "BatchWindow": Variant("d", 2.0)}, "BatchWindow"),
        ({"BatchWindow": Variant("d", 0.5)}, "BatchWindow"),
        ({"ChangedKeysOnly": Variant("b", True)}, "ChangedKeysOnly"),
    ],
)
async def test_invalid_batch_options_are_invalid_args_naming_the_key_and_change_nothing(
    scanner: ScannerApp,
    bluez: BluezSimulator,
    bus: MessageBus,
    options: dict[str, Variant],
    key: str,
) -> None:
    got = Received(bus)
    path = await subscribe(bus, **batched())
    reply = await scanner_call(bus, "Subscribe", "a{sv}", [options])
    assert_error(reply, ERROR_INVALID_ARGS)
    assert f"Subscribe: {key}:" in reply.body[0]
    assert scanner.status().subscriptions == 1
    bluez.advertise_report(ADAPTER, reading(DEVICES[0], 0))
    await wait_until(lambda: bool(got.items(path)), what="the existing subscription's item")
    assert len(got.messages) == 1


async def test_unsubscribe_sends_what_the_window_gathered_before_the_reply(
    scanner: ScannerApp, bluez: BluezSimulator, bus: MessageBus
) -> None:
    got = Received(bus)
    path = await subscribe(bus, **batched(BatchWindow=Variant("d", 1.0)))
    one_each = await subscribe(bus, AllReports=Variant("b", True), Replay=Variant("b", False))
    bluez.advertise_report(ADAPTER, reading(DEVICES[0], 0))
    await wait_until(lambda: bool(got.signals(one_each, "DeviceDiscovered")), what="the report")
    assert not got.signals(path)  # the window is open
    assert_ok(await scanner_call(bus, "Unsubscribe", "o", [path]))
    assert len(got.items(path)) == 1  # arrived before the reply


async def burst_on_a_full_bus(
    test_bus: TestBus,
    bluez: BluezSimulator,
    bus: MessageBus,
    monkeypatch: pytest.MonkeyPatch,
    budget: int,
    rounds: int,
    **options: Variant,
) -> tuple[ScannerApp, Received, str, str, int]:
    """The service on a tiny send buffer and a small write budget (as in
    tests/reliability/test_load.py), a batched subscriber with ``options`` and a
    one-per-report one, and a burst of every-report-news; returns (app, what the
    client got, the batched path, the one-per-report path, reports sent)."""
    monkeypatch.setattr(main, "guard_writer", lambda b: guard_writer(b, budget))
    app = await start_scanner(test_bus)
    await wait_scanning(app, bluez)
    assert app.bus is not None and app.writer is not None and app.hub is not None
    assert app.signals is not None
    shrink_send_buffer(app.bus)
    got = Received(bus)
    path = await subscribe(bus, **batched(**options))
    one_each = await subscribe(bus, AllReports=Variant("b", True), Replay=Variant("b", False))
    reports = [reading(a, i) for i in range(rounds) for a in BURST_ADDRESSES]
    await burst(bluez, reports)
    total = len(reports)
    guard, stats, held = app.writer, app.hub.stats, app.signals.batches
    await wait_until(
        lambda: stats.reports == total and guard.backlog_bytes == 0 and not held.held_bytes,
        timeout=60,
        what=f"{total} reports handled and written",
    )
    return app, got, path, one_each, total


async def test_under_back_pressure_a_batch_grows_where_one_per_report_is_shed(
    test_bus: TestBus, bluez: BluezSimulator, bus: MessageBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batches, "HOLD_SHARE", ROOMY_HOLD_SHARE)
    monkeypatch.setattr(batches, "HOLD_TOTAL_SHARE", ROOMY_HOLD_SHARE)
    app, got, path, one_each, total = await burst_on_a_full_bus(
        test_bus,
        bluez,
        bus,
        monkeypatch,
        SMALL_BUDGET,
        ROOMY_ROUNDS,
        ChangedKeysOnly=Variant("b", True),
    )
    try:
        assert app.writer is not None
        shed = app.writer.shed
        await wait_until(
            lambda: (
                len(got.items(path)) == total
                and len(got.signals(one_each, "DeviceDiscovered")) + shed >= total
            ),
            timeout=30,
            what="every item, and every signal not shed",
        )
        assert shed > 0, "the budget was never reached: the test shows nothing"
        assert app.signals is not None and app.signals.batches.peak_held_bytes > 0
        status = assert_ok(await scanner_call(bus, "GetStatus"))[0]
        # Counted for the subscription whose signals were shed; none for the batched one.
        received = len(got.signals(one_each, "DeviceDiscovered"))
        assert status["SubscriptionsShed"].value == {one_each: total - received}
        counters = got.counters(path)
        assert counters == {
            address: sorted(counters[address]) for address in counters
        }  # in order per device
        assert sum(len(c) for c in counters.values()) == total
    finally:
        await app.stop()


async def test_past_its_bound_a_held_batch_sheds_and_counts_per_subscription(
    test_bus: TestBus, bluez: BluezSimulator, bus: MessageBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    app, got, path, _, total = await burst_on_a_full_bus(
        test_bus,
        bluez,
        bus,
        monkeypatch,
        SMALL_BUDGET,
        BURST_ROUNDS,
        ChangedKeysOnly=Variant("b", True),
    )
    try:
        status = assert_ok(await scanner_call(bus, "GetStatus"))[0]
        shed = status["SubscriptionsShed"].value.get(path, 0)
        assert shed > 0, "the hold bound was never reached: the test shows nothing"
        assert status["Shed"].value >= shed
        await wait_until(lambda: len(got.items(path)) + shed == total, what="every item not shed")
        # A device whose item was shed gets its full record next: the client's
        # merged records match the service's after one more report each.
        for address in BURST_ADDRESSES:
            bluez.advertise_report(ADAPTER, reading(address, BURST_ROUNDS))
        await wait_until(
            lambda: len(got.items(path)) + shed == total + len(BURST_ADDRESSES),
            what="one more item each",
        )
        merged: dict[str, dict[str, Any]] = {}
        for address, keys in got.items(path):
            held = merged.setdefault(address, {})
            for key in keys.pop("Removed", Variant("as", [])).value:
                del held[key]
            held.update({k: v.value for k, v in keys.items()})
        snapshot = assert_ok(await scanner_call(bus, "GetDiscoveredDevices", "a{sv}", [{}]))[0]
        assert merged == {
            address: {k: v.value for k, v in record.items()} for address, record in snapshot.items()
        }
        assert app.tree is not None
        app.tree.refresh()
        assert f"{path}: {shed}" in str(app.tree.tree["/Stats/SubscriptionsShed"]).split(", ")
    finally:
        await app.stop()
