#!/bin/sh
# Remove dbus-ble-scanner from a Venus OS GX device (or from --root DIR for tests):
# stops the service, gives dbus-ble-sensors its scan back (not with --keep-feed),
# removes the /service link, the rc.local line and the app.
# Logs in /var/log/dbus-ble-scanner are left for the record (tmpfs on Venus).
# Running it again changes nothing. POSIX sh: Venus has BusyBox, no bash.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
KEEP_FEED_OPTION=yes
. "$HERE/common.sh" # --root, --keep-feed; NAME, PREFIX, APP, DEST, LINK, RCLOCAL, RCLINE

# The SetupHelper package (tools/gx-package/setup) is a different install of the
# same service: it is removed by its own setup, never by this script (which that
# setup runs, with --keep-feed, only to replace this script's install).
if [ "$KEEP_FEED" = no ] && [ ! -L "$LINK" ] && [ ! -d "$DEST" ] && { [ -e "$PREFIX/etc/venus/installedVersion-$NAME" ] ||
	[ -d "$PREFIX/service/$NAME" ]; }; then
	echo "$0: $NAME is installed as a SetupHelper package, not by tools/install.sh:" \
		"remove it in PackageManager (or run /data/$NAME/setup uninstall)" >&2
	exit 1
fi

# Stop it where a supervise runs it: -d stops the service, -x lets supervise exit
# once it is down, for the service and its logger. Wait (at most 15 s) for both
# to be gone, so nothing of this install runs when another one starts.
if [ -L "$LINK" ] && command -v svok >/dev/null 2>&1 && svok "$LINK" 2>/dev/null; then
	svc -dx "$LINK" "$LINK/log" 2>/dev/null || true
	waited=0
	while { svok "$LINK" || svok "$LINK/log"; } 2>/dev/null && [ $waited -lt 75 ]; do
		sleep 0.2 2>/dev/null || sleep 1
		waited=$((waited + 1))
	done
	echo "stopped $NAME"
fi

# The feed to dbus-ble-sensors may have taken its scan over: give it back, unless
# the SetupHelper package's service carries the feed on (its setup, replacing
# this install, passes --keep-feed).
if [ "$KEEP_FEED" = no ]; then
	sh "$HERE/restore-ble-sensors-scan.sh"
fi

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
