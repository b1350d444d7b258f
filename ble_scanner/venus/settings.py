"""The scanner's settings in Venus localsettings (``/Settings/BleScanner/…``), followed live.

On a GX device the user changes settings in the GUI, over MQTT or with
``dbus -y com.victronenergy.settings``; localsettings stores them and sends
``PropertiesChanged`` on each path. This client creates the settings with
``AddSettings`` (int / float / string defaults only: localsettings refuses
booleans), reads back what is stored, validates every value it receives (a bad
value is logged and the previous one kept), and reports changes through one
callback. It also allocates the VRM device instance through
``ClassAndVrmInstance``. Without localsettings (a development machine) the
defaults apply and the log says so once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from ..const import (
    DBUS_INTERFACE,
    DBUS_PATH,
    DBUS_SERVICE,
    DEFAULT_BROADCAST_KEEPALIVE,
    DEFAULT_BROADCAST_RSSI_DELTA,
    DEFAULT_CACHE_SIZE,
    DEFAULT_LOST_TIMEOUT,
)
from .const import (
    ADD_SETTING_OK,
    BUSITEM_INTERFACE,
    DEVICE_CLASS,
    DEVICE_SETTINGS_ID,
    DEVICES_PREFIX,
    PREFERRED_DEVICE_INSTANCE,
    SETTINGS_CALL_TIMEOUT,
    SETTINGS_INTERFACE,
    SETTINGS_PREFIX,
    SETTINGS_SERVICE,
    SETTINGS_WAIT_TIMEOUT,
)

_LOGGER = logging.getLogger(__name__)

Raw = int | float | str


@dataclass(frozen=True, slots=True)
class ScannerSettings:
    """The settings the scanner runs with, validated and typed."""

    adapters: tuple[str, ...] = ()  # empty: every adapter
    lost_timeout: float = DEFAULT_LOST_TIMEOUT
    cache_size: int = DEFAULT_CACHE_SIZE
    broadcast_keepalive: float = DEFAULT_BROADCAST_KEEPALIVE  # 0: never
    broadcast_rssi_delta: int = DEFAULT_BROADCAST_RSSI_DELTA
    ignore_company_ids: frozenset[int] = frozenset()
    scan_mode: str = "active"
    publish_devices: bool = False
    publish_devices_max: int = 20
    custom_name: str = ""


# --- parsers: a raw localsettings value to the typed one, or ValueError ---------

_ADAPTER = re.compile(r"hci\d{1,3}")
# A list in a setting is typed by a person; 64 entries is more than anyone lists.
_MAX_LIST = 64


def _number(raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ValueError("not a number")
    return float(raw)


def _in_range(low: float, high: float) -> Callable[[object], float]:
    def parse(raw: object) -> float:
        value = _number(raw)
        if not low <= value <= high:
            raise ValueError(f"outside {low:g}..{high:g}")
        return value

    return parse


def _int_in_range(low: int, high: int) -> Callable[[object], int]:
    def parse(raw: object) -> int:
        value = _number(raw)
        if not value.is_integer():
            raise ValueError("not a whole number")
        if not low <= value <= high:
            raise ValueError(f"outside {low}..{high}")
        return int(value)

    return parse


def _text(raw: object) -> str:
    if not isinstance(raw, str):
        raise ValueError("not a string")
    return raw


def _items(raw: object) -> list[str]:
    items = [part.strip() for part in _text(raw).split(",") if part.strip()]
    if len(items) > _MAX_LIST:
        raise ValueError(f"more than {_MAX_LIST} entries")
    return items


def parse_adapters(raw: object) -> tuple[str, ...]:
    """``"hci0, hci1"`` -> ``("hci0", "hci1")``; empty means every adapter."""
    names = _items(raw)
    for name in names:
        if not _ADAPTER.fullmatch(name):
            raise ValueError(f"{name!r} is not an adapter name like hci0")
    return tuple(dict.fromkeys(names))


def parse_company_ids(raw: object) -> frozenset[int]:
    """``"0x004C, 89"`` -> ``{0x004C, 89}``: Bluetooth SIG company ids, decimal or hex."""
    ids = set()
    for item in _items(raw):
        try:
            value = int(item, 0)
        except ValueError:
            raise ValueError(f"{item!r} is not a company id (decimal or 0x hex)") from None
        if not 0 <= value <= 0xFFFF:
            raise ValueError(f"{item!r} is outside 0..0xFFFF")
        ids.add(value)
    return frozenset(ids)


def parse_scan_mode(raw: object) -> str:
    mode = _text(raw).strip().lower()
    if mode not in ("active", "passive", "auto"):
        raise ValueError("not 'active', 'passive' or 'auto'")
    return mode


def parse_flag(raw: object) -> bool:
    return bool(_int_in_range(0, 1)(raw))


def parse_custom_name(raw: object) -> str:
    name = _text(raw)
    if len(name) > 128:
        raise ValueError("longer than 128 characters")
    return name


@dataclass(frozen=True, slots=True)
class SettingSpec:
    """One setting: where it lives, what localsettings is told, how a value is checked."""

    field: str  # in ScannerSettings
    name: str  # below /Settings/BleScanner
    default: Raw
    min: Raw | None
    max: Raw | None
    parse: Callable[[object], Any]
    help: str

    @property
    def path(self) -> str:
        return f"{SETTINGS_PREFIX}/{self.name}"


SETTINGS: Final[tuple[SettingSpec, ...]] = (
    SettingSpec(
        "adapters", "Adapters", "", None, None, parse_adapters,
        "Adapters to scan on, comma separated (hci0,hci1); empty: all",
    ),
    # 10 s: below that a device advertising every few seconds flaps; a day is
    # the longest "present" means anything for a sensor.
    SettingSpec(
        "lost_timeout", "LostTimeout", DEFAULT_LOST_TIMEOUT, 10.0, 86400.0,
        _in_range(10.0, 86400.0),
        "Seconds without an advertisement before a device is lost",
    ),
    # 100 keeps a busy marina usable; 50 000 is ~100 MB at the 2 KB/device budget,
    # a tenth of an original Cerbo GX's RAM.
    SettingSpec(
        "cache_size", "CacheSize", DEFAULT_CACHE_SIZE, 100, 50_000,
        _int_in_range(100, 50_000),
        "Most devices kept; the least recently heard go first",
    ),
    # 0 turns the keep-alive off; an hour is the longest gap a listener can use.
    SettingSpec(
        "broadcast_keepalive", "BroadcastKeepAlive", DEFAULT_BROADCAST_KEEPALIVE, 0.0, 3600.0,
        _in_range(0.0, 3600.0),
        "Seconds between repeats of an unchanged device on the broadcast; 0: never",
    ),
    # 1 dBm is every change; beyond 60 dBm no RSSI change would ever count.
    SettingSpec(
        "broadcast_rssi_delta", "BroadcastRssiDelta", DEFAULT_BROADCAST_RSSI_DELTA, 1, 60,
        _int_in_range(1, 60),
        "RSSI change (dBm) that re-sends a device on the broadcast",
    ),
    SettingSpec(
        "ignore_company_ids", "IgnoreCompanyIds", "", None, None, parse_company_ids,
        "Manufacturer ids never reported, comma separated (decimal or 0x hex)",
    ),
    SettingSpec(
        "scan_mode", "ScanMode", "active", None, None, parse_scan_mode,
        "active (asks for scan responses, which carry most names), passive, or auto "
        "(passive with active windows on request)",
    ),
    SettingSpec(
        "publish_devices", "PublishDevices", 0, 0, 1, parse_flag,
        "1: publish a capped, throttled device list under /Devices in the Venus tree",
    ),
    # The list goes to MQTT and VRM through flashmq: keep it short.
    SettingSpec(
        "publish_devices_max", "PublishDevicesMax", 20, 1, 100,
        _int_in_range(1, 100),
        "Most devices published when PublishDevices is 1 (strongest first)",
    ),
    SettingSpec(
        "custom_name", "CustomName", "", None, None, parse_custom_name,
        "Name shown for the scanner in the GUI and VRM (also /CustomName)",
    ),
)  # fmt: skip

_BY_PATH: Final = {spec.path: spec for spec in SETTINGS}
_BY_FIELD: Final = {spec.field: spec for spec in SETTINGS}


def parse_class_and_instance(raw: object) -> tuple[str, int]:
    """``"ble:20"`` -> ``("ble", 20)``."""
    device_class, sep, number = _text(raw).partition(":")
    if not sep or not device_class or not number.isdigit():
        raise ValueError("not 'class:instance'")
    return device_class, int(number)


def _variant(value: Raw) -> Variant:
    """A default as localsettings types it: int32, double or string (never bool)."""
    if isinstance(value, bool):
        raise TypeError("localsettings has no boolean settings; use 0 / 1")
    if isinstance(value, int):
        return Variant("i", value)
    if isinstance(value, float):
        return Variant("d", value)
    return Variant("s", value)


def _definition(path: str, default: Raw, low: Raw | None, high: Raw | None) -> dict[str, Variant]:
    definition = {"path": Variant("s", path), "default": _variant(default)}
    if low is not None:
        definition["min"] = _variant(low)
    if high is not None:
        definition["max"] = _variant(high)
    return definition


OnChange = Callable[[ScannerSettings, frozenset[str]], None]
"""(new settings, names of the fields that changed)."""


class SettingsClient:
    """Our settings in localsettings: created, read, validated and followed.

    ``values`` always holds valid settings: ``defaults`` until localsettings
    answers, the stored values after, and the previous value for any field
    that receives something invalid.
    """

    def __init__(
        self,
        bus: MessageBus,
        on_change: OnChange | None = None,
        defaults: ScannerSettings | None = None,
        on_device_instance: Callable[[int], None] | None = None,
    ) -> None:
        self._bus = bus
        self._on_change = on_change
        self._on_device_instance = on_device_instance
        self.values = defaults or ScannerSettings()
        self.device_instance: int | None = None
        self._instance_path: str | None = None
        self._instance_default = ""
        self._owner: str | None = None
        self._owner_seen = asyncio.Event()
        self._said_absent = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._rules = (
            f"type='signal',sender='{DBUS_SERVICE}',interface='{DBUS_INTERFACE}',"
            f"member='NameOwnerChanged',arg0='{SETTINGS_SERVICE}'",
            f"type='signal',interface='{BUSITEM_INTERFACE}',member='PropertiesChanged',"
            f"path_namespace='{SETTINGS_PREFIX}'",
            f"type='signal',interface='{BUSITEM_INTERFACE}',member='PropertiesChanged',"
            f"path_namespace='{DEVICES_PREFIX}/{DEVICE_SETTINGS_ID}'",
        )
        bus.add_message_handler(self._on_message)

    @property
    def present(self) -> bool:
        """True while localsettings is on the bus."""
        return self._owner is not None

    async def start(self, wait: float = SETTINGS_WAIT_TIMEOUT) -> bool:
        """Create and read our settings; False (logged once) if localsettings is absent.

        Waits up to ``wait`` seconds for localsettings to appear. If it comes later,
        or restarts, the settings are created and read again then.
        """
        for rule in self._rules:
            await self._call(DBUS_SERVICE, DBUS_PATH, DBUS_INTERFACE, "AddMatch", "s", [rule])
        reply = await self._call(
            DBUS_SERVICE, DBUS_PATH, DBUS_INTERFACE, "GetNameOwner", "s", [SETTINGS_SERVICE]
        )
        if reply is not None and reply.message_type == MessageType.METHOD_RETURN:
            self._owner = reply.body[0]
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._owner_seen.wait(), wait)
        if self._owner is None:
            self._say_absent()
            return False
        return await self._add_settings()

    async def allocate_device_instance(
        self,
        unique_id: str = DEVICE_SETTINGS_ID,
        device_class: str = DEVICE_CLASS,
        preferred: int = PREFERRED_DEVICE_INSTANCE,
    ) -> int:
        """The VRM instance from ``/Settings/Devices/<unique_id>/ClassAndVrmInstance``.

        localsettings hands out the preferred instance or the next free one of
        the class. 0 is never used (flashmq would put us on ``ble/0``, Victron's
        com.victronenergy.ble); a stored 0 is moved to ``preferred``. Without
        localsettings it is ``preferred``.
        """
        self._instance_path = f"{DEVICES_PREFIX}/{unique_id}/ClassAndVrmInstance"
        self._instance_default = f"{device_class}:{preferred}"
        self.device_instance = preferred
        if self._owner is not None:
            await self._add_instance(preferred)
        return self.device_instance

    async def set_value(self, field: str, value: Raw) -> bool:
        """Store ``field`` (a ScannerSettings name) in localsettings; True if it took it.

        Without localsettings the value applies until restart and False is
        returned. The change arrives back as PropertiesChanged like any other.
        """
        spec = _BY_FIELD[field]
        spec.parse(value)  # ValueError before anything is sent
        if self._owner is None:
            self._apply(spec, value, source="locally (localsettings is absent)")
            return False
        reply = await self._call(
            SETTINGS_SERVICE, spec.path, BUSITEM_INTERFACE, "SetValue", "v", [_variant(value)]
        )
        ok = reply is not None and reply.message_type == MessageType.METHOD_RETURN
        if not ok or reply is None or reply.body[0] != 0:
            _LOGGER.warning("localsettings refused %s = %r", spec.path, value)
            return False
        return True

    async def set_custom_name(self, name: str) -> bool:
        return await self.set_value("custom_name", name)

    async def close(self) -> None:
        self._bus.remove_message_handler(self._on_message)
        for task in list(self._tasks):
            task.cancel()
        if self._bus.connected:
            for rule in self._rules:
                await self._call(
                    DBUS_SERVICE, DBUS_PATH, DBUS_INTERFACE, "RemoveMatch", "s", [rule]
                )

    # --- internals ------------------------------------------------------------

    async def _call(
        self, destination: str, path: str, interface: str, member: str, sig: str, body: list[Any]
    ) -> Message | None:
        try:
            return await asyncio.wait_for(
                self._bus.call(
                    Message(
                        destination=destination,
                        path=path,
                        interface=interface,
                        member=member,
                        signature=sig,
                        body=body,
                    )
                ),
                SETTINGS_CALL_TIMEOUT,
            )
        except (TimeoutError, OSError, EOFError) as e:
            _LOGGER.warning("%s on %s %s failed: %r", member, destination, path, e)
            return None

    async def _add(self, definitions: list[dict[str, Variant]]) -> list[dict[str, Variant]] | None:
        reply = await self._call(
            SETTINGS_SERVICE, "/", SETTINGS_INTERFACE, "AddSettings", "aa{sv}", [definitions]
        )
        if reply is None or reply.message_type != MessageType.METHOD_RETURN:
            error = reply.error_name if reply is not None else "no answer"
            _LOGGER.error("AddSettings failed (%s); using defaults", error)
            return None
        results: list[dict[str, Variant]] = reply.body[0]
        return results

    async def _add_settings(self) -> bool:
        definitions = [_definition(s.path, s.default, s.min, s.max) for s in SETTINGS]
        results = await self._add(definitions)
        if results is None:
            return False
        for spec, result in zip(SETTINGS, results, strict=False):
            error = result.get("error")
            code = error.value if error is not None else None
            if code != ADD_SETTING_OK or "value" not in result:
                _LOGGER.error(
                    "localsettings refused %s (error %s); using %r",
                    spec.path,
                    code,
                    getattr(self.values, spec.field),
                )
                continue
            self._apply(spec, result["value"].value, source="localsettings")
        if self._instance_path is not None:
            await self._add_instance(self.device_instance or PREFERRED_DEVICE_INSTANCE)
        return True

    async def _add_instance(self, preferred: int) -> None:
        assert self._instance_path is not None
        results = await self._add(
            [_definition(self._instance_path, self._instance_default, None, None)]
        )
        if not results:
            return
        result = results[0]
        error = result.get("error")
        if error is None or error.value != ADD_SETTING_OK or "value" not in result:
            _LOGGER.error(
                "localsettings refused %s (error %s); using instance %d",
                self._instance_path,
                error.value if error is not None else None,
                preferred,
            )
            return
        await self._apply_instance(result["value"].value, preferred)

    async def _apply_instance(self, raw: object, preferred: int) -> None:
        try:
            _, instance = parse_class_and_instance(raw)
        except ValueError as e:
            _LOGGER.error("Ignoring %s = %r: %s", self._instance_path, raw, e)
            return
        if instance == 0:
            # flashmq would publish us as ble/0 over Victron's com.victronenergy.ble.
            _LOGGER.warning(
                "Device instance 0 is taken by Victron's ble service; asking for %d", preferred
            )
            assert self._instance_path is not None
            device_class = self._instance_default.partition(":")[0]
            await self._call(
                SETTINGS_SERVICE,
                self._instance_path,
                BUSITEM_INTERFACE,
                "SetValue",
                "v",
                [Variant("s", f"{device_class}:{preferred}")],
            )
            return  # the new value arrives as PropertiesChanged
        if instance != self.device_instance:
            self.device_instance = instance
            if self._on_device_instance is not None:
                self._on_device_instance(instance)

    def _apply(self, spec: SettingSpec, raw: object, source: str) -> None:
        old = getattr(self.values, spec.field)
        try:
            value = spec.parse(raw)
        except ValueError as e:
            _LOGGER.warning(
                "Ignoring %s = %r from %s: %s; keeping %r", spec.path, raw, source, e, old
            )
            return
        if value == old:
            return
        self.values = dataclasses.replace(self.values, **{spec.field: value})
        _LOGGER.info("%s = %r", spec.path, raw)
        if self._on_change is not None:
            self._on_change(self.values, frozenset((spec.field,)))

    def _say_absent(self) -> None:
        if not self._said_absent:
            self._said_absent = True
            _LOGGER.warning(
                "localsettings (%s) is not on the bus; using defaults and command-line options",
                SETTINGS_SERVICE,
            )

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_message(self, msg: Message) -> bool:
        if msg.message_type != MessageType.SIGNAL:
            return False
        if msg.member == "NameOwnerChanged" and msg.sender == DBUS_SERVICE:
            name, _, new_owner = msg.body
            if name == SETTINGS_SERVICE:
                self._owner_changed(new_owner or None)
            return False
        if (
            msg.member == "PropertiesChanged"
            and msg.interface == BUSITEM_INTERFACE
            and msg.sender == self._owner
            and msg.sender is not None
        ):
            self._properties_changed(msg.path or "", msg.body[0])
        return False

    def _owner_changed(self, owner: str | None) -> None:
        had_owner = self._owner is not None
        self._owner = owner
        if owner is None:
            if had_owner:
                _LOGGER.warning("localsettings left the bus; keeping the current settings")
            return
        if not self._owner_seen.is_set():
            self._owner_seen.set()
            if not self._said_absent:
                return  # start() is waiting for it and adds the settings itself
        _LOGGER.info("localsettings is on the bus; reading the settings")
        self._spawn(self._add_settings())

    def _properties_changed(self, path: str, changes: Mapping[str, Variant]) -> None:
        change = changes.get("Value")
        if change is None:
            return
        if path == self._instance_path:
            self._spawn(self._apply_instance(change.value, PREFERRED_DEVICE_INSTANCE))
            return
        spec = _BY_PATH.get(path)
        if spec is not None:
            self._apply(spec, change.value, source="localsettings")
