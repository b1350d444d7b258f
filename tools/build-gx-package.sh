#!/bin/sh
# Build the SetupHelper package (kwindrem/SetupHelper v9.4, the way GX owners
# install community packages): dist/dbus-ble-scanner-install.tar.gz, SetupHelper's
# name for an offline install from a USB stick or SD card. Its one folder,
# dbus-ble-scanner/, is what PackageManager keeps in /data/dbus-ble-scanner:
#
#   setup                    tools/gx-package/setup (sources SetupHelper's IncludeHelpers)
#   version                  v + __version__ of ble_scanner/__init__.py
#   gitHubInfo               <user>:<branch> PackageManager checks for updates
#   firstCompatibleVersion   Venus OS v3.60: the first with Python 3.12 and dbus-fast 2.21.1
#   ReadMe, changes          for the owner
#   services/dbus-ble-scanner/run, log/run    service/'s, copied by SetupHelper
#   dbus_ble_scanner.py ble_scanner/ ext/    the app, as in the bundle (tools/stage-app.sh)
#   tools/uninstall.sh, common.sh, restore-ble-sensors-scan.sh  what setup runs
#
# PackageManager downloads a branch of <user>/dbus-ble-scanner from GitHub and
# wants the package at the top of it: --branch NAME also commits this folder as
# the tip of the local branch NAME (created if missing; main's files are not
# in it), to push for PackageManager (docs/install.md). The working tree and
# the current branch are untouched.
#
#   GITHUB_USER    gitHubInfo's user (default: the owner in the origin remote's URL)
#   GITHUB_BRANCH  gitHubInfo's branch (default: the --branch NAME, else setuphelper)
#   DIST           where the archive goes (default: dist/ in the repository)
#   PYTHON, EXT_WHEELS, EXT_DIR    how ext/ is filled (tools/stage-app.sh)
set -eu

NAME=dbus-ble-scanner
REPO=$(cd -P "$(dirname "$0")/.." && pwd)
BRANCH=

case "${1:-}" in
--branch)
	[ $# -eq 2 ] && [ -n "$2" ] || { echo "usage: $0 [--branch NAME]" >&2; exit 64; }
	BRANCH=$2
	;;
"") ;;
*) echo "usage: $0 [--branch NAME]" >&2; exit 64 ;;
esac

. "$REPO/tools/stage-app.sh"
VERSION=$(app_version "$REPO")
USER_NAME=${GITHUB_USER:-$(git -C "$REPO" remote get-url origin 2>/dev/null |
	sed -n "s#^.*[:/]\([^/:]*\)/$NAME\(\.git\)\{0,1\}/\{0,1\}\$#\1#p")}
[ -n "$USER_NAME" ] || {
	echo "$0: set GITHUB_USER to the GitHub user that holds $NAME (for gitHubInfo)" >&2
	exit 1
}
GITHUB_BRANCH=${GITHUB_BRANCH:-${BRANCH:-setuphelper}}
DIST=${DIST:-$REPO/dist}
OUT=$DIST/$NAME-install.tar.gz

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
TOP=$STAGE/$NAME
mkdir -p "$TOP/services/$NAME/log" "$TOP/tools"

stage_app "$REPO" "$TOP"
cp "$REPO/tools/gx-package/setup" "$REPO/tools/gx-package/ReadMe" \
	"$REPO/tools/gx-package/changes" "$REPO/tools/gx-package/firstCompatibleVersion" "$TOP/"
echo "v$VERSION" >"$TOP/version"
echo "$USER_NAME:$GITHUB_BRANCH" >"$TOP/gitHubInfo"
cp "$REPO/service/run" "$TOP/services/$NAME/run"
cp "$REPO/service/log/run" "$TOP/services/$NAME/log/run"
cp "$REPO/tools/uninstall.sh" "$REPO/tools/common.sh" "$REPO/tools/restore-ble-sensors-scan.sh" "$TOP/tools/"
chmod 755 "$TOP/setup" "$TOP/services/$NAME/run" "$TOP/services/$NAME/log/run" "$TOP"/tools/*.sh
chmod 644 "$TOP/version" "$TOP/gitHubInfo" "$TOP/ReadMe" "$TOP/changes" "$TOP/firstCompatibleVersion"

pack "$STAGE" "$NAME" "$OUT"

if [ -n "$BRANCH" ]; then
	# The folder's files as one commit on BRANCH, through an index of our own.
	GITDIR=$(git -C "$REPO" rev-parse --absolute-git-dir)
	export GIT_INDEX_FILE="$STAGE/index"
	git --git-dir="$GITDIR" --work-tree="$TOP" -C "$TOP" add --all --force .
	tree=$(git --git-dir="$GITDIR" write-tree)
	unset GIT_INDEX_FILE
	parent=$(git --git-dir="$GITDIR" rev-parse --quiet --verify "refs/heads/$BRANCH" || true)
	if [ -n "$parent" ] && [ "$(git --git-dir="$GITDIR" rev-parse "$parent^{tree}")" = "$tree" ]; then
		echo "branch $BRANCH: unchanged at $parent" >&2
	else
		commit=$(git --git-dir="$GITDIR" commit-tree "$tree" ${parent:+-p "$parent"} \
			-m "$NAME v$VERSION, the SetupHelper package (tools/build-gx-package.sh)")
		git --git-dir="$GITDIR" update-ref "refs/heads/$BRANCH" "$commit"
		echo "branch $BRANCH: $commit" >&2
	fi
fi
echo "$OUT"
