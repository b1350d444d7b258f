"""A stand-in for Venus's localsettings (``com.victronenergy.settings``), for tests and the demo.

It answers the way localsettings.py (v1.7x) does, so the client is tested
against the protocol and not against our own assumptions:

- ``AddSettings(aa{sv}) -> aa{sv}`` on ``/`` or any group: ``{path, error,
  value}`` per entry; the default's D-Bus type picks the setting type (int32 /
  int64 -> ``i``, double -> ``f``, string -> ``s``; anything else, booleans
  included, is -3); an existing setting keeps its value; min = max = 0 means no
  limits; the error codes -2 … -9 of ``AddSettingError``.
- ``AddSetting`` / ``AddSilentSetting(ssvsvv) -> i`` and ``RemoveSettings(as) -> ai``.
- ``GetItems`` on ``/``; ``GetValue`` / ``GetText`` on groups (the dict below);
  ``GetValue`` / ``GetText`` / ``SetValue`` / ``GetMin`` / ``GetMax`` /
  ``GetDefault`` / ``SetDefault`` on settings, with localsettings' quirks
  (SetValue converts to the setting's type and returns -1 when it cannot or
  when min / max are exceeded).
- ``PropertiesChanged`` on the setting's path for every change (plus Min / Max
  / Default when attributes change); never ItemsChanged.
- ``/Settings/Devices/<id>/ClassAndVrmInstance``: ``class:N`` strings unique per
  class; a taken instance moves to the next free one.

``ble_sensors_settings()`` (``--ble-sensors``) adds the settings Victron's
dbus-ble-sensors keeps there, for the feed's tests.

Run it with ``python -m ble_scanner.testing.localsettings`` on the bus in
``DBUS_SYSTEM_BUS_ADDRESS`` (``--path FILE`` keeps the values in a JSON file).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
from dataclasses import asdict, dataclass
from typing import Any

from dbus_fast import BusType, Message, MessageType, NameFlag, RequestNameReply, Variant
from dbus_fast.aio import MessageBus

from ..venus.const import (
    ADD_SETTING_DEFAULT_OUT_OF_RANGE,
    ADD_SETTING_INVALID_DEFAULT,
    ADD_SETTING_INVALID_PATH,
    ADD_SETTING_IS_GROUP,
    ADD_SETTING_NOT_IN_SETTINGS,
    ADD_SETTING_OK,
    ADD_SETTING_TYPE_DIFFER,
    ADD_SETTING_UNDERSCORE_PREFIX,
    ADD_SETTING_UNKNOWN_TYPE,
    BUSITEM_INTERFACE,
    DEVICES_PREFIX,
    SETTINGS_INTERFACE,
    SETTINGS_SERVICE,
)

_LOGGER = logging.getLogger(__name__)

_ERR = -1  # localsettings' DBUS_ERR
# Closing our own connection takes a round trip; longer means the bus is gone.
DISCONNECT_TIMEOUT = 5.0
_CONVERT = {"i": int, "f": float, "s": str}
_ERROR_UNKNOWN_OBJECT = "org.freedesktop.DBus.Error.UnknownObject"
_ERROR_UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"
_ERROR_INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"

Raw = int | float | str


@dataclass
class Setting:
    """One stored setting, with localsettings' attributes."""

    type: str  # "i", "f" or "s"
    value: Raw
    default: Raw
    min: Raw | None = None
    max: Raw | None = None
    silent: bool = False


def _convert(kind: str, value: Any) -> Raw | None:
    """localsettings' convertToType: the Python constructor of the type, or None."""
    if value is None:
        return None
    try:
        converted: Raw = _CONVERT[kind](value)
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    return converted


def _wrap(kind: str, value: Raw) -> Variant:
    """localsettings' dbus_wrap: int32 (int64 beyond it), double, string."""
    if kind == "i":
        return Variant("x" if int(value) > 0x7FFFFFFF else "i", int(value))
    if kind == "f":
        return Variant("d", float(value))
    return Variant("s", str(value))


