"""RSSI emission follows ``filtered_discovery`` exactly as BlueZ computes it.

src/adapter.c (5.66, 5.72, 5.82, 5.87), ``btd_adapter_device_found``: with
``adapter->filtered_discovery`` every report calls
``device_set_rssi_with_delta(dev, rssi, 0)`` (an RSSI PropertiesChanged per
report, even unchanged); without it ``device_set_rssi`` applies the 8 dBm
threshold. ``filtered_discovery`` is ``current_discovery_filter != NULL``
(``start_discovery_complete``), which ``merge_discovery_filters`` /
``discovery_filter_to_mgmt_cp`` decide; the rules are pinned here one by one,
first on the pure merge, then over the bus. tests/realbluez/test_rssi.py holds
the simulator to the real bluetoothd on the same question.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from dbus_fast import Variant
from dbus_fast.aio import MessageBus

from ble_scanner.testing.simulator import BluezSimulator
from ble_scanner.testing.simulator.filters import DiscoveryFilter, merge, parse_filter
from ble_scanner.testing.testbus import TestBus
from tests.helpers import SignalRecorder, add_match, assert_ok, call, wait_until
from tests.sim.conftest import PC_RULE, adapter_call, device_changes, set_filter

ADDR = "C0:11:22:33:44:55"
ADAPTER = "hci0"
PATH = "/org/bluez/hci0/dev_C0_11_22_33_44_55"
LE = "le"  # scan type of an LE-only adapter (Venus: ControllerMode = le)
DUAL = "auto"  # scan type of a dual-mode adapter


def _f(version: str = "5.72", **entries: Variant) -> DiscoveryFilter | None:
    return parse_filter(entries, version)


S = lambda v: Variant("s", v)  # noqa: E731
B = lambda v: Variant("b", v)  # noqa: E731

# (name, entries, scan type, 5.72+ filtered?, 5.66 filtered?)
RULES = [
    ("no filter", None, LE, False, False),
    ("empty dict", {}, LE, False, False),
    ("Transport=le on LE-only", {"Transport": S("le")}, LE, False, True),
    ("Transport=auto on LE-only", {"Transport": S("auto")}, LE, False, True),
    ("Transport=auto on dual-mode", {"Transport": S("auto")}, DUAL, False, True),
    ("Transport=le on dual-mode", {"Transport": S("le")}, DUAL, True, True),
    ("Transport=bredr on LE-only", {"Transport": S("bredr")}, LE, True, True),
    ("DuplicateData=false", {"DuplicateData": B(False)}, LE, False, True),
    (
        "DuplicateData=true (the service's)",
        {"Transport": S("le"), "DuplicateData": B(True)},
        LE,
        True,
        True,
    ),
    ("Discoverable only", {"Discoverable": B(True)}, LE, False, True),
    ("UUIDs=[] (stays NULL)", {"UUIDs": Variant("as", [])}, LE, False, True),
    ("UUIDs", {"UUIDs": Variant("as", ["180f"])}, LE, True, True),
    ("RSSI", {"RSSI": Variant("n", -100)}, LE, True, True),
    ("Pathloss", {"Pathloss": Variant("q", 100)}, LE, True, True),
    ('Pattern ""', {"Pattern": S("")}, LE, True, True),
    ("Pattern", {"Pattern": S("C0")}, LE, True, True),
]


@pytest.mark.parametrize(("version", "col"), [("5.72", 3), ("head", 3), ("5.66", 4)])
@pytest.mark.parametrize("rule", RULES, ids=[r[0] for r in RULES])
def test_which_single_filter_makes_discovery_filtered(rule, version, col):
    entries, scan_type, expected = rule[1], rule[2], rule[col]
    f = None if entries is None else parse_filter(entries, version)
    assert merge([f], scan_type, version).filtered is expected


def test_a_regular_session_clears_the_kernel_filter_but_discovery_stays_filtered():
    uuids = _f(UUIDs=Variant("as", ["180f"]), RSSI=Variant("n", -60))
    alone = merge([uuids], LE, "5.72")
    assert alone.filtered and alone.rssi == -60 and alone.uuids is not None
    for regular in (None, _f(Transport=S("le"))):
        both = merge([uuids, regular], LE, "5.72")
        # "clear whole filter to report all devices": scan type, no RSSI, no UUIDs ...
        assert (both.transport, both.rssi, both.uuids) == (LE, None, None)
        # ... but discovery_filter_to_mgmt_cp still returns a filter, not NULL.
        assert both.filtered


def test_only_regular_sessions_are_unfiltered():
    assert not merge([None, _f(Transport=S("le")), _f(Discoverable=B(True))], LE, "5.72").filtered


def test_transports_are_or_ed():
    le, bredr = _f(Transport=S("le"), DuplicateData=B(True)), _f(Transport=S("bredr"))
    assert merge([le], DUAL, "5.72").transport == "le"
    assert merge([le, bredr], DUAL, "5.72").transport == "auto"
    # Transport=auto is the adapter's scan type: LE on an LE-only adapter.
    assert merge([_f(Transport=S("auto"), DuplicateData=B(True))], LE, "5.72").transport == "le"


# --- over the bus --------------------------------------------------------------------


@pytest_asyncio.fixture
async def make_sim(test_bus: TestBus) -> AsyncIterator:
    sims: list[BluezSimulator] = []

    async def make(version: str = "5.72", le_only: bool = True) -> BluezSimulator:
        sim = BluezSimulator(bus_address=test_bus.address, version=version)
        await sim.start()
        await sim.add_adapter(ADAPTER, address="00:1A:7D:DA:71:10", le_only=le_only)
        sims.append(sim)
        return sim

    try:
        yield make
    finally:
        for sim in sims:
            await sim.stop()


async def _start(bus: MessageBus, sim: BluezSimulator, entries: dict[str, Variant] | None) -> None:
    if entries is not None:
        assert_ok(await set_filter(bus, **entries))
    assert_ok(await adapter_call(bus, "StartDiscovery"))
    await wait_until(lambda: sim.is_discovering(ADAPTER), what="discovering")


async def _rssi_signals(bus: MessageBus, sim: BluezSimulator, rssis: list[int]) -> list[int]:
    """Advertise ``rssis`` (the first one creates the device); RSSI values BlueZ emitted."""
    await add_match(bus, PC_RULE)
    recorder = SignalRecorder(bus)
    for rssi in rssis:
        assert await sim.advertise(ADAPTER, ADDR, rssi=rssi, manufacturer_data={0x02E1: b"\x10"})
    await sim.drain()
    assert_ok(await call(bus, "org.bluez", "/", "org.freedesktop.DBus.Peer", "Ping"))
    return [
        m.body[1]["RSSI"].value
        for m in device_changes(recorder.messages, PATH)
        if "RSSI" in m.body[1]
    ]


REPORTS = [-70, -70, -71, -70, -60]
EVERY = REPORTS[1:]  # filtered: one RSSI per report after the first sighting, even unchanged
THRESHOLD = [-60]  # unfiltered: only the move of 8 dBm or more


@pytest.mark.parametrize(
    ("version", "le_only", "entries", "expected"),
    [
        ("5.72", True, None, THRESHOLD),
        ("5.72", True, {"Transport": S("le"), "DuplicateData": B(True)}, EVERY),
        ("5.72", True, {"Transport": S("le")}, THRESHOLD),
        ("5.72", False, {"Transport": S("le")}, EVERY),
        ("5.66", True, {"Transport": S("le")}, EVERY),
        ("head", True, {"Discoverable": B(True)}, THRESHOLD),
        ("5.66", True, {"Discoverable": B(True)}, EVERY),
    ],
    ids=[
        "unfiltered",
        "service-filter",
        "trivial-le-only",
        "le-on-dual-mode",
        "5.66-no-trivial-check",
        "discoverable-only",
        "5.66-discoverable-only",
    ],
)
async def test_rssi_on_every_report_exactly_when_discovery_is_filtered(
    make_sim, bus, version, le_only, entries, expected
):
    sim = await make_sim(version, le_only)
    await _start(bus, sim, entries)
    assert await _rssi_signals(bus, sim, REPORTS) == expected


async def test_a_regular_session_beside_a_filtered_one_keeps_every_report(
    make_sim, bus, new_client
):
    sim = await make_sim()
    await _start(bus, sim, {"DuplicateData": B(True)})
    await _start(await new_client(), sim, None)
    assert await _rssi_signals(bus, sim, REPORTS) == EVERY


async def test_filtered_follows_the_sessions_as_they_come_and_go(make_sim, bus, new_client):
    sim = await make_sim()
    await _start(bus, sim, None)
    assert await _rssi_signals(bus, sim, [-70, -70, -71]) == []
    other = await new_client()
    await _start(other, sim, {"DuplicateData": B(True)})
    assert await _rssi_signals(bus, sim, [-71, -72]) == [-71, -72]
    assert_ok(await adapter_call(other, "StopDiscovery"))
    await wait_until(lambda: len(sim.sessions(ADAPTER)) == 1, what="one session left")
    # The kernel restarts without a filter: back to the 8 dBm rule.
    assert await _rssi_signals(bus, sim, [-73, -74, -80]) == [-80]


async def test_a_filter_set_during_discovery_takes_effect(make_sim, bus):
    sim = await make_sim()
    await _start(bus, sim, None)
    assert await _rssi_signals(bus, sim, [-70, -71]) == []
    assert_ok(await set_filter(bus, DuplicateData=B(True)))
    await wait_until(lambda: sim.adapters[ADAPTER].filtered_discovery, what="filtered")
    assert await _rssi_signals(bus, sim, [-71, -71]) == [-71, -71]
    assert_ok(await set_filter(bus))  # {}: the filter is gone
    await wait_until(lambda: not sim.adapters[ADAPTER].filtered_discovery, what="unfiltered")
    assert await _rssi_signals(bus, sim, [-72, -60]) == [-60]
