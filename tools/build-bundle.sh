#!/bin/sh
# Build the offline bundle for a GX device: dist/dbus-ble-scanner-<version>.tar.gz
#
# It holds the entry script, the package (without ble_scanner/testing, the
# test doubles), service/, tools/install.sh, tools/uninstall.sh (with the
# tools/common.sh they share and the script that gives dbus-ble-sensors its scan
# back), and ext/ filled with the pinned
# pure-Python packages of ext/requirements.txt. Unpack it anywhere and run
# tools/install.sh. tools/build-gx-package.sh makes the SetupHelper package.
#
# PYTHON picks the interpreter whose pip fetches ext/ (default python3);
# EXT_WHEELS=DIR installs ext/ from a folder of wheels, offline (tools/stage-app.sh);
# DIST=DIR puts the archive there instead of dist/ (the tests build in their own).
set -eu

NAME=dbus-ble-scanner
REPO=$(cd -P "$(dirname "$0")/.." && pwd)
. "$REPO/tools/stage-app.sh"
VERSION=$(app_version "$REPO")
DIST=${DIST:-$REPO/dist}
OUT=$DIST/$NAME-$VERSION.tar.gz

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
TOP=$STAGE/$NAME
mkdir -p "$TOP/service/log" "$TOP/tools"

stage_app "$REPO" "$TOP"
cp "$REPO/service/run" "$TOP/service/run"
cp "$REPO/service/log/run" "$TOP/service/log/run"
cp "$REPO/tools/install.sh" "$REPO/tools/uninstall.sh" "$REPO/tools/restore-ble-sensors-scan.sh" "$TOP/tools/"
chmod 755 "$TOP/service/run" "$TOP/service/log/run" "$TOP"/tools/*.sh
cp "$REPO/tools/common.sh" "$TOP/tools/"
chmod 644 "$TOP/tools/common.sh"

pack "$STAGE" "$NAME" "$OUT"
echo "$OUT"
