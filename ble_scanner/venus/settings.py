"""The scanner's settings in Venus localsettings (``/Settings/BleScanner/…``), followed live.

On a GX device the user changes settings in the GUI, over MQTT or with
``dbus -y com.victronenergy.settings``; localsettings stores them and sends
``PropertiesChanged`` on each path. This client creates the settings with
``AddSettings`` (from ``config/table.py``: int / float / string defaults only,
localsettings refuses booleans), reads back what is stored, checks every value
it receives against the table (a bad value is logged and the previous one
kept), and reports changes through one callback. It also allocates the VRM
device instance through ``ClassAndVrmInstance``. Without localsettings (a
development machine) the command-line values apply and the log says so once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Final

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from ..bus.calls import (
    BusGoneError,
    CallError,
    add_match,
    call,
    name_owner,
    name_owner_rule,
    remove_match,
    signal_rule,
)
from ..bus.owner import owner_change
from ..config import (
    BY_FIELD,
    BY_PATH,
    ScannerConfig,
    Setting,
    add_settings_definitions,
    from_stored,
    with_values,
)
from ..tasks import TaskSet
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
    SETVALUE_OK,
)

_LOGGER = logging.getLogger(__name__)

Raw = int | float | str
# How a call to localsettings or the bus daemon can fail (bus/calls.py).
CALL_FAILED: Final = (CallError, TimeoutError, BusGoneError)


def parse_class_and_instance(raw: object) -> tuple[str, int]:
    """``"ble:20"`` -> ``("ble", 20)``."""
    if not isinstance(raw, str):
        raise ValueError("not a string")
    device_class, sep, number = raw.partition(":")
    if not sep or not device_class or not number.isdigit():
        raise ValueError("not 'class:instance'")
    return device_class, int(number)


def _variant(value: Raw) -> Variant:
    """A value as localsettings types it: int32, double or string (never bool)."""
    if isinstance(value, bool):
        raise TypeError("localsettings has no boolean settings; use 0 / 1")
    if isinstance(value, int):
        return Variant("i", value)
    if isinstance(value, float):
        return Variant("d", value)
    return Variant("s", value)


def _definition(entry: Mapping[str, Raw]) -> dict[str, Variant]:
    return {key: _variant(value) for key, value in entry.items()}


async def set_setting(bus: MessageBus, path: str, value: Raw) -> bool:
    """SetValue on any localsettings path; True if stored, else False and a warning says why."""
    try:
        (code,) = await call(
            bus,
            SETTINGS_SERVICE,
            path,
            BUSITEM_INTERFACE,
            "SetValue",
            "v",
            [_variant(value)],
            timeout=SETTINGS_CALL_TIMEOUT,
        )
    except CALL_FAILED as exc:
        _LOGGER.warning("localsettings did not store %s = %r: %s", path, value, exc)
        return False
    if code != SETVALUE_OK:
        _LOGGER.warning("localsettings refused %s = %r (%s)", path, value, code)
        return False
    return True


def settings_rules(*namespaces: str) -> tuple[str, ...]:
    """Match rules for localsettings' owner and for changes of the settings below each path."""
    return (
        name_owner_rule(SETTINGS_SERVICE),
        *(
            signal_rule(
                interface=BUSITEM_INTERFACE, member="PropertiesChanged", path_namespace=namespace
            )
            for namespace in namespaces
        ),
    )


async def follow(bus: MessageBus, rules: tuple[str, ...]) -> str | None:
    """Add the match rules for localsettings' signals; its owner now (None: not on the bus).

    Raises what ``bus/calls.py`` raises (``CALL_FAILED``).
    """
    for rule in rules:
        await add_match(bus, rule, timeout=SETTINGS_CALL_TIMEOUT)
    return await name_owner(bus, SETTINGS_SERVICE, timeout=SETTINGS_CALL_TIMEOUT)


async def unfollow(bus: MessageBus, rules: tuple[str, ...]) -> None:
    """Remove the match rules ``follow`` added, if the bus is still there."""
    if bus.connected:
        for rule in rules:
            with contextlib.suppress(*CALL_FAILED):
                await remove_match(bus, rule, timeout=SETTINGS_CALL_TIMEOUT)


OnChange = Callable[[ScannerConfig, frozenset[str]], None]
"""(the new values, names of the fields that changed)."""


