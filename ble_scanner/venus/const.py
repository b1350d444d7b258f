"""Venus D-Bus names, setting paths and timing, each named once with its reason."""

from __future__ import annotations

from typing import Final

# --- the BusItem protocol (velib_python vedbus.py) -----------------------------

BUSITEM_INTERFACE: Final = "com.victronenergy.BusItem"
# velib's VEDBUS_INVALID: an empty array of int32 in a variant. Consumers treat
# any empty array as invalid (ve_utils.unwrap_dbus_value, veutil).
INVALID_SIGNATURE: Final = "ai"
# velib's GetText for an invalid value.
INVALID_TEXT: Final = "---"
# SetValue return codes (VeDbusItemExport.SetValue).
SETVALUE_OK: Final = 0
SETVALUE_NOT_WRITABLE: Final = 1
SETVALUE_REJECTED: Final = 2
# ItemsChanged goes to every BusItem listener, flashmq included, which forwards
# it to MQTT and VRM: one signal a second at most keeps that traffic flat.
ITEMS_CHANGED_INTERVAL: Final = 1.0

# --- localsettings (victronenergy/localsettings localsettings.py) -------------

SETTINGS_SERVICE: Final = "com.victronenergy.settings"
SETTINGS_INTERFACE: Final = "com.victronenergy.Settings"
SETTINGS_PREFIX: Final = "/Settings/BleScanner"
DEVICES_PREFIX: Final = "/Settings/Devices"
# dbus-shelly waits 5 s for localsettings (utils.py wait_for_settings); on a GX
# it is up long before us, so anything longer only delays a development start.
SETTINGS_WAIT_TIMEOUT: Final = 5.0
# Every call to localsettings gets an answer within this; it answers in ms.
SETTINGS_CALL_TIMEOUT: Final = 5.0

# AddSettings error codes (localsettings AddSettingError).
ADD_SETTING_OK: Final = 0
ADD_SETTING_UNDERSCORE_PREFIX: Final = -2
ADD_SETTING_UNKNOWN_TYPE: Final = -3
ADD_SETTING_INVALID_PATH: Final = -4
ADD_SETTING_TYPE_DIFFER: Final = -5
ADD_SETTING_INVALID_DEFAULT: Final = -6
ADD_SETTING_DEFAULT_OUT_OF_RANGE: Final = -7
ADD_SETTING_IS_GROUP: Final = -8
ADD_SETTING_NOT_IN_SETTINGS: Final = -9

# --- our place in the Venus tree (docs/dbus-api.md "The Venus tree") -----------

# Service class for ClassAndVrmInstance: the first three components of
# com.victronenergy.ble.scanner, as velib's service_wanted() computes it.
DEVICE_CLASS: Final = "ble"
# Stable id under /Settings/Devices/<id>/ for the one scanner per GX.
DEVICE_SETTINGS_ID: Final = "ble_scanner"
# Never 0: dbus-flashmq maps a service without /DeviceInstance to ble/0, where
# Victron's com.victronenergy.ble already lives. 20 keeps clear of the low
# numbers other ble-class services might take.
PREFERRED_DEVICE_INSTANCE: Final = 20
