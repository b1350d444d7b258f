"""The feed to dbus-ble-sensors end to end: simulator -> service -> UDP -> the ble-socket.c port.

dbus-ble-sensors' settings live in the localsettings stand-in; the GX owner's
switch is /Settings/BleScanner/BleSensorsFeed, set there as the GUI would.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from dbus_fast.aio import MessageBus

from ble_scanner.config import ScannerConfig
from ble_scanner.const import SCANNER_SERVICE
from ble_scanner.main import ScannerApp
from ble_scanner.testing.blesensors_socket import BleSensorsReceiver
from ble_scanner.testing.localsettings import LocalSettingsStandIn, ble_sensors_settings
from ble_scanner.testing.simulator import BluezSimulator
from ble_scanner.testing.testbus import TestBus
from tests import ingest
from tests.helpers import assert_ok, call, wait_until

REPO = Path(__file__).resolve().parents[2]
FEED = "/Settings/BleScanner/BleSensorsFeed"
WAS = "/Settings/BleScanner/BleSensorsBluetoothWas"
ENABLED = "/Settings/BleSensors/Bluetooth/Enabled"
PORT = "/Settings/BleSensors/Socket/Port"
BIND = "/Settings/BleSensors/Socket/BindAddress"
VICTRON = "C8:A5:2C:11:22:33"
VICTRON_DATA = {0x02E1: bytes.fromhex("100289a30200b1a5e1c6b5")}
RUUVI = "F4:11:22:33:44:55"
RUUVI_DATA = {0x0499: bytes.fromhex("0512fc5394c37c0004fffc040cac364200cdcbb8334c884f")}
APPLE = "11:22:33:44:55:66"
# The service follows its settings and reports within a second; a loaded CI
# machine stretches that, never past this.
SETTLE = 10.0
# dbus-ble-sensors' own scan stops; our retry backoff reaches 10 s at most.
BACKOFF_TOP = 15.0


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[BleSensorsReceiver]:
    rx = await BleSensorsReceiver.start()
    try:
        yield rx
    finally:
        rx.close()


async def settings_with(test_bus: TestBus, **kwargs: object) -> LocalSettingsStandIn:
    return await LocalSettingsStandIn.start(
        test_bus.address,
        settings=ble_sensors_settings(**kwargs),  # type: ignore[arg-type]
    )


async def start(test_bus: TestBus, adapters: frozenset[str] = frozenset()) -> ScannerApp:
    app = ScannerApp(
        ingest.config(test_bus.address, ScannerConfig(adapters=adapters)),
        bus_address=test_bus.address,
    )
    assert await asyncio.wait_for(app.start(), SETTLE) == 0
    return app


async def item(bus: MessageBus, path: str) -> object:
    (value,) = assert_ok(
        await call(bus, SCANNER_SERVICE, path, "com.victronenergy.BusItem", "GetValue")
    )
    return value.value


async def scanning(app: ScannerApp, bluez: BluezSimulator, adapter: str = "hci0") -> None:
    await wait_until(
        lambda: (
            bluez.is_discovering(adapter)
            and any(a.name == adapter and a.session for a in app.status().adapters)
        ),
        timeout=SETTLE,
        what=f"our discovery session on {adapter}",
    )


def sent_to(rx: BleSensorsReceiver, address: str) -> int:
    return rx.sensors[address].reports if address in rx.sensors else 0


async def test_takes_over_feeds_every_report_and_restores_when_turned_off(
    test_bus: TestBus, bluez: BluezSimulator, receiver: BleSensorsReceiver, bus: MessageBus
) -> None:
    settings = await settings_with(test_bus, port=receiver.port)
    app = await start(test_bus)
    try:
        await scanning(app, bluez)
        await bluez.advertise("hci0", VICTRON, manufacturer_data=VICTRON_DATA)
        await wait_until(lambda: app.hub is not None and VICTRON in app.hub.cache)
        assert receiver.datagrams == []  # off by default
        assert settings.value(ENABLED) == 1 and settings.value(WAS) == -1
        await wait_until(lambda: app.feed is not None and app.feed.status().state == "off")

        assert settings.set_value(FEED, 1) == 0
        await wait_until(lambda: settings.value(ENABLED) == 0, timeout=SETTLE, what="take-over")
        assert settings.value(WAS) == 1
        state = f"feeding 127.0.0.1:{receiver.port}"

        async def tree_says_feeding() -> bool:
            return await item(bus, "/BleSensorsFeed/State") == state

        await wait_until(tree_says_feeding, timeout=SETTLE, what=state)

        # Every report, not only changes: the same payload three times is three datagrams.
        for _ in range(3):
            await bluez.advertise("hci0", VICTRON, manufacturer_data=VICTRON_DATA)
        await wait_until(lambda: sent_to(receiver, VICTRON) >= 3, timeout=SETTLE)
        await bluez.advertise(
            "hci0", RUUVI, rssi=-70, manufacturer_data=RUUVI_DATA, name="Ruuvi 1A2B"
        )
        await bluez.advertise("hci0", APPLE, manufacturer_data={0x004C: bytes(23)}, name="iPhone")
        await wait_until(lambda: sent_to(receiver, RUUVI) >= 1, timeout=SETTLE)
        assert receiver.sensors[VICTRON].manufacturer_data == VICTRON_DATA
        assert receiver.sensors[RUUVI].manufacturer_data == RUUVI_DATA
        assert receiver.sensors[RUUVI].name == "Ruuvi 1A2B"
        assert APPLE not in receiver.sensors
        assert all(d[1:7] == bytes.fromhex("1071DA7D1A00") for d in receiver.datagrams)
        assert app.hub is not None and APPLE in app.hub.cache  # scanned, not fed

        sent = len(receiver.datagrams)

        async def tree_counts() -> bool:
            return await item(bus, "/BleSensorsFeed/Sent") == sent

        await wait_until(tree_counts, timeout=SETTLE, what="/BleSensorsFeed/Sent")
        assert await item(bus, "/BleSensorsFeed/Errors") == 0

        # Turned off: its scan comes back, what we remembered is forgotten, nothing more is sent.
        assert settings.set_value(FEED, 0) == 0
        await wait_until(lambda: settings.value(ENABLED) == 1, timeout=SETTLE, what="restore")
        await wait_until(lambda: settings.value(WAS) == -1, timeout=SETTLE)
        await bluez.advertise("hci0", VICTRON, manufacturer_data=VICTRON_DATA)
        await wait_until(lambda: app.feed is not None and app.feed.status().state == "off")
        assert len(receiver.datagrams) == sent
    finally:
        await app.stop()
        await settings.stop()


async def test_a_scan_already_off_stays_off_when_the_feed_ends(
    test_bus: TestBus, bluez: BluezSimulator, receiver: BleSensorsReceiver
) -> None:
    settings = await settings_with(test_bus, port=receiver.port, bluetooth_enabled=0)
    app = await start(test_bus)
    try:
        assert settings.set_value(FEED, 1) == 0
        await wait_until(lambda: settings.value(WAS) == 0, timeout=SETTLE, what="remembered 0")
        assert settings.value(ENABLED) == 0
        assert settings.set_value(FEED, 0) == 0
        await wait_until(lambda: settings.value(WAS) == -1, timeout=SETTLE)
        assert settings.value(ENABLED) == 0
    finally:
        await app.stop()
        await settings.stop()


async def test_port_changed_live_moves_the_feed(
    test_bus: TestBus, bluez: BluezSimulator, receiver: BleSensorsReceiver
) -> None:
    settings = await settings_with(test_bus, port=receiver.port)
    other = await BleSensorsReceiver.start()
    app = await start(test_bus)
    try:
        await scanning(app, bluez)
        assert settings.set_value(FEED, 1) == 0
        await wait_until(lambda: settings.value(ENABLED) == 0, timeout=SETTLE)
        await bluez.advertise("hci0", VICTRON, manufacturer_data=VICTRON_DATA)
        await wait_until(lambda: sent_to(receiver, VICTRON) >= 1, timeout=SETTLE)

        assert settings.set_value(PORT, other.port) == 0
        state = f"feeding 127.0.0.1:{other.port}"
        await wait_until(lambda: app.feed is not None and app.feed.status().state == state)
        before = len(receiver.datagrams)
        await bluez.advertise("hci0", VICTRON, rssi=-75, manufacturer_data=VICTRON_DATA)
        await wait_until(lambda: sent_to(other, VICTRON) >= 1, timeout=SETTLE)
        assert len(receiver.datagrams) == before
        assert settings.value(ENABLED) == 0  # still ours: the socket moved, it did not go
    finally:
        await app.stop()
        other.close()
        await settings.stop()


async def test_bind_address_emptied_gives_its_scan_back(
    test_bus: TestBus, bluez: BluezSimulator, receiver: BleSensorsReceiver
) -> None:
    settings = await settings_with(test_bus, port=receiver.port)
    app = await start(test_bus)
    try:
        await scanning(app, bluez)
        assert settings.set_value(FEED, 1) == 0
        await wait_until(lambda: settings.value(ENABLED) == 0, timeout=SETTLE)
        assert settings.set_value(BIND, "") == 0
        await wait_until(lambda: settings.value(ENABLED) == 1, timeout=SETTLE, what="restore")
        assert app.feed is not None
        assert app.feed.status().state == "its socket is disabled"
        await bluez.advertise("hci0", VICTRON, manufacturer_data=VICTRON_DATA)
        await wait_until(lambda: app.hub is not None and VICTRON in app.hub.cache)
        assert receiver.datagrams == []
        await wait_until(lambda: settings.value(WAS) == -1, timeout=SETTLE)
    finally:
        await app.stop()
        await settings.stop()


async def test_no_socket_input_leaves_its_scan_alone(
    test_bus: TestBus, bluez: BluezSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    settings = await settings_with(test_bus, port=None, bind_address=None)
    app = await start(test_bus)
    try:
        assert settings.set_value(FEED, 1) == 0
        await wait_until(
            lambda: (
                app.feed is not None
                and app.feed.status().state == "dbus-ble-sensors has no socket input"
            ),
            timeout=SETTLE,
        )
        assert settings.value(ENABLED) == 1 and settings.value(WAS) == -1
        assert "does not exist: dbus-ble-sensors before v0.30" in caplog.text
    finally:
        await app.stop()
        await settings.stop()


async def test_refused_sends_are_counted_and_scanning_goes_on(
    test_bus: TestBus, bluez: BluezSimulator
) -> None:
    # A port nothing listens on: the kernel answers with port unreachable.
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    settings = await settings_with(test_bus, port=port)
    app = await start(test_bus)
    try:
        await scanning(app, bluez)
        assert settings.set_value(FEED, 1) == 0
        await wait_until(lambda: settings.value(ENABLED) == 0, timeout=SETTLE)
        for rssi in range(-90, -40, 10):
            await bluez.advertise("hci0", VICTRON, rssi=rssi, manufacturer_data=VICTRON_DATA)
        assert app.feed is not None
        await wait_until(lambda: app.feed is not None and app.feed.status().errors >= 1)
        await bluez.advertise("hci0", RUUVI, manufacturer_data=RUUVI_DATA)
        await wait_until(lambda: app.hub is not None and RUUVI in app.hub.cache)
    finally:
        await app.stop()
        await settings.stop()


async def test_blocked_state_clears_once_its_scan_is_off(
    test_bus: TestBus, bluez: BluezSimulator, receiver: BleSensorsReceiver
) -> None:
    """dbus-ble-sensors' raw-HCI scan holds hci1 until the take-over switches it off."""
    await bluez.add_adapter("hci1", address="00:1A:7D:DA:71:11", monitor_manager=False)
    bluez.set_external_scanner("hci1", True)
    settings = await settings_with(test_bus, port=receiver.port)
    app = await start(test_bus, adapters=frozenset({"hci1"}))

    def state() -> str:
        return next((a.state for a in app.status().adapters if a.name == "hci1"), "")

    try:
        await wait_until(lambda: state() == "blocked by another scanner", timeout=SETTLE)
        assert settings.set_value(FEED, 1) == 0
        # The test plays dbus-ble-sensors: Bluetooth/Enabled 0 closes its HCI scan.
        await wait_until(lambda: settings.value(ENABLED) == 0, timeout=SETTLE)
        bluez.set_external_scanner("hci1", False)
        await wait_until(lambda: state() == "scanning", timeout=BACKOFF_TOP, what="scanning")
        await bluez.advertise("hci1", VICTRON, manufacturer_data=VICTRON_DATA)
        await wait_until(lambda: sent_to(receiver, VICTRON) >= 1, timeout=SETTLE)
        assert receiver.datagrams[-1][1:7] == bytes.fromhex("1171DA7D1A00")
    finally:
        await app.stop()
        await settings.stop()


