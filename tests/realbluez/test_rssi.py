"""Differential: an RSSI PropertiesChanged per report exactly while discovery is filtered.

src/adapter.c (5.66 to 5.87), ``btd_adapter_device_found``: with
``adapter->filtered_discovery`` every report calls
``device_set_rssi_with_delta(dev, rssi, 0)``, so ``RSSI`` is emitted on every
report even unchanged (btvirt's RSSI is always 127); without it
``device_set_rssi`` emits only moves of 8 dBm or more, so none here. Whether a
filter counts is ``merge_discovery_filters``'s business: the service's
``{Transport: le, DuplicateData: true}`` always does; a bare ``Transport: le``
on an LE-only adapter (btvirt -L; Venus) repeats the default, which 5.67+
treats as no filter (de8e7cf) and 5.66 does not. tests/sim/test_rssi.py pins
every rule on the simulator; this holds it to the real bluetoothd.

Reports are counted where bluetoothd reads them: the management channel's
``Device Found`` events for hci0 (btmon in the guest), each re-advertisement of
btvirt's legacy advertiser being one report; the simulator counts the reports
it delivers.
"""

from __future__ import annotations

import os

import pytest
from dbus_fast import Variant
from dbus_fast.aio import MessageBus

from ble_scanner.bus.calls import signal_rule
from tests.helpers import SignalRecorder, add_match, assert_ok, wait_until
from tests.realbluez.backends import Advert, Backend
from tests.realbluez.bluez import (
    DEVICE,
    DEVICE_TIMEOUT,
    SCAN_FILTER,
    adapter_call,
    devices,
    managed_objects,
    manufacturer_is,
    remove_all_devices,
    wait_for_device,
)

VICTRON = 0x02E1
# Re-advertisements in the counted window; btvirt turns each into one report
# (the kernel sometimes drops one), so at least MIN_REPORTS reach bluetoothd.
READVERTISEMENTS = 6
MIN_REPORTS = 3
# 5.67 (de8e7cf): a filter that repeats the defaults counts as no filter.
TRIVIAL_FILTER_CHECK_SINCE = (5, 67)

CASES = {
    "service-filter": {**SCAN_FILTER},
    "transport-le-only": {"Transport": Variant("s", "le")},
    "unfiltered": None,
}


def every_report(case: str, bluez: Backend) -> bool:
    """What the code says: is discovery filtered for this session's filter?"""
    if case == "service-filter":
        return True
    if case == "transport-le-only":
        return bluez.bluez_version < TRIVIAL_FILTER_CHECK_SINCE
    return False


@pytest.mark.parametrize("case", list(CASES))
async def test_rssi_is_emitted_per_report_exactly_while_discovery_is_filtered(
    bluez: Backend, bus: MessageBus, case: str
) -> None:
    await remove_all_devices(bus)
    entries = CASES[case]
    if entries is not None:
        assert_ok(await adapter_call(bus, "SetDiscoveryFilter", "a{sv}", [entries]))
    assert_ok(await adapter_call(bus, "StartDiscovery"))
    data = os.urandom(6)
    advert = Advert(manufacturer_data={VICTRON: data})
    matches = manufacturer_is(VICTRON, data)
    path, _ = await wait_for_device(bluez, bus, advert, lambda p: matches(p) and "RSSI" in p)

    await add_match(bus, signal_rule(sender="org.bluez", member="PropertiesChanged", path=path))
    await bluez.count_reports()
    recorder = SignalRecorder(bus, member="PropertiesChanged", path=path)

    def rssi_signals() -> int:
        return sum(1 for m in recorder.messages if m.body[0] == DEVICE and "RSSI" in m.body[1])

    for _ in range(READVERTISEMENTS):
        await bluez.advertise(advert)
    reports = await bluez.reports_counted()
    assert reports >= MIN_REPORTS, f"only {reports} reports reached bluetoothd"
    if every_report(case, bluez):
        await wait_until(lambda: rssi_signals() >= reports, timeout=15, what="an RSSI per report")
    else:
        # bluetoothd read every counted report before btmon was stopped and read
        # back; a round trip to it then orders anything it emitted before ours.
        await managed_objects(bus)
    recorder.close()
    signals = rssi_signals()
    if every_report(case, bluez):
        # One more is a report of the wait above that bluetoothd handled as
        # counting began; fewer would be a report without its RSSI.
        assert reports <= signals <= reports + 1, f"{signals} RSSI signals for {reports} reports"
    else:
        assert signals == 0, f"{signals} RSSI signals for {reports} reports"


# Extended advertising at this interval: a few reports a second, well inside a
# dual-mode discovery round's LE phase.
EXTENDED_INTERVAL = 0.5
ENOUGH_REPORTS = 4


@pytest.mark.parametrize("case", ["service-filter", "unfiltered"])
async def test_a_repeating_advertiser_gets_an_rssi_per_report_only_while_filtered(
    bluez: Backend, bus: MessageBus, case: str
) -> None:
    """The radio repeats on its own (5.82's btvirt: extended advertising on a timer)."""
    if not bluez.repeats_extended_advertising:
        pytest.skip(
            f"{bluez.name}: btvirt sends an extended advertisement once per scan enable "
            "(measured on 5.66), so nothing repeats; the re-advertising test covers it"
        )
    data = os.urandom(6)
    await bluez.advertise_repeating(Advert(manufacturer_data={VICTRON: data}), EXTENDED_INTERVAL)
    await remove_all_devices(bus)
    entries = CASES[case]
    if entries is not None:
        assert_ok(await adapter_call(bus, "SetDiscoveryFilter", "a{sv}", [entries]))
    assert_ok(await adapter_call(bus, "StartDiscovery"))
    matches = manufacturer_is(VICTRON, data)

    async def heard() -> bool:
        return any(matches(p) and "RSSI" in p for p in (await devices(bus)).values())

    await wait_until(heard, timeout=DEVICE_TIMEOUT, interval=0.2, what="the advertiser")
    path = next(p for p, props in (await devices(bus)).items() if matches(props))
    await add_match(bus, signal_rule(sender="org.bluez", member="PropertiesChanged", path=path))
    await bluez.count_reports()
    recorder = SignalRecorder(bus, member="PropertiesChanged", path=path)

    def rssi_signals() -> int:
        return sum(1 for m in recorder.messages if m.body[0] == DEVICE and "RSSI" in m.body[1])

    async def enough() -> bool:
        return await bluez.reports_so_far() >= ENOUGH_REPORTS

    await wait_until(enough, timeout=DEVICE_TIMEOUT, interval=0.5, what="reports")
    # The advertiser goes on: bound the signals by the reports counted before
    # (at least one each) and after (at most one each) the recorder closed.
    before = await bluez.reports_so_far()
    if case == "service-filter":
        await wait_until(lambda: rssi_signals() >= before, timeout=15, what="an RSSI per report")
    else:
        await managed_objects(bus)
    recorder.close()
    signals = rssi_signals()
    after = await bluez.reports_counted()
    if case == "service-filter":
        assert before <= signals <= after + 1, f"{signals} RSSI signals, {before}-{after} reports"
    else:
        assert signals == 0, f"{signals} RSSI signals for {after} reports"
