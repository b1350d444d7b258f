"""Two adapters hearing one advertiser: what BlueZ shows, and the service's one record.

The scene (``Backend.reset(two_listeners=True)``, asked for by
``TWO_LISTENERS_SCENE`` below): three controllers on one radio, hci2
advertises and hci0 and hci1 both hear it, as a GX's built-in radio and a USB
dongle hear one sensor. In the guests btvirt runs ``-L -l3``; its radio gives
every report RSSI 127 ("not available") on both, so there a "stronger" source
cannot exist and the tests pin what does not need one. The simulator hears the
same advertiser at -50 dBm on hci0 and -65 dBm on hci1.

BlueZ's side is held to the real bluetoothd like every scenario of this tier:
each adapter has its own Device1 (``/org/bluez/hciN/dev_...``, announced by its
own InterfacesAdded, ``Adapter`` its own), a replaced advertisement reaches
both objects, and the kernel gives each controller its own ``Device Found``
per report, each turning into an RSSI PropertiesChanged of that adapter's
Device1 under our filter.

The service scanning both serves one record for the advertiser, whose
``Sources`` names both adapters, whose ``Adapter`` and ``Path`` stay with one
source while both keep hearing it (no flapping, in the snapshot and in a
subscription's ``DeviceDiscovered``), whose new content is told once, and
``GetStatus`` shows both adapters ``Listening``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from ble_scanner.bus.calls import signal_rule
from ble_scanner.config import ScannerConfig
from ble_scanner.const import SCANNER_INTERFACE, SCANNER_SERVICE
from ble_scanner.main import ScannerApp
from tests.helpers import SignalRecorder, add_match, assert_ok, call, wait_until
from tests.realbluez.backends import TWO_LISTENER_ADVERTISER, TWO_LISTENERS, Advert, Backend
from tests.realbluez.bluez import (
    BLUEZ,
    DEVICE,
    devices,
    managed_objects,
    manufacturer_is,
    remove_all_devices,
    start_scan,
    wait_for_device,
)
from tests.realbluez.test_service import (
    ARM_TIMEOUT,
    VICTRON,
    Record,
    discovered,
    payload,
    start_service,
    wait_served,
)

# Re-advertisements with unchanged content while the record is watched; btvirt
# turns each into a report on each listener (the kernel drops one now and then).
UNCHANGED_REPORTS = 6
# At least this many of them reach each controller (as in test_rssi.py).
MIN_REPORTS = 3
SCAN_BOTH = ScannerConfig(adapters=frozenset(TWO_LISTENERS))
# conftest.py's ``bluez`` fixture: every test here starts in the two-listener scene.
TWO_LISTENERS_SCENE = True


def device_path(adapter: str, address: str) -> str:
    return f"/org/bluez/{adapter}/dev_{address.replace(':', '_')}"


@pytest.fixture
async def two(bluez: Backend, bus: MessageBus) -> Backend:
    """The two-listener scene, with no Device1 left on either listener."""
    assert bluez.listeners == TWO_LISTENERS
    for adapter in TWO_LISTENERS:
        await remove_all_devices(bus, adapter)
    return bluez


# --- BlueZ: one Device1 per adapter ---------------------------------------------------


async def test_each_adapter_gets_its_own_device1_from_its_own_interfaces_added(
    two: Backend, bus: MessageBus
) -> None:
    await add_match(bus, signal_rule(sender=BLUEZ, member="InterfacesAdded"))
    added = SignalRecorder(bus, member="InterfacesAdded")
    for adapter in TWO_LISTENERS:
        await start_scan(bus, adapter)
    data = payload()
    advert = Advert(manufacturer_data={VICTRON: data})
    address = two.advertiser_address
    for adapter in TWO_LISTENERS:
        path, props = await wait_for_device(
            two, bus, advert, manufacturer_is(VICTRON, data), adapter=adapter
        )
        assert path == device_path(adapter, address)
        assert props["Address"] == Variant("s", address)
        assert props["AddressType"] == Variant("s", "public")
        assert props["Adapter"] == Variant("o", f"/org/bluez/{adapter}")
        assert props["ManufacturerData"].value == {VICTRON: Variant("ay", data)}
        assert props["RSSI"].signature == "n"
        if two.virtual_radio:
            assert props["RSSI"].value == 127  # btvirt: the same "not available" on both
    added.close()
    # The advertiser itself is never its own Device1.
    advertiser = f"/org/bluez/{TWO_LISTENER_ADVERTISER}/dev_"
    assert not any(p.startswith(advertiser) for p in await managed_objects(bus))
    for adapter in TWO_LISTENERS:
        path = device_path(adapter, address)
        mine = [m for m in added.messages if m.body[0] == path]
        assert len(mine) == 1, f"{len(mine)} InterfacesAdded for {path}"
        assert mine[0].path == "/"
        assert mine[0].body[1][DEVICE]["Adapter"] == Variant("o", f"/org/bluez/{adapter}")


async def test_a_report_reaches_each_adapter_as_its_own_device_found_and_signals(
    two: Backend, bus: MessageBus
) -> None:
    """One advertisement, two controllers: two ``Device Found`` (one per index), each
    adapter's Device1 told on its own: the RSSI PropertiesChanged per report that our
    filter gives (test_rssi.py) on each path, and a replaced payload on both."""
    for adapter in TWO_LISTENERS:
        await start_scan(bus, adapter)
    data = payload()
    advert = Advert(manufacturer_data={VICTRON: data})
    for adapter in TWO_LISTENERS:
        await wait_for_device(two, bus, advert, manufacturer_is(VICTRON, data), adapter=adapter)
    paths = {a: device_path(a, two.advertiser_address) for a in TWO_LISTENERS}
    for path in paths.values():
        await add_match(bus, signal_rule(sender=BLUEZ, member="PropertiesChanged", path=path))
    recorder = SignalRecorder(bus, member="PropertiesChanged")
    await two.count_reports()

    def signals(adapter: str, key: str) -> list[Message]:
        return [
            m for m in recorder.messages
            if m.path == paths[adapter] and m.body[0] == DEVICE and key in m.body[1]
        ]  # fmt: skip

    def rssi_per_report(adapter: str, reports: int) -> Callable[[], bool]:
        return lambda: len(signals(adapter, "RSSI")) >= reports

    new = payload()
    for _ in range(UNCHANGED_REPORTS):
        await two.advertise(Advert(manufacturer_data={VICTRON: new}))
    counted = await two.reports_counted_per_listener()
    for adapter in TWO_LISTENERS:
        reports = counted[adapter]
        assert reports >= MIN_REPORTS, f"only {reports} reports reached {adapter}: {counted}"
        await wait_until(
            rssi_per_report(adapter, reports), timeout=15,
            what=f"an RSSI per report on {adapter}'s Device1",
        )  # fmt: skip
    recorder.close()
    for adapter in TWO_LISTENERS:
        rssi, reports = len(signals(adapter, "RSSI")), counted[adapter]
        # One more: a report of the wait above that bluetoothd handled as counting began.
        assert reports <= rssi <= reports + 1, f"{adapter}: {rssi} RSSI for {reports} reports"
        told = [m.body[1]["ManufacturerData"].value for m in signals(adapter, "ManufacturerData")]
        assert {VICTRON: Variant("ay", new)} in told, f"{adapter} never got the new payload"
    for adapter in TWO_LISTENERS:
        (props,) = (await devices(bus, adapter)).values()
        assert props["ManufacturerData"].value == {VICTRON: Variant("ay", new)}


# --- the service: one record, one source ----------------------------------------------


async def status_adapters(bus: MessageBus, starting: bool = False) -> dict[str, dict[str, Any]]:
    """GetStatus's Adapters, unwrapped; ``starting``: {} while the service is not there."""
    reply = await call(bus, SCANNER_SERVICE, "/", SCANNER_INTERFACE, "GetStatus")
    if starting and reply.message_type == MessageType.ERROR:
        return {}
    adapters = assert_ok(reply)[0]["Adapters"].value
    return {name: {k: v.value for k, v in props.items()} for name, props in adapters.items()}


