#!/bin/sh
# Remove dbus-ble-scanner from a Venus OS GX device (or from --root DIR for tests):
# stops the service, removes the /service link, the rc.local line and the app.
# Logs in /var/log/dbus-ble-scanner are left for the record (tmpfs on Venus).
# Running it again changes nothing. POSIX sh: Venus has BusyBox, no bash.
set -eu

. "$(dirname "$0")/common.sh" # --root, NAME, PREFIX, APP, DEST, LINK, RCLOCAL, RCLINE

# Only the live system has a supervise to stop: -d stops the service, -x lets
# supervise exit once it is down, for the service and its logger.
if [ -z "$PREFIX" ] && [ -e "$LINK" ] && command -v svc >/dev/null 2>&1; then
	svc -dx "$LINK" "$LINK/log" 2>/dev/null || true
	echo "stopped $NAME"
fi

# The feed to dbus-ble-sensors (README "Let dbus-ble-scanner do the scanning for
# dbus-ble-sensors") switched its own Bluetooth scan off and remembered the value
# it found in our settings: put that back. Through whichever client the system
# has (dbus-send, or Venus's dbus); without localsettings on the bus, nothing.
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

if [ -L "$LINK" ]; then
	rm -f "$LINK"
	echo "removed $LINK"
fi

if [ -f "$RCLOCAL" ] && grep -qxF "$RCLINE" "$RCLOCAL"; then
	grep -vxF "$RCLINE" "$RCLOCAL" >"$RCLOCAL.new" || true
	# Only a shebang left means the installer created the file: remove it too.
	if ! grep -qv -e '^#!/bin/sh$' -e '^[[:space:]]*$' "$RCLOCAL.new"; then
		rm -f "$RCLOCAL" "$RCLOCAL.new"
		echo "removed $RCLOCAL"
	else
		cat "$RCLOCAL.new" >"$RCLOCAL"
		rm -f "$RCLOCAL.new"
		echo "removed the service link from $RCLOCAL"
	fi
fi

if [ -d "$DEST" ]; then
	rm -rf "$DEST"
	echo "removed $DEST"
fi
rmdir "$PREFIX/data/apps" 2>/dev/null || true
