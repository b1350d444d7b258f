# Sourced by install.sh and uninstall.sh: their options and the paths under --root.
# A script that also takes --keep-feed sets KEEP_FEED_OPTION=yes before sourcing.
# POSIX sh: Venus has BusyBox, no bash.

NAME=dbus-ble-scanner
ROOT=/
KEEP_FEED=no

usage() {
	if [ "${KEEP_FEED_OPTION:-no}" = yes ]; then
		echo "usage: $0 [--root DIR] [--keep-feed]" >&2
	else
		echo "usage: $0 [--root DIR]" >&2
	fi
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
	--keep-feed)
		[ "${KEEP_FEED_OPTION:-no}" = yes ] || usage
		KEEP_FEED=yes
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
