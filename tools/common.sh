# Sourced by install.sh and uninstall.sh: the --root option and the paths under it.
# POSIX sh: Venus has BusyBox, no bash.

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
PREFIX=${ROOT%/}                       # "" for /
APP=/data/apps/$NAME                   # as the device sees it
DEST=$PREFIX$APP
LINK=$PREFIX/service/$NAME
RCLOCAL=$PREFIX/data/rc.local
RCLINE="[ -e /service/$NAME ] || ln -s $APP/service /service/$NAME  # $NAME"
