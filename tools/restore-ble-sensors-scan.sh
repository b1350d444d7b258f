#!/bin/sh
# Give dbus-ble-sensors its own Bluetooth scan back, as it was before this service
# took it over. Used by tools/uninstall.sh and by the SetupHelper package's setup
# (tools/gx-package/setup) when they remove the service; safe to run again.
#
# The feed to dbus-ble-sensors (README "Let dbus-ble-scanner do the scanning for
# dbus-ble-sensors") switched its own Bluetooth scan off and remembered the value
# it found in our settings: put that back. Through whichever client the system
# has (dbus-send, or Venus's dbus); without localsettings on the bus, nothing.
# Always exits 0: a value it cannot put back is reported on stderr, for the GUI.
# POSIX sh: Venus has BusyBox, no bash.
set -u

SETTINGS=com.victronenergy.settings
WAS_PATH=/Settings/BleScanner/BleSensorsBluetoothWas
FEED_PATH=/Settings/BleScanner/BleSensorsFeed
ENABLED_PATH=/Settings/BleSensors/Bluetooth/Enabled

get_setting() {
	if command -v dbus-send >/dev/null 2>&1; then
		dbus-send --system --reply-timeout=5000 --print-reply=literal --dest=$SETTINGS "$1" \
			com.victronenergy.BusItem.GetValue 2>/dev/null | awk '{ print $NF }'
	elif command -v dbus >/dev/null 2>&1; then
		dbus -y $SETTINGS "$1" GetValue 2>/dev/null
	fi
}

set_setting() {
	if command -v dbus-send >/dev/null 2>&1; then
		dbus-send --system --reply-timeout=5000 --print-reply --dest=$SETTINGS "$1" \
			com.victronenergy.BusItem.SetValue "variant:int32:$2" >/dev/null 2>&1
	elif command -v dbus >/dev/null 2>&1; then
		dbus -y $SETTINGS "$1" SetValue "%$2" >/dev/null 2>&1
	else
		return 1
	fi
}

WAS=$(get_setting $WAS_PATH || true)
case "$WAS" in
0 | 1)
	# The feed off first: a service still stopping would otherwise take the scan again.
	set_setting $FEED_PATH 0 || true
	if set_setting $ENABLED_PATH "$WAS"; then
		set_setting $WAS_PATH -1 || true
		echo "put dbus-ble-sensors' own Bluetooth scan back ($ENABLED_PATH = $WAS)"
	else
		echo "$0: could not set $ENABLED_PATH back to $WAS; set it in the GUI" >&2
	fi
	;;
esac
exit 0
