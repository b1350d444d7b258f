"""Batched subscriptions on the real bus (Subscribe's Batch, BatchWindow, ChangedKeysOnly).

Reports come from the simulator on the suite's ingest (tests/ingest.py); the
client is a plain dbus-fast connection reading DevicesDiscovered as any
program would. One connection holds every subscription of a test: the bus
daemon keeps one sender's messages in order to one receiver, so once the last
signal of one subscription has arrived, those sent before it to another have
too.
"""

from __future__ import annotations

from typing import Final

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from ble_scanner.main import ScannerApp
from ble_scanner.testing.simulator import BluezSimulator, Report
from tests.helpers import assert_ok, scanner_call, wait_until

ADAPTER: Final = "hci0"
RUUVI_ID: Final = 0x0499
DEVICES: Final = [f"C0:11:22:33:44:{i:02X}" for i in range(5)]


class Received:
    """Every Scanner1 signal this connection gets, per path, in arrival order."""

    def __init__(self, bus: MessageBus) -> None:
        self.messages: list[Message] = []
        bus.add_message_handler(self._on_message)

    def _on_message(self, msg: Message) -> bool:
        if msg.message_type == MessageType.SIGNAL and msg.member in (
            "DeviceDiscovered",
            "DevicesDiscovered",
            "DeviceLost",
        ):
            self.messages.append(msg)
        return False

    def signals(self, path: str, member: str = "DevicesDiscovered") -> list[Message]:
        return [m for m in self.messages if m.path == path and m.member == member]

    def items(self, path: str) -> list[tuple[str, dict[str, Variant]]]:
        """Every DevicesDiscovered item from ``path``, in order: (address, keys)."""
        return [tuple(item) for m in self.signals(path) for item in m.body[0]]  # type: ignore[misc]

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