def _is_class_and_vrm_instance(path: str) -> bool:
    """/Settings/Devices/<id>/ClassAndVrmInstance, the one setting with unique values."""
    return (
        path.startswith(DEVICES_PREFIX + "/")
        and path.count("/") == 4
        and (path.endswith("/ClassAndVrmInstance"))
    )


def _text(value: Raw) -> str:
    return str(value)


class LocalSettingsStandIn:
    """``com.victronenergy.settings`` served from memory on one connection.

    ``await LocalSettingsStandIn.start(address)`` connects, serves and owns the
    name; ``await stop()`` leaves the bus. ``settings`` may be handed to a new
    instance to model a restart that kept the stored values.
    """

    def __init__(
        self,
        bus: MessageBus,
        settings: dict[str, Setting] | None = None,
        store: str | None = None,
    ) -> None:
        self.bus = bus
        self.settings: dict[str, Setting] = dict(settings or {})
        self._store = store
        bus.add_message_handler(self._on_message)

    @classmethod
    async def start(
        cls,
        address: str | None = None,
        settings: dict[str, Setting] | None = None,
        store: str | None = None,
    ) -> LocalSettingsStandIn:
        bus = await MessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()
        standin = cls(bus, settings, store)
        reply = await bus.request_name(SETTINGS_SERVICE, NameFlag.DO_NOT_QUEUE)
        if reply != RequestNameReply.PRIMARY_OWNER:
            bus.disconnect()
            raise RuntimeError(f"{SETTINGS_SERVICE} is already owned")
        return standin

    async def stop(self) -> None:
        if self.bus.connected:
            self.bus.disconnect()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.bus.wait_for_disconnect(), DISCONNECT_TIMEOUT)  # type: ignore[no-untyped-call]

    # --- local API (what the GUI or a test does) -----------------------------

    def value(self, path: str) -> Raw:
        return self.settings[path].value

    def set_value(self, path: str, value: Any) -> int:
        """SetValue as a D-Bus caller would do it; returns localsettings' code."""
        return self._set_value(path, value)

    # --- groups ---------------------------------------------------------------

    def _is_group(self, path: str) -> bool:
        if path in ("/", "/Settings", DEVICES_PREFIX):
            return True
        prefix = path + "/"
        return any(p.startswith(prefix) for p in self.settings)

    def _below(self, group: str) -> dict[str, Setting]:
        prefix = "/" if group == "/" else group + "/"
        return {p[len(prefix) :]: s for p, s in self.settings.items() if p.startswith(prefix)}

    # --- AddSettings ----------------------------------------------------------

    def add_setting(
        self,
        group: str,
        relative: str,
        default: Any,
        kind: str,
        minimum: Any,
        maximum: Any,
        silent: bool,
    ) -> tuple[int, Setting | None, str]:
        """localsettings' GroupObject.addSetting; returns (error, setting, full path)."""
        base = "" if group == "/" else group
        path = base + "/" + relative.lstrip("/")
        if "/_" in path:
            return ADD_SETTING_UNDERSCORE_PREFIX, None, path
        if kind not in _CONVERT:
            return ADD_SETTING_UNKNOWN_TYPE, None, path
        value = _convert(kind, default)
        if value is None:
            return ADD_SETTING_INVALID_DEFAULT, None, path
        low = _convert(kind, minimum)
        high = _convert(kind, maximum)
        if kind == "s":
            low = high = None
        else:
            if low == 0 and high == 0:
                low = high = None
            if low is not None and value < low:  # type: ignore[operator]
                return ADD_SETTING_DEFAULT_OUT_OF_RANGE, None, path
            if high is not None and value > high:  # type: ignore[operator]
                return ADD_SETTING_DEFAULT_OUT_OF_RANGE, None, path
        if group == "/" and not path.startswith("/Settings/"):
            return ADD_SETTING_NOT_IN_SETTINGS, None, path
        if any(part == "" for part in path.split("/")[1:]):
            return ADD_SETTING_INVALID_PATH, None, path
        setting = self.settings.get(path)
        if setting is None:
            if self._is_group(path):
                return ADD_SETTING_IS_GROUP, None, path
            parts = path.split("/")
            if any("/".join(parts[:n]) in self.settings for n in range(2, len(parts))):
                return ADD_SETTING_INVALID_PATH, None, path  # a setting cannot hold settings
            setting = Setting(kind, value, value, low, high, silent)
            if not self._store_value(path, setting, value, attributes=True):
                return ADD_SETTING_INVALID_DEFAULT, None, path
            _LOGGER.info("Added new setting %s. default:%s, type:%s", path, value, kind)
            return ADD_SETTING_OK, setting, path
        if setting.type != kind:
            return ADD_SETTING_TYPE_DIFFER, None, path
        if (setting.default, setting.min, setting.max, setting.silent) == (
            value,
            low,
            high,
            silent,
        ):
            return ADD_SETTING_OK, setting, path
        setting.default, setting.min, setting.max, setting.silent = value, low, high, silent
        self._store_value(path, setting, setting.value, attributes=True)
        return ADD_SETTING_OK, setting, path

    def _add_settings(self, group: str, definitions: list[dict[str, Variant]]) -> list[Any]:
        results: list[dict[str, Variant]] = []
        for props in definitions:
            result: dict[str, Variant] = {}
            results.append(result)
            path = props.get("path")
            if path is None or path.signature != "s":
                if path is not None and path.value:
                    result["path"] = path
                result["error"] = Variant("i", ADD_SETTING_INVALID_PATH)
                continue
            result["path"] = path
            default = props.get("default")
            kinds = {"i": "i", "x": "i", "d": "f", "s": "s"}
            if default is None or default.signature not in kinds:
                result["error"] = Variant("i", ADD_SETTING_UNKNOWN_TYPE)
                continue
            silent = props.get("silent")
            error, setting, _ = self.add_setting(
                group,
                path.value,
                default.value,
                kinds[default.signature],
                props["min"].value if "min" in props else None,
                props["max"].value if "max" in props else None,
                bool(silent.value) if silent is not None else False,
            )
            result["error"] = Variant("i", error)
            if setting is not None:
                result["value"] = _wrap(setting.type, setting.value)
        return [results]

    # --- values ---------------------------------------------------------------

    def _set_value(self, path: str, raw: Any) -> int:
        setting = self.settings[path]
        value = _convert(setting.type, raw)
        if value is None:
            return _ERR
        # localsettings tests min/max by truth, so a limit of 0 is no limit.
        if setting.min and value < setting.min:  # type: ignore[operator]
            return _ERR
        if setting.max and value > setting.max:  # type: ignore[operator]
            return _ERR
        if value != setting.value and not self._store_value(path, setting, value):
            return _ERR
        return 0

    def _store_value(
        self, path: str, setting: Setting, value: Raw, attributes: bool = False
    ) -> bool:
        if _is_class_and_vrm_instance(path):
            free = self._free_instance(path, value)
            if free is None:
                return False
            value = free
        if path in self.settings and setting.value != value and not setting.silent:
            _LOGGER.info("Setting %s changed. Old: %s, New: %s", path, setting.value, value)
        setting.value = value
        self.settings[path] = setting
        change: dict[str, Variant] = {
            "Value": _wrap(setting.type, value),
            "Text": Variant("s", _text(value)),
        }
        if attributes:
            change.update(self._attributes(setting))
        self._emit(path, change)
        self._save()
        return True

    def _free_instance(self, path: str, value: Raw) -> str | None:
        """localsettings' DevicesGroup.assureFreeInstance."""
        if not isinstance(value, str):
            return None
        parts = value.split(":")
        if len(parts) != 2:
            return None
        device_class = parts[0]
        try:
            instance = int(parts[1])
        except ValueError:
            return None
        taken = {
            s.value
            for p, s in self.settings.items()
            if p != path
            and p.startswith(DEVICES_PREFIX + "/")
            and p.endswith("/ClassAndVrmInstance")
            and isinstance(s.value, str)
            and s.value.startswith(device_class + ":")
        }
        while value in taken:
            instance += 1
            value = f"{device_class}:{instance}"
        return value

    @staticmethod
    def _attributes(setting: Setting) -> dict[str, Variant]:
        return {
            "Min": Variant("i", 0) if setting.min is None else _wrap(setting.type, setting.min),
            "Max": Variant("i", 0) if setting.max is None else _wrap(setting.type, setting.max),
            "Default": _wrap(setting.type, setting.default),
        }

    def _remove(self, path: str) -> None:
        self.settings.pop(path)
        self._emit(path, {"Value": Variant("ai", []), "Text": Variant("s", "")})
        self._save()

    def _emit(self, path: str, change: dict[str, Variant]) -> None:
        if not self.bus.connected:
            return
        self.bus.send(
            Message(
                message_type=MessageType.SIGNAL,
                path=path,
                interface=BUSITEM_INTERFACE,
                member="PropertiesChanged",
                signature="a{sv}",
                body=[change],
            )
        )

    def _save(self) -> None:
        if self._store is None:
            return
        tmp = self._store + ".new"
        with open(tmp, "w") as f:
            json.dump({p: asdict(s) for p, s in self.settings.items()}, f, indent=1, sort_keys=True)
        os.replace(tmp, self._store)

    # --- D-Bus dispatch -------------------------------------------------------

    def _on_message(self, msg: Message) -> Message | bool:
        if msg.message_type != MessageType.METHOD_CALL:
            return False
        if msg.interface not in (None, BUSITEM_INTERFACE, SETTINGS_INTERFACE):
            return False
        path = msg.path or "/"
        try:
            if path in self.settings:
                return self._setting_call(msg, path)
            if self._is_group(path):
                return self._group_call(msg, path)
        except (IndexError, KeyError, TypeError, ValueError, AttributeError) as e:
            return Message.new_error(msg, _ERROR_INVALID_ARGS, f"{msg.member}: {e}")
        return Message.new_error(msg, _ERROR_UNKNOWN_OBJECT, f"No such object path '{path}'")

    def _unknown(self, msg: Message) -> Message:
        return Message.new_error(
            msg,
            _ERROR_UNKNOWN_METHOD,
            f"{msg.member} with signature {msg.signature!r} is not known",
        )

    def _setting_call(self, msg: Message, path: str) -> Message:
        setting = self.settings[path]
        member, sig = msg.member, msg.signature
        if member == "GetValue" and sig == "":
            return Message.new_method_return(msg, "v", [_wrap(setting.type, setting.value)])
        if member == "GetText" and sig == "":
            return Message.new_method_return(msg, "s", [_text(setting.value)])
        if member == "SetValue" and sig == "v":
            return Message.new_method_return(msg, "i", [self._set_value(path, msg.body[0].value)])
        if member in ("GetMin", "GetMax", "GetDefault") and sig == "":
            return Message.new_method_return(msg, "v", [self._attributes(setting)[member[3:]]])
        if member == "SetDefault" and sig == "":
            if _is_class_and_vrm_instance(path):
                return Message.new_method_return(msg, "i", [_ERR])
            self._set_value(path, setting.default)
            return Message.new_method_return(msg, "i", [0])
        if member == "GetSilent" and sig == "":
            return Message.new_method_return(msg, "b", [setting.silent])
        return self._unknown(msg)

    def _group_call(self, msg: Message, group: str) -> Message:
        member, sig, body = msg.member, msg.signature, msg.body
        if member == "AddSettings" and sig == "aa{sv}":
            return Message.new_method_return(msg, "aa{sv}", self._add_settings(group, body[0]))
        if member in ("AddSetting", "AddSilentSetting") and sig == "ssvsvv":
            name = body[0].rstrip("/") + "/" + body[1].lstrip("/")
            error, _, _ = self.add_setting(
                group,
                name,
                body[2].value,
                body[3],
                body[4].value,
                body[5].value,
                member == "AddSilentSetting",
            )
            return Message.new_method_return(msg, "i", [error])
        if member == "RemoveSettings" and sig == "as":
            codes = []
            for path in body[0]:
                if path in self.settings:
                    self._remove(path)
                    codes.append(0)
                else:
                    codes.append(_ERR)
            return Message.new_method_return(msg, "ai", [codes])
        if member == "GetItems" and sig == "" and group == "/":
            items = {
                p: {"Value": _wrap(s.type, s.value), "Text": Variant("s", _text(s.value))}
                | self._attributes(s)
                for p, s in self.settings.items()
            }
            return Message.new_method_return(msg, "a{sa{sv}}", [items])
        if member == "GetValue" and sig == "":
            below = {p: _wrap(s.type, s.value) for p, s in self._below(group).items()}
            return Message.new_method_return(msg, "v", [Variant("a{sv}", below)])
        if member == "GetText" and sig == "":
            texts = {p: _text(s.value) for p, s in self._below(group).items()}
            return Message.new_method_return(msg, "a{ss}", [texts])
        if member == "SetDefault" and sig == "":
            for rel, s in self._below(group).items():
                full = ("" if group == "/" else group) + "/" + rel
                if not full.endswith("/ClassAndVrmInstance"):
                    self._set_value(full, s.default)
            return Message.new_method_return(msg, "i", [0])
        return self._unknown(msg)


