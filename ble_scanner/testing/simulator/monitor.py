"""AdvertisementMonitorManager1 on an adapter: passive scanning without discovery.

Follows src/adv_monitor.c: RegisterMonitor replies only once the application's
objects have been read (GetManagedObjects on the caller, like GDBusClient);
each valid ``or_patterns`` monitor is activated, gets DeviceFound for matching
devices and DeviceLost when they go, and Release when it is dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dbus_fast import Message, MessageType, Variant

from ble_scanner.const import (
    BLUEZ_MONITOR,
    DBUS_INTERFACE,
    DBUS_PATH,
    DBUS_SERVICE,
    OBJECT_MANAGER,
)

from . import wire
from .const import ERR_ALREADY_EXISTS, ERR_DOES_NOT_EXIST, ERR_INVALID_ARGS, MONITOR_RSSI_UNSET
from .report import Report

if TYPE_CHECKING:
    from .adapter import Adapter
    from .device import Device

_LOG = logging.getLogger(__name__)
# How long bluetoothd's GDBusClient waits for an application's objects.
APP_READ_TIMEOUT = 5.0
# An or_patterns pattern must fit in a legacy advertisement (31 bytes).
MAX_PATTERN_BYTES = 31


class Monitor:
    """One ``org.bluez.AdvertisementMonitor1`` object of an application."""

    __slots__ = (
        "app",
        "below_since",
        "found",
        "low_timeout",
        "path",
        "patterns",
        "rssi_high",
        "rssi_low",
    )

    def __init__(self, app: MonitorApp, path: str, patterns: list[tuple[int, int, bytes]]) -> None:
        self.app = app
        self.path = path
        self.patterns = patterns
        self.rssi_low = MONITOR_RSSI_UNSET
        self.rssi_high = MONITOR_RSSI_UNSET
        self.low_timeout = 0
        self.found: set[str] = set()
        self.below_since: dict[str, float] = {}

    def matches(self, ads: list[tuple[int, bytes]]) -> bool:
        for start, ad_type, content in self.patterns:
            end = start + len(content)
            for kind, data in ads:
                if kind == ad_type and data[start:end] == content:
                    return True
        return False


class MonitorApp:
    """A registered application root: (sender, path)."""

    __slots__ = ("monitors", "owner", "root")

    def __init__(self, owner: str, root: str) -> None:
        self.owner = owner
        self.root = root
        self.monitors: dict[str, Monitor] = {}

    @property
    def match_rule(self) -> str:
        return (
            f"type='signal',sender='{self.owner}',interface='{OBJECT_MANAGER}',"
            f"path_namespace='{self.root}'"
        )


class MonitorManager:
    """The adapter's monitor registry; ``active`` is true while any monitor is activated."""

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter
        self.server = adapter.server
        self.apps: dict[tuple[str, str], MonitorApp] = {}
        self.active = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.server.signal_hooks.append(self._on_signal)
        # bluetoothd dies reading a monitor with this many patterns or more
        # (None: never); set with ``on_crash`` by BluezSimulator(monitor_crash_patterns=).
        self.crash_patterns: int | None = None
        self.on_crash: Callable[[], None] = lambda: None

    def properties(self) -> dict[str, Variant]:
        return {
            "SupportedMonitorTypes": Variant("as", ["or_patterns"]),
            "SupportedFeatures": Variant("as", []),
        }

    def call(self, member: str, msg: Message) -> Message | bool | None:
        if msg.signature != "o" or member not in ("RegisterMonitor", "UnregisterMonitor"):
            return None
        key = (msg.sender or "", msg.body[0])
        if not key[1].startswith("/"):
            return wire.error(msg, ERR_INVALID_ARGS)
        if member == "RegisterMonitor":
            if key in self.apps:
                return wire.error(msg, ERR_ALREADY_EXISTS)
            app = MonitorApp(*key)
            self.apps[key] = app
            task = asyncio.ensure_future(self._read_app(app, msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return True
        app_or_none = self.apps.pop(key, None)
        if app_or_none is None:
            return wire.error(msg, ERR_DOES_NOT_EXIST)
        self._release(app_or_none)
        self.server.send(_match_call("RemoveMatch", app_or_none))
        return Message.new_method_return(msg)

    async def _read_app(self, app: MonitorApp, msg: Message) -> None:
        bus = self.server.bus
        objects: dict[str, Any] = {}
        try:
            await self.server.bus.call(_match_call("AddMatch", app))
            reply = await asyncio.wait_for(
                bus.call(
                    wire.method_call(app.owner, app.root, OBJECT_MANAGER, "GetManagedObjects")
                ),
                APP_READ_TIMEOUT,
            )
            if reply is not None and reply.message_type is MessageType.METHOD_RETURN:
                objects = reply.body[0]
        except Exception as exc:
            _LOG.debug("reading monitor app %s %s failed: %s", app.owner, app.root, exc)
        if self.apps.get((app.owner, app.root)) is not app:
            return
        if self._would_crash(objects):
            self.on_crash()  # no reply: the caller sees bluetoothd leave the bus
            return
        self.server.send(Message.new_method_return(msg))
        for path, interfaces in objects.items():
            if BLUEZ_MONITOR in interfaces:
                self._add_monitor(app, path, interfaces[BLUEZ_MONITOR])

    def _would_crash(self, objects: dict[str, Any]) -> bool:
        if self.crash_patterns is None:
            return False
        for interfaces in objects.values():
            patterns = interfaces.get(BLUEZ_MONITOR, {}).get("Patterns")
            if isinstance(patterns, Variant) and len(patterns.value) >= self.crash_patterns:
                return True
        return False

    def _add_monitor(self, app: MonitorApp, path: str, props: dict[str, Variant]) -> None:
        if path in app.monitors:
            return
        monitor = _parse_monitor(app, path, props)
        if monitor is None:
            # Initialisation failed: BlueZ releases the monitor.
            self._call(app.owner, path, "Release")
            return
        app.monitors[path] = monitor
        self._call(app.owner, path, "Activate")
        self._recount()

    def _on_signal(self, msg: Message) -> None:
        if msg.interface != OBJECT_MANAGER or not self.apps:
            return
        for app in self.apps.values():
            if app.owner != msg.sender:
                continue
            path = msg.body[0]
            if not (path == app.root or path.startswith(app.root.rstrip("/") + "/")):
                continue
            if msg.member == "InterfacesAdded" and BLUEZ_MONITOR in msg.body[1]:
                self._add_monitor(app, path, msg.body[1][BLUEZ_MONITOR])
            elif msg.member == "InterfacesRemoved" and BLUEZ_MONITOR in msg.body[1]:
                app.monitors.pop(path, None)
                self._recount()

    def sender_gone(self, owner: str) -> None:
        for key in [k for k in self.apps if k[0] == owner]:
            del self.apps[key]
        self._recount()

    def release_all(self) -> None:
        for app in self.apps.values():
            self._release(app)
        self.apps.clear()
        self._recount()
        if self._on_signal in self.server.signal_hooks:
            self.server.signal_hooks.remove(self._on_signal)
        for task in self._tasks:
            task.cancel()

    def abandon(self) -> None:
        """Forget everything without a word (bluetoothd crashed)."""
        self.apps.clear()
        self.active = False
        if self._on_signal in self.server.signal_hooks:
            self.server.signal_hooks.remove(self._on_signal)
        for task in self._tasks:
            task.cancel()

    def _release(self, app: MonitorApp) -> None:
        for path in app.monitors:
            self._call(app.owner, path, "Release")
        app.monitors.clear()
        self._recount()

    def _recount(self) -> None:
        self.active = any(app.monitors for app in self.apps.values())

    def _call(
        self, owner: str, path: str, member: str, signature: str = "", body: Any = None
    ) -> None:
        self.server.send(wire.no_reply_call(owner, path, BLUEZ_MONITOR, member, signature, body))

    # --- reports -------------------------------------------------------------

    def match(self, report: Report) -> list[Monitor] | None:
        ads = report.ad_structures()
        out = [m for app in self.apps.values() for m in app.monitors.values() if m.matches(ads)]
        return out or None

    def device_seen(self, dev: Device, monitors: list[Monitor], rssi: int) -> None:
        """DeviceFound once per device and monitor; DeviceLost after RSSILowTimeout below low."""
        now = self.adapter.loop.time()
        for m in monitors:
            if dev.path in m.found:
                if m.rssi_low != MONITOR_RSSI_UNSET and rssi < m.rssi_low:
                    since = m.below_since.setdefault(dev.path, now)
                    if now - since >= m.low_timeout:
                        m.found.discard(dev.path)
                        m.below_since.pop(dev.path, None)
                        self._call(m.app.owner, m.path, "DeviceLost", "o", [dev.path])
                else:
                    m.below_since.pop(dev.path, None)
                continue
            if m.rssi_high != MONITOR_RSSI_UNSET and rssi < m.rssi_high:
                continue
            m.found.add(dev.path)
            self._call(m.app.owner, m.path, "DeviceFound", "o", [dev.path])

    def device_removed(self, dev: Device) -> None:
        for app in self.apps.values():
            for m in app.monitors.values():
                if dev.path in m.found:
                    m.found.discard(dev.path)
                    m.below_since.pop(dev.path, None)
                    self._call(app.owner, m.path, "DeviceLost", "o", [dev.path])


def _match_call(member: str, app: MonitorApp) -> Message:
    return wire.method_call(DBUS_SERVICE, DBUS_PATH, DBUS_INTERFACE, member, "s", [app.match_rule])


def _parse_monitor(app: MonitorApp, path: str, props: dict[str, Variant]) -> Monitor | None:
    """The checks of ``parse_monitor_type`` / ``parse_patterns`` / ``parse_rssi_and_timeout``."""
    kind = props.get("Type")
    if not isinstance(kind, Variant) or kind.signature != "s" or kind.value != "or_patterns":
        return None
    raw = props.get("Patterns")
    if not isinstance(raw, Variant) or raw.signature != "a(yyay)" or not raw.value:
        return None
    patterns: list[tuple[int, int, bytes]] = []
    for start, ad_type, content in raw.value:
        content = bytes(content)
        if not content or start + len(content) > MAX_PATTERN_BYTES:
            return None
        patterns.append((start, ad_type, content))
    monitor = Monitor(app, path, patterns)
    for name, attr, sig in (
        ("RSSILowThreshold", "rssi_low", "n"),
        ("RSSIHighThreshold", "rssi_high", "n"),
        ("RSSILowTimeout", "low_timeout", "q"),
    ):
        value = props.get(name)
        if value is None:
            continue
        if not isinstance(value, Variant) or value.signature != sig:
            return None
        setattr(monitor, attr, value.value)
    return monitor
