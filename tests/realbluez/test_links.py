"""Never drop a link, against the real bluetoothd (and, unchanged, the simulator).

hci0 (the service's adapter) connects to hci1 (the advertiser) over LE, as
a connection manager would; the advertiser then stops advertising, so hci0
goes silent. With the watchdog at its settings' minimum (5 s a step), a
silence without the link reaches the power cycle in about ten seconds; with
the link, nothing may happen: Powered stays true and the link stays up.
Once the link ends, the silence counts again and the power cycle comes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from dbus_fast.aio import MessageBus

from ble_scanner.bluez.watchdog import MIN_SILENCE
from ble_scanner.bus.calls import signal_rule
from ble_scanner.main import ScannerApp
from tests.helpers import SignalRecorder, add_match, wait_until
from tests.realbluez.backends import Advert, Backend
from tests.realbluez.bluez import DEVICE, DEVICE_TIMEOUT, get_property, remove_all_devices
from tests.realbluez.test_service import ARM_TIMEOUT, SCAN_ONLY_HCI0, VICTRON, armed, hci0

QUICK = replace(SCAN_ONLY_HCI0, silence_restart=MIN_SILENCE, silence_power_cycle=MIN_SILENCE)
# Longer than both watchdog steps, with a look's lateness each: a power cycle
# would have come in this window without the link.
OBSERVATION = 2 * MIN_SILENCE + 5.0
# The two steps, a look late each, and room for TCG on a loaded machine.
TO_POWER_CYCLE = 2 * MIN_SILENCE + 20.0
# Connect returns once services are resolved; the service sees the link from
# Connected or, where bluetoothd 5.66 never signals it, from ServicesResolved
# and one Get: a round trip to the guest, which took seconds under TCG on a
# machine with a load average of 9.
LINK_SEEN_TIMEOUT = 30.0


@pytest.fixture
async def quick_service(bluez: Backend, bus: MessageBus) -> AsyncIterator[ScannerApp]:
    await remove_all_devices(bus)
    app = ScannerApp(bluez.service_config(QUICK), bus_address=bluez.bus.address, use_settings=False)
    assert await asyncio.wait_for(app.start(), 10) == 0
    try:
        await wait_until(lambda: armed(app), timeout=ARM_TIMEOUT, what="the service armed")
        yield app
    finally:
        await app.stop()


def powered_off(recorder: SignalRecorder) -> int:
    """PropertiesChanged with Powered false on hci0: a power cycle's first half."""
    return sum(
        1
        for m in recorder.messages
        if m.path == "/org/bluez/hci0"
        and "Powered" in m.body[1]
        and m.body[1]["Powered"].value is False
    )


@pytest.mark.slow
async def test_no_power_cycle_while_another_client_holds_an_le_link(
    bluez: Backend, bus: MessageBus, quick_service: ScannerApp
) -> None:
    app = quick_service
    adapter = hci0(app)
    address = bluez.advertiser_address
    await add_match(bus, signal_rule(sender="org.bluez", member="PropertiesChanged"))
    recorder = SignalRecorder(bus, member="PropertiesChanged")
    try:
        # Heard once: the watchdog arms.
        async def heard() -> bool:
            await bluez.advertise(Advert(manufacturer_data={VICTRON: b"\x01\x02"}))
            return bool(adapter.watchdog_armed)

        await wait_until(heard, timeout=DEVICE_TIMEOUT, interval=0.5, what="the advertiser heard")
        await bluez.connect(bus)
        await bluez.stop_advertising()  # a connected peripheral stops advertising
        path = f"/org/bluez/hci0/dev_{address.replace(':', '_')}"
        assert await get_property(bus, path, DEVICE, "Connected") is True
        assert app.bluez is not None
        await wait_until(
            lambda: app.bluez is not None and app.bluez.connected_device(adapter.path) == address,
            timeout=LINK_SEEN_TIMEOUT,
            what="the service seeing the link",
        )
        # The silence before the link (Connect takes seconds) may have cost a
        # restart; from the link on, no step may be taken (a report may still
        # end the silence: btvirt reports when scanning is switched on).
        step = adapter.watchdog_step
        await asyncio.sleep(OBSERVATION)  # nothing is to happen: a window, not a sync
        assert powered_off(recorder) == 0, "the adapter was power-cycled under a link"
        assert await get_property(bus, path, DEVICE, "Connected") is True, "the link dropped"
        assert adapter.watchdog_step <= step, "silence under a link was counted"
        # The link ends: now the silence is a fault and the ladder runs to the power cycle.
        await bluez.disconnect(bus)
        await wait_until(
            lambda: powered_off(recorder) >= 1, timeout=TO_POWER_CYCLE, what="the power cycle"
        )
        await wait_until(lambda: armed(app), timeout=ARM_TIMEOUT, what="re-armed after it")
    finally:
        recorder.close()