def ble_sensors_settings(
    port: int | None = 18542,
    bind_address: str | None = "127.0.0.1",
    bluetooth_enabled: int | None = 1,
) -> dict[str, Setting]:
    """dbus-ble-sensors' own settings as v0.31 adds them (src/ble-socket.c, src/ble-scan.c).

    None leaves a setting out: ``port=None`` is a dbus-ble-sensors older than
    v0.30, which has no socket input.
    """
    settings: dict[str, Setting] = {}
    if port is not None:
        settings["/Settings/BleSensors/Socket/Port"] = Setting("i", port, 18542, 1, 65535)
    if bind_address is not None:
        settings["/Settings/BleSensors/Socket/BindAddress"] = Setting(
            "s", bind_address, "127.0.0.1"
        )
    if bluetooth_enabled is not None:
        settings["/Settings/BleSensors/Bluetooth/Enabled"] = Setting(
            "i", bluetooth_enabled, 1, 0, 1
        )
    return settings


def _load(store: str | None) -> dict[str, Setting]:
    if store is None or not os.path.exists(store):
        return {}
    with open(store) as f:
        return {p: Setting(**fields) for p, fields in json.load(f).items()}


async def _serve(store: str | None, ble_sensors: bool = False) -> None:
    settings = _load(store)
    if ble_sensors:
        settings = ble_sensors_settings() | settings
    standin = await LocalSettingsStandIn.start(settings=settings, store=store)
    print(f"localsettings stand-in on {SETTINGS_SERVICE}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    disconnected = asyncio.ensure_future(standin.bus.wait_for_disconnect())  # type: ignore[no-untyped-call]
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({disconnected, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    await standin.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="localsettings stand-in on the system bus")
    parser.add_argument("--path", help="JSON file that keeps the settings across restarts")
    parser.add_argument(
        "--ble-sensors",
        action="store_true",
        help="hold dbus-ble-sensors' settings too (socket input, Bluetooth enabled)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    asyncio.run(_serve(args.path, args.ble_sensors))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
