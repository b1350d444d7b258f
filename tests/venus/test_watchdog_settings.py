"""The watchdog's timings and the drain wait as localsettings rows, applied live."""

from __future__ import annotations

import asyncio

from ble_scanner.main import ScannerApp
from ble_scanner.testing.localsettings import LocalSettingsStandIn
from ble_scanner.testing.simulator import BluezSimulator
from ble_scanner.testing.testbus import TestBus
from tests import ingest
from tests.helpers import wait_until


async def test_watchdog_timings_and_drain_timeout_are_settings_applied_live(
    test_bus: TestBus, bluez: BluezSimulator, standin: LocalSettingsStandIn
) -> None:
    app = ScannerApp(ingest.config(test_bus.address), bus_address=test_bus.address)
    assert await asyncio.wait_for(app.start(), 10) == 0
    try:
        assert app.bluez is not None
        ladder = app.bluez.adapters["/org/bluez/hci0"].ladder
        assert (ladder.restart_after, ladder.power_cycle_after) == (90.0, 90.0)
        assert app.bluez.drain_timeout == 30.0
        for name, value in (("SilenceRestart", 7.0), ("SilencePowerCycle", 11.0)):
            assert standin.set_value(f"/Settings/BleScanner/{name}", value) == 0
        assert standin.set_value("/Settings/BleScanner/DrainTimeout", 3.0) == 0
        await wait_until(
            lambda: (ladder.restart_after, ladder.power_cycle_after) == (7.0, 11.0),
            what="the ladder's new timings",
        )
        await wait_until(lambda: app.bluez is not None and app.bluez.drain_timeout == 3.0)
        assert ladder.wait == 7.0, "the step under way waits by the new timing"
        # Below the 5 s minimum: refused, nothing changes.
        standin.set_value("/Settings/BleScanner/SilenceRestart", 4.0)
        standin.set_value("/Settings/BleScanner/DrainTimeout", 5.0)
        await wait_until(lambda: app.bluez is not None and app.bluez.drain_timeout == 5.0)
        assert ladder.restart_after == 7.0 and app.config.silence_restart == 7.0
    finally:
        await app.stop()
