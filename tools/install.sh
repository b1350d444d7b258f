#!/bin/sh
# Install dbus-ble-scanner on a Venus OS GX device (or into --root DIR for tests).
#
#   <root>/data/apps/dbus-ble-scanner     the app (kept by firmware updates)
#   <root>/service/dbus-ble-scanner       symlink to its service/ (tmpfs: gone at reboot)
#   <root>/data/rc.local                  one line that re-creates the link at boot
#
# Run it from an unpacked bundle or a checkout; running it again changes nothing.
# POSIX sh: Venus has BusyBox, no bash.
set -eu

. "$(dirname "$0")/common.sh" # --root; NAME, PREFIX, APP, DEST, LINK, RCLOCAL, RCLINE

SRC=$(cd -P "$(dirname "$0")/.." && pwd)
[ -f "$SRC/dbus_ble_scanner.py" ] && [ -d "$SRC/ble_scanner" ] && [ -d "$SRC/service" ] || {
	echo "$0: $SRC is not a dbus-ble-scanner bundle" >&2
	exit 1
}

# One install at a time: the SetupHelper package (tools/gx-package/setup) runs the
# same service from /data/$NAME, copied into /service. Replacing it from here
# would leave PackageManager believing it installed; the package's own install
# takes this one over instead (docs/install.md).
if [ -e "$PREFIX/etc/venus/installedVersion-$NAME" ] || { [ -e "$LINK" ] && [ ! -L "$LINK" ]; }; then
	echo "$0: $NAME is installed as a SetupHelper package (/data/$NAME);" \
		"update or remove it in PackageManager instead" >&2
	exit 1
fi

# Copy a tree without caches and the test doubles (ble_scanner/testing) (the device needs none).
copy_tree() { # src dst
	rm -rf "$2.new"
	cp -R "$1" "$2.new"
	find "$2.new" -name __pycache__ -type d -prune -exec rm -rf {} +
	rm -rf "$2.new/testing"
	rm -rf "$2"
	mv "$2.new" "$2"
}

# Copy one file only if it differs, keeping what is there otherwise.
copy_file() { # src dst mode
	if ! cmp -s "$1" "$2" 2>/dev/null; then
		cp "$1" "$2.new"
		chmod "$3" "$2.new"
		mv "$2.new" "$2"
	fi
	chmod "$3" "$2"
}

if [ "$SRC" != "$(cd -P "$DEST" 2>/dev/null && pwd || true)" ]; then
	mkdir -p "$DEST/service/log" "$DEST/tools"
	copy_file "$SRC/dbus_ble_scanner.py" "$DEST/dbus_ble_scanner.py" 755
	copy_tree "$SRC/ble_scanner" "$DEST/ble_scanner"
	if [ -d "$SRC/ext" ]; then
		copy_tree "$SRC/ext" "$DEST/ext"
	fi
	# service/ is updated file by file: a running supervise keeps its state in it.
	copy_file "$SRC/service/run" "$DEST/service/run" 755
	copy_file "$SRC/service/log/run" "$DEST/service/log/run" 755
	copy_file "$SRC/tools/install.sh" "$DEST/tools/install.sh" 755
	copy_file "$SRC/tools/uninstall.sh" "$DEST/tools/uninstall.sh" 755
	copy_file "$SRC/tools/restore-ble-sensors-scan.sh" "$DEST/tools/restore-ble-sensors-scan.sh" 755
	copy_file "$SRC/tools/common.sh" "$DEST/tools/common.sh" 644
	echo "installed $DEST"
fi

mkdir -p "$PREFIX/service"
if [ -L "$LINK" ]; then
	if [ "$(readlink "$LINK")" != "$DEST/service" ]; then
		rm -f "$LINK"
	fi
elif [ -e "$LINK" ]; then
	echo "$0: $LINK exists and is not a symlink; leaving it alone" >&2
	exit 1
fi
if [ ! -L "$LINK" ]; then
	ln -s "$DEST/service" "$LINK"
	echo "linked $LINK -> $DEST/service"
fi

# /data/rc.local runs at the end of every boot if it is executable
# (custom-rc-late.sh); an `exit` in it would skip a line appended after it.
if [ ! -e "$RCLOCAL" ]; then
	mkdir -p "$PREFIX/data"
	printf '#!/bin/sh\n%s\n' "$RCLINE" >"$RCLOCAL"
	chmod 755 "$RCLOCAL"
	echo "created $RCLOCAL"
elif ! grep -qxF "$RCLINE" "$RCLOCAL"; then
	awk -v line="$RCLINE" '
		!done && /^[ \t]*exit([ \t]|$)/ { print line; done = 1 }
		{ print }
		END { if (!done) print line }
	' "$RCLOCAL" >"$RCLOCAL.new"
	cat "$RCLOCAL.new" >"$RCLOCAL"
	rm -f "$RCLOCAL.new"
	echo "added the service link to $RCLOCAL"
	[ -x "$RCLOCAL" ] || echo "note: $RCLOCAL is not executable, so it does not run at boot" >&2
fi

if [ -z "$PREFIX" ] && command -v svscan >/dev/null 2>&1; then
	echo "svscan starts the service within seconds; check with: svstat /service/$NAME"
fi
