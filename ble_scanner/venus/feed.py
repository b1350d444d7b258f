"""The feed to dbus-ble-sensors: a UDP socket, its settings followed live, its scan taken over.

``BleSensorsFeed.report`` sits on the hub's report path and sends every
report of a device dbus-ble-sensors handles, not only changes: dbus-ble-sensors
times a sensor out when it stops hearing it. Sending never waits and never
raises: the socket is non-blocking, and a datagram the kernel refuses
(ECONNREFUSED once nothing listens, EAGAIN when the buffer is full) is counted
in ``errors`` and dropped. What to do is decided in ``blesensors.py``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from ..bus.calls import (
    BusGoneError,
    CallError,
    call,
    signal_rule,
)
from ..bus.owner import owner_change
from ..config import ScannerConfig, with_values
from ..core.record import Content, DeviceView
from ..tasks import Background
from .blesensors import (
    BDADDR_SIZE,
    BLE_SENSORS_PREFIX,
    BLUETOOTH_ENABLED_PATH,
    FOLLOWED_PATHS,
    LEFT_ALONE,
    NOT_TAKEN,
    PACKET_VERSION,
    SOCKET_BIND_ADDRESS_PATH,
    SOCKET_PORT_PATH,
    BleSensorsSettings,
    FeedPlan,
    FeedState,
    FeedStatus,
    bdaddr,
    bodies,
    plan,
    rssi_byte,
)
from .const import BUSITEM_INTERFACE, SETTINGS_CALL_TIMEOUT, SETTINGS_SERVICE
from .settings import CALL_FAILED, follow, set_setting, settings_rules, unfollow

_LOGGER = logging.getLogger(__name__)

# localsettings answers GetValue on a path it does not hold with this.
_UNKNOWN_OBJECT: Final = "org.freedesktop.DBus.Error.UnknownObject"
# An adapter whose address BlueZ has not told us yet: dbus-ble-sensors only
# shows the repeater's address, so zeros are better than no datagram.
_NO_ADDRESS: Final = bytes(BDADDR_SIZE)
# What a device's reports are sent as while its content stays: (content,
# adapter, the first 13 bytes, the AD bodies). Emptied now and then; a GX
# hears a few thousand devices at most.
_Built = tuple[Content, str, bytes, list[bytes]]
_BUILT_MAX: Final = 4096


class DatagramSender:
    """One non-blocking, connected UDP socket to the target; counts what it sends and fails.

    Connected, so that the kernel reports an ICMP port-unreachable (nobody
    listening) as ECONNREFUSED on a later send: that is counted, not raised.
    """

    def __init__(self) -> None:
        self.target: tuple[str, int] | None = None
        self.sent = 0
        self.errors = 0
        self._sock: socket.socket | None = None

    def aim(self, target: tuple[str, int] | None) -> None:
        """Send to ``target`` from now on; None closes the socket."""
        if target == self.target:
            return
        self.close()
        if target is None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # ble-socket.c is IPv4 only
        sock.setblocking(False)
        try:
            sock.connect(target)
        except OSError as exc:
            sock.close()
            self.errors += 1
            _LOGGER.warning("cannot send to %s:%d: %s", target[0], target[1], exc)
            return
        self._sock, self.target = sock, target

    def send(self, data: bytes) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            sock.send(data)
        except OSError:
            self.errors += 1
        else:
            self.sent += 1

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock, self.target = None, None


def _as_int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


class BleSensorsFeed:
    """Feeds dbus-ble-sensors and takes its scan over while the BleSensorsFeed setting is on.

    ``adapters`` gives each adapter's address by name (``hci0`` ->
    ``AA:BB:...``). ``store`` keeps one of our settings in localsettings
    (``SettingsClient.set_value``); None when localsettings is not used, and
    then dbus-ble-sensors' settings are not followed either.
    """

    def __init__(
        self,
        bus: MessageBus,
        config: ScannerConfig,
        adapters: Callable[[], Mapping[str, str]],
        store: Callable[[str, int], Awaitable[bool]] | None,
    ) -> None:
        self._bus = bus
        self._config = config
        self._adapters = adapters
        self._adapter_bytes: dict[str, bytes] = {}
        self._built: dict[str, _Built] = {}  # by Device1 path
        self._store = store
        self._sender = DatagramSender()
        self._company_ids = config.ble_sensors_company_ids
        self._owner: str | None = None
        self._values: dict[str, Any] = {}
        self._settings: BleSensorsSettings | None = None
        self._plan = FeedPlan(FeedState.OFF)
        self._said = ""
        self._wake = asyncio.Event()
        self._worker = Background("dbus-ble-sensors' settings", self._work)
        self._rules = (
            *settings_rules(BLE_SENSORS_PREFIX),
            # Newer localsettings also tells changes in one ItemsChanged on "/".
            signal_rule(interface=BUSITEM_INTERFACE, member="ItemsChanged", path="/"),
        )

    # --- life cycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Follow dbus-ble-sensors' settings (when localsettings is used) and act on them."""
        if self._store is not None:
            self._bus.add_message_handler(self._on_message)
            try:
                owner = await follow(self._bus, self._rules)
            except CALL_FAILED as exc:
                if not isinstance(exc, BusGoneError):  # the bus itself gone: main.py says so, once
                    _LOGGER.error("cannot follow dbus-ble-sensors' settings (%s)", exc)
                owner = None
            self._owner = owner
            if owner is not None:
                await self._read_settings()
        self._decide()
        self._worker.start()

    async def close(self) -> None:
        """Stop sending; dbus-ble-sensors' scan stays as it is (README: how to go back)."""
        await self._worker.stop()
        self._sender.close()
        if self._store is None:
            return
        self._bus.remove_message_handler(self._on_message)
        await unfollow(self._bus, self._rules)

    def configure(self, config: ScannerConfig) -> None:
        """Our settings changed (BleSensorsFeed, the company ids, what we remembered)."""
        self._config = config
        if config.ble_sensors_company_ids != self._company_ids:
            self._company_ids = config.ble_sensors_company_ids
            self._built.clear()
        self._decide()

    def status(self) -> FeedStatus:
        """For the Venus tree, about once a second; adapters' addresses are looked up afresh."""
        self._adapter_bytes.clear()
        self._built.clear()
        sender = self._sender
        return FeedStatus(self._plan.text, sender.sent, sender.errors)

    # --- the report path -------------------------------------------------------------

    def report(self, view: DeviceView) -> None:
        """One report: sent if the feed is on and dbus-ble-sensors handles its company id.

        What a device sends is built once per content (``blesensors.bodies``)
        and kept: most reports repeat the content before, only the RSSI differs.
        """
        sender = self._sender
        if sender.target is None:
            return
        built = self._built.get(view.path)
        if built is None or built[0] is not view.content or built[1] != view.adapter:
            built = self._build(view)
        parts = built[3]
        if parts:
            head = built[2] + rssi_byte(view.rssi)
            for body in parts:
                sender.send(head + body)

    def _build(self, view: DeviceView) -> _Built:
        content = view.content
        manufacturer_data = content.manufacturer_data
        companies = [c for c in manufacturer_data if c in self._company_ids]
        parts = bodies(manufacturer_data, companies, content.name) if companies else []
        prefix = b""
        if parts:
            adapter = self._adapter_bytes.get(view.adapter)
            if adapter is None:
                adapter = self._adapter_address(view.adapter)
            try:
                prefix = bytes((PACKET_VERSION,)) + adapter + bdaddr(view.address)
            except ValueError:
                self._sender.errors += 1
                parts = []
        if len(self._built) >= _BUILT_MAX:
            self._built.clear()
        built = (content, view.adapter, prefix, parts)
        self._built[view.path] = built
        return built

    def _adapter_address(self, name: str) -> bytes:
        text = self._adapters().get(name, "")
        try:
            address = bdaddr(text) if text else _NO_ADDRESS
        except ValueError:
            address = _NO_ADDRESS
        self._adapter_bytes[name] = address
        return address

    # --- dbus-ble-sensors' settings ----------------------------------------------------

    async def _read_settings(self) -> None:
        values: dict[str, Any] = {}
        for path in FOLLOWED_PATHS:
            try:
                (value,) = await call(
                    self._bus,
                    SETTINGS_SERVICE,
                    path,
                    BUSITEM_INTERFACE,
                    "GetValue",
                    timeout=SETTINGS_CALL_TIMEOUT,
                )
            except CallError as exc:
                if exc.name != _UNKNOWN_OBJECT:
                    _LOGGER.warning("localsettings did not give %s: %s", path, exc)
                continue
            except (TimeoutError, BusGoneError) as exc:
                _LOGGER.warning("localsettings did not give %s: %s", path, exc)
                return
            values[path] = value.value
        self._values = values
        self._settings_changed()

    def _settings_changed(self) -> None:
        values = self._values
        bind = values.get(SOCKET_BIND_ADDRESS_PATH)
        self._settings = BleSensorsSettings(
            port=_as_int(values[SOCKET_PORT_PATH]) if SOCKET_PORT_PATH in values else None,
            bind_address=bind if isinstance(bind, str) or bind is None else str(bind),
            bluetooth_enabled=_as_int(values.get(BLUETOOTH_ENABLED_PATH)),
        )
        self._decide()

    def _on_message(self, msg: Message) -> bool:
        if msg.message_type != MessageType.SIGNAL:
            return False
        change = owner_change(msg)
        if change is not None:
            name, new_owner = change
            if name == SETTINGS_SERVICE:
                self._owner = new_owner or None
                if self._owner is None:
                    self._settings = None  # nobody to ask: dbus-ble-sensors' defaults
                    self._values = {}
                    self._decide()
                else:
                    self._wake.set()  # read them again, in the worker
            return False
        if msg.interface != BUSITEM_INTERFACE or msg.sender != self._owner or self._owner is None:
            return False
        if msg.member == "PropertiesChanged" and msg.path in FOLLOWED_PATHS:
            change = msg.body[0].get("Value")
            if change is not None:
                self._set(msg.path, change)
        elif msg.member == "ItemsChanged" and msg.path == "/":
            for path, item in msg.body[0].items():
                change = item.get("Value")
                if path in FOLLOWED_PATHS and change is not None:
                    self._set(path, change)
        return False

    def _set(self, path: str, change: Variant) -> None:
        # localsettings signals a removed setting as an invalid value (an empty array).
        if change.signature.startswith("a"):
            self._values.pop(path, None)
        else:
            self._values[path] = change.value
        if self._settings is None:  # localsettings just came: read them all in the worker
            self._wake.set()
            return
        self._settings_changed()

    # --- deciding and acting ----------------------------------------------------------

    def _decide(self) -> None:
        config = self._config
        settings = self._settings if self._store is not None and self._owner else None
        new = plan(config.ble_sensors_feed, settings, config.ble_sensors_bluetooth_was)
        self._sender.aim(new.target)
        self._plan = new
        if new.text != self._said:
            self._said = new.text
            why = LEFT_ALONE.get(new.state)
            if why is None:
                _LOGGER.info("dbus-ble-sensors feed: %s", new.text)
            else:
                _LOGGER.warning(
                    "dbus-ble-sensors feed: %s (%s): nothing sent, and its own Bluetooth "
                    "scan is left as it is",
                    new.text,
                    why,
                )
        if new.take_over or new.restore:
            self._wake.set()

    async def _work(self) -> None:
        """Reads and writes localsettings one step at a time, so none overtakes another."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                if self._owner is not None and self._store is not None and self._settings is None:
                    await self._read_settings()
                if self._plan.take_over:
                    await self._take_over()
                elif self._plan.restore:
                    await self._restore()
            except Exception:
                _LOGGER.exception("dbus-ble-sensors' settings: the step failed")

    async def _take_over(self) -> None:
        settings = self._settings
        assert self._store is not None and settings is not None
        found = settings.bluetooth_enabled
        if found is None:
            return
        was = 1 if found else 0
        if not await self._store("ble_sensors_bluetooth_was", was):
            return  # nothing remembered: nothing switched off
        self._config_remembered(was)
        if await set_setting(self._bus, BLUETOOTH_ENABLED_PATH, 0):
            _LOGGER.info(
                "switched dbus-ble-sensors' own Bluetooth scan off (%s was %d): "
                "this service feeds it now",
                BLUETOOTH_ENABLED_PATH,
                was,
            )

    async def _restore(self) -> None:
        assert self._store is not None
        was = self._config.ble_sensors_bluetooth_was
        if was == NOT_TAKEN:
            return
        if not await set_setting(self._bus, BLUETOOTH_ENABLED_PATH, was):
            return  # try again at the next change; the value stays remembered
        _LOGGER.info(
            "put dbus-ble-sensors' own Bluetooth scan back (%s = %d): %s",
            BLUETOOTH_ENABLED_PATH,
            was,
            self._plan.text,
        )
        if await self._store("ble_sensors_bluetooth_was", NOT_TAKEN):
            self._config_remembered(NOT_TAKEN)

    def _config_remembered(self, was: int) -> None:
        """What we stored applies now (its PropertiesChanged may come later)."""
        self._config = with_values(self._config, {"ble_sensors_bluetooth_was": was})
        self._decide()
