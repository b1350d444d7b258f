#!/bin/sh
# Build the offline bundle for a GX device: dist/dbus-ble-scanner-<version>.tar.gz
#
# It holds the entry script, the package (without ble_scanner/testing, the
# test doubles), service/, tools/install.sh and tools/uninstall.sh (with the
# tools/common.sh they share), and ext/ filled with the pinned pure-Python
# packages of ext/requirements.txt. Unpack it anywhere and run tools/install.sh.
#
# PYTHON picks the interpreter whose pip fetches ext/ (default python3);
# EXT_WHEELS=DIR installs ext/ from a folder of wheels, offline.
set -eu

NAME=dbus-ble-scanner
REPO=$(cd -P "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
VERSION=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$REPO/ble_scanner/__init__.py")
[ -n "$VERSION" ] || { echo "$0: no __version__ in ble_scanner/__init__.py" >&2; exit 1; }
OUT=$REPO/dist/$NAME-$VERSION.tar.gz

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
TOP=$STAGE/$NAME
mkdir -p "$TOP/service/log" "$TOP/tools" "$TOP/ext"

cp "$REPO/dbus_ble_scanner.py" "$TOP/"
cp -R "$REPO/ble_scanner" "$TOP/ble_scanner"
# Test doubles live in one folder, dropped whole (a test checks nothing left imports it).
rm -rf "$TOP/ble_scanner/testing"
cp "$REPO/service/run" "$TOP/service/run"
cp "$REPO/service/log/run" "$TOP/service/log/run"
cp "$REPO/tools/install.sh" "$REPO/tools/uninstall.sh" "$REPO/tools/common.sh" "$TOP/tools/"
cp "$REPO/ext/README.md" "$REPO/ext/requirements.txt" "$TOP/ext/"

if [ -n "${EXT_WHEELS:-}" ]; then
	set -- --no-index --find-links "$EXT_WHEELS"
else
	set --
fi
"$PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps \
	--only-binary=:all: --platform any --python-version 3.12 --implementation py \
	--target "$TOP/ext" "$@" -r "$REPO/ext/requirements.txt"

find "$TOP" -name __pycache__ -type d -prune -exec rm -rf {} +
rm -rf "$TOP/ext/bin"
chmod 755 "$TOP/dbus_ble_scanner.py" "$TOP/service/run" "$TOP/service/log/run" "$TOP"/tools/*.sh

mkdir -p "$REPO/dist"
(cd "$STAGE" && LC_ALL=C tar --sort=name --owner=0 --group=0 --numeric-owner -czf "$OUT.new" "$NAME")
mv "$OUT.new" "$OUT"
echo "$OUT"