@pytest.mark.skipif(shutil.which("dbus-send") is None, reason="dbus-send is not installed")
async def test_uninstaller_puts_its_scan_back(
    test_bus: TestBus, bluez: BluezSimulator, receiver: BleSensorsReceiver, tmp_path: Path
) -> None:
    settings = await settings_with(test_bus, port=receiver.port)
    app = await start(test_bus)
    try:
        assert settings.set_value(FEED, 1) == 0
        await wait_until(lambda: settings.value(ENABLED) == 0, timeout=SETTLE)
        await wait_until(lambda: settings.value(WAS) == 1, timeout=SETTLE)
    finally:
        await app.stop()
    root = tmp_path / "gx"
    (root / "data").mkdir(parents=True)
    (root / "service").mkdir()
    env = dict(os.environ, DBUS_SYSTEM_BUS_ADDRESS=test_bus.address)
    try:
        for _ in range(2):  # a second run changes nothing
            process = await asyncio.create_subprocess_exec(
                "sh",
                str(REPO / "tools/uninstall.sh"),
                "--root",
                str(root),
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await asyncio.wait_for(process.communicate(), SETTLE)
            assert process.returncode == 0, err.decode()
            assert settings.value(ENABLED) == 1
            assert settings.value(WAS) == -1
            assert settings.value(FEED) == 0
        assert "dbus-ble-sensors" not in out.decode()  # the second run: nothing to put back
    finally:
        await settings.stop()
