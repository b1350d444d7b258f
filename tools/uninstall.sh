#!/bin/sh
# Remove dbus-ble-scanner from a Venus OS GX device (or from --root DIR for tests):
# stops the service, removes the /service link, the rc.local line and the app.
# Logs in /var/log/dbus-ble-scanner are left for the record (tmpfs on Venus).
# Running it again changes nothing. POSIX sh: Venus has BusyBox, no bash.
set -eu

NAME=dbus-ble-scanner
ROOT=/

usage() {
	echo "usage: $0 [--root DIR]" >&2
	exit 64
}

while [ $# -gt 0 ]; do
	case "$1" in
	--root)
		[ $# -ge 2 ] || usage
		ROOT=$2
		shift 2
		;;
	--root=*)
		ROOT=${1#--root=}
		shift
		;;
	*) usage ;;
	esac
done

case "$ROOT" in
/*) ;;
*) echo "$0: --root must be an absolute path" >&2; exit 64 ;;
esac
PREFIX=${ROOT%/}
APP=/data/apps/$NAME
DEST=$PREFIX$APP
LINK=$PREFIX/service/$NAME
RCLOCAL=$PREFIX/data/rc.local
RCLINE="[ -e /service/$NAME ] || ln -s $APP/service /service/$NAME  # $NAME"

# Only the live system has a supervise to stop: -d stops the service, -x lets
# supervise exit once it is down, for the service and its logger.
if [ -z "$PREFIX" ] && [ -e "$LINK" ] && command -v svc >/dev/null 2>&1; then
	svc -dx "$LINK" "$LINK/log" 2>/dev/null || true
	echo "stopped $NAME"
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