async def subscribe(bus: MessageBus, address: str) -> str:
    """A subscription to the advertiser with the default RssiDelta, as a client makes one."""
    options = {"Addresses": Variant("as", [address]), "KeepAlive": Variant("d", 0.0)}
    reply = await call(bus, SCANNER_SERVICE, "/", SCANNER_INTERFACE, "Subscribe", "a{sv}",
                       [options])  # fmt: skip
    path: str = assert_ok(reply)[0]
    return path


@pytest.fixture
async def service_on_both(two: Backend) -> AsyncIterator[ScannerApp]:
    """The service in-process, scanning hci0 and hci1 (not the advertiser's hci2)."""
    app = await start_service(two, SCAN_BOTH)
    try:
        yield app
    finally:
        await app.stop()


async def test_the_service_serves_one_record_from_one_source_for_two_adapters(
    two: Backend, service_on_both: ScannerApp, bus: MessageBus
) -> None:
    await one_record_one_source(two, bus, ingest=None)


async def one_record_one_source(
    backend: Backend, bus: MessageBus, ingest: str | None, arm_timeout: float = ARM_TIMEOUT
) -> None:
    """The service on ``bus`` scans both listeners (with ``ingest``, if given):
    one record, one source kept, new content told once, both in Sources.

    ``Sources`` is asserted last, after everything that holds without it: on
    btvirt's radio no report carries an RSSI reading (127, "not available").
    """

    async def both_armed() -> bool:
        status = await status_adapters(bus, starting=True)
        return all(
            status.get(a, {}).get("Session") and ingest in (None, status[a].get("Ingest"))
            for a in TWO_LISTENERS
        )

    await wait_until(both_armed, timeout=arm_timeout, interval=0.2, what="hci0 and hci1 armed")
    address = backend.advertiser_address
    sub = await subscribe(bus, address)
    recorder = SignalRecorder(bus, member="DeviceDiscovered", path=sub)

    # Heard by both (each adapter's Device1 has it): one record, from one of them.
    first = Advert(manufacturer_data={VICTRON: payload()})
    await wait_served(backend, bus, first, lambda r: r["ManufacturerData"] == manufacturer(first))
    for adapter in TWO_LISTENERS:
        await wait_for_device(
            backend, bus, first, manufacturer_is(VICTRON, first.manufacturer_data[VICTRON]),
            adapter=adapter,
        )  # fmt: skip
    record = await all_reports_in(backend, bus, first)
    assert (await discovered(bus)).keys() == {address}
    source = record["Adapter"].value
    assert source in TWO_LISTENERS
    assert record["Path"] == Variant("o", device_path(source, address))
    status = await status_adapters(bus)
    for adapter in TWO_LISTENERS:
        assert status[adapter]["Listening"] is True, status[adapter]
    assert status[TWO_LISTENER_ADVERTISER]["Listening"] is False, "hci2 is not scanned"

    # Unchanged content, reports on both: the record stays with its source and
    # nothing is told (KeepAlive off; the source's RSSI does not move).
    told_before = len(recorder.messages)
    seen: list[str] = []
    for _ in range(UNCHANGED_REPORTS):
        await backend.advertise(first)
        (now,) = (await discovered(bus)).values()
        seen.append(now["Adapter"].value)
        assert now["Path"] == Variant("o", device_path(now["Adapter"].value, address))
    await all_reports_in(backend, bus, first)
    assert set(seen) == {source}, f"the record's Adapter moved: {seen}"
    unchanged = recorder.messages[told_before:]
    assert unchanged == [], [(m.body[1]["Adapter"].value, rssi(m.body[1])) for m in unchanged]

    # New content: told once, from the same source, whichever adapter heard it first.
    second = Advert(manufacturer_data={VICTRON: payload()})
    await wait_served(backend, bus, second, lambda r: r["ManufacturerData"] == manufacturer(second))
    now = await all_reports_in(backend, bus, second)
    recorder.close()
    assert now["Adapter"].value == source
    news = [m for m in recorder.messages if m.body[1]["ManufacturerData"] == manufacturer(second)]
    assert len(news) == 1, [(m.body[1]["Adapter"].value, rssi(m.body[1])) for m in news]
    adapters = [m.body[1]["Adapter"].value for m in recorder.messages[told_before:]]
    assert set(adapters) == {source}, f"DeviceDiscovered from {adapters}"

    # Both adapters heard it within its lost time: Sources names both.
    assert "Sources" in now, f"no Sources in {shown(now)}"
    assert now["Sources"].signature == "a{sn}"
    assert both(now), f"Sources {now['Sources'].value}, both adapters heard it"


def shown(record: Record) -> dict[str, Any]:
    return {k: v.value for k, v in record.items()}


def manufacturer(advert: Advert) -> Variant:
    return Variant("a{qay}", advert.manufacturer_data)


def both(record: Record) -> bool:
    return sources(record) == set(TWO_LISTENERS)


async def all_reports_in(backend: Backend, bus: MessageBus, advert: Advert) -> Record:
    """The record once every report so far has reached the service: a later one has.

    bluetoothd (and the kernel's control channel) deliver in order, so a report
    after the record was read comes after every report before it.
    """
    (last,) = (await discovered(bus)).values()
    seen = last["LastSeen"].value
    return await wait_served(backend, bus, advert, lambda r: r["LastSeen"].value > seen)


def sources(record: Record) -> set[str]:
    value = record.get("Sources")
    return set(value.value) if value is not None else set()


def rssi(record: Record) -> int | None:
    value = record.get("Rssi")
    return None if value is None else int(value.value)