class SettingsClient:
    """Our settings in localsettings: created, read, checked and followed.

    ``values`` always holds valid settings: ``defaults`` (the command line)
    until localsettings answers, the stored values after, and the previous
    value for any setting that receives something invalid.
    """

    def __init__(
        self,
        bus: MessageBus,
        on_change: OnChange | None = None,
        defaults: ScannerConfig | None = None,
        on_device_instance: Callable[[int], None] | None = None,
    ) -> None:
        self._bus = bus
        self._on_change = on_change
        self._on_device_instance = on_device_instance
        self.values = defaults or ScannerConfig()
        self.device_instance: int | None = None
        self._instance_path: str | None = None
        self._instance_default = ""
        self._owner: str | None = None
        self._owner_seen = asyncio.Event()
        self._said_absent = False
        self._tasks = TaskSet(_LOGGER, "a localsettings step")
        self._rules = settings_rules(SETTINGS_PREFIX, f"{DEVICES_PREFIX}/{DEVICE_SETTINGS_ID}")
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
        try:
            owner = await follow(self._bus, self._rules)
        except CALL_FAILED as exc:
            if not isinstance(exc, BusGoneError):  # the bus itself gone: main.py says so, once
                _LOGGER.error("cannot follow localsettings (%s); using the defaults", exc)
            return False
        if owner is not None:
            self._owner = owner
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
        """Store ``field`` (a ScannerConfig name) in localsettings; True if it took it.

        A value the table refuses is a ValueError, and nothing is sent. Without
        localsettings the value applies until restart and False is returned.
        The change arrives back as PropertiesChanged like any other.
        """
        setting = BY_FIELD[field]
        if setting.path is None:
            raise ValueError(f"{field} is not kept in localsettings")
        from_stored(setting, value)  # ValueError before anything is sent
        if self._owner is None:
            self._apply(setting, value, source="locally (localsettings is absent)")
            return False
        return await set_setting(self._bus, setting.path, value)

    async def set_custom_name(self, name: str) -> bool:
        return await self.set_value("custom_name", name)

    async def close(self) -> None:
        self._bus.remove_message_handler(self._on_message)
        self._tasks.cancel()
        await unfollow(self._bus, self._rules)

    # --- internals ------------------------------------------------------------

    async def _add(self, definitions: list[dict[str, Variant]]) -> list[dict[str, Variant]] | None:
        try:
            (results,) = await call(
                self._bus,
                SETTINGS_SERVICE,
                "/",
                SETTINGS_INTERFACE,
                "AddSettings",
                "aa{sv}",
                [definitions],
                timeout=SETTINGS_CALL_TIMEOUT,
            )
        except CALL_FAILED as exc:
            if not isinstance(exc, BusGoneError):  # the bus itself gone: main.py says so, once
                _LOGGER.error("AddSettings failed (%s); using the values we have", exc)
            return None
        answered: list[dict[str, Variant]] = results
        return answered

    async def _add_settings(self) -> bool:
        entries = add_settings_definitions()
        results = await self._add([_definition(entry) for entry in entries])
        if results is None:
            return False
        for entry, result in zip(entries, results, strict=False):
            setting = BY_PATH[str(entry["path"])]
            error = result.get("error")
            code = error.value if error is not None else None
            if code != ADD_SETTING_OK or "value" not in result:
                _LOGGER.error(
                    "localsettings refused %s (error %s); using %r",
                    setting.path,
                    code,
                    getattr(self.values, setting.field),
                )
                continue
            self._apply(setting, result["value"].value, source="localsettings")
        if self._instance_path is not None:
            await self._add_instance(self.device_instance or PREFERRED_DEVICE_INSTANCE)
        return True

    async def _add_instance(self, preferred: int) -> None:
        assert self._instance_path is not None
        results = await self._add(
            [_definition({"path": self._instance_path, "default": self._instance_default})]
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
            try:
                await call(
                    self._bus,
                    SETTINGS_SERVICE,
                    self._instance_path,
                    BUSITEM_INTERFACE,
                    "SetValue",
                    "v",
                    [Variant("s", f"{device_class}:{preferred}")],
                    timeout=SETTINGS_CALL_TIMEOUT,
                )
            except CALL_FAILED as exc:
                _LOGGER.warning("could not move the device instance off 0: %s", exc)
            return  # the new value arrives as PropertiesChanged
        if instance != self.device_instance:
            self.device_instance = instance
            if self._on_device_instance is not None:
                self._on_device_instance(instance)

    def _apply(self, setting: Setting, raw: object, source: str) -> None:
        old = getattr(self.values, setting.field)
        try:
            value = from_stored(setting, raw)
        except ValueError as e:
            _LOGGER.warning(
                "Ignoring %s = %r from %s: %s; keeping %r", setting.path, raw, source, e, old
            )
            return
        if value == old:
            return
        self.values = with_values(self.values, {setting.field: value})
        _LOGGER.info("%s = %r", setting.path, raw)
        if self._on_change is not None:
            self._on_change(self.values, frozenset((setting.field,)))

    def _say_absent(self) -> None:
        if not self._said_absent:
            self._said_absent = True
            _LOGGER.warning(
                "localsettings (%s) is not on the bus; using defaults and command-line options",
                SETTINGS_SERVICE,
            )

    def _on_message(self, msg: Message) -> bool:
        if msg.message_type != MessageType.SIGNAL:
            return False
        change = owner_change(msg)
        if change is not None:
            name, new_owner = change
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
        self._tasks.spawn(self._add_settings())

    def _properties_changed(self, path: str, changes: Mapping[str, Variant]) -> None:
        change = changes.get("Value")
        if change is None:
            return
        if path == self._instance_path:
            self._tasks.spawn(self._apply_instance(change.value, PREFERRED_DEVICE_INSTANCE))
            return
        setting = BY_PATH.get(path)
        if setting is not None:
            self._apply(setting, change.value, source="localsettings")
