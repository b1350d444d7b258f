# Sourced by tools/build-bundle.sh and tools/build-gx-package.sh: the app as a GX
# runs it, staged into one folder, and the folder packed. POSIX sh.
#
# app_version REPO prints __version__ of ble_scanner/__init__.py (fails without one).
#
# stage_app REPO TOP writes into TOP: the entry script, the package without
# ble_scanner/testing (the test doubles), and ext/ filled with the pinned
# pure-Python packages of ext/requirements.txt, no caches.
#   PYTHON        the interpreter whose pip fills ext/ (default python3)
#   EXT_WHEELS=DIR  fill ext/ from a folder of wheels, offline
#   EXT_DIR=DIR     copy an ext/ already filled (a bundle's, or the tests' own) instead

stage_app() { # repo top
	_repo=$1
	_top=$2
	shift 2
	mkdir -p "$_top/ext"
	cp "$_repo/dbus_ble_scanner.py" "$_top/"
	cp -R "$_repo/ble_scanner" "$_top/ble_scanner"
	# Test doubles live in one folder, dropped whole (a test checks nothing left imports it).
	rm -rf "$_top/ble_scanner/testing"
	if [ -n "${EXT_DIR:-}" ]; then
		cp -R "$EXT_DIR/." "$_top/ext/"
	else
		cp "$_repo/ext/README.md" "$_repo/ext/requirements.txt" "$_top/ext/"
		if [ -n "${EXT_WHEELS:-}" ]; then
			set -- --no-index --find-links "$EXT_WHEELS"
		fi
		"${PYTHON:-python3}" -m pip install --quiet --disable-pip-version-check --no-deps \
			--only-binary=:all: --platform any --python-version 3.12 --implementation py \
			--target "$_top/ext" "$@" -r "$_repo/ext/requirements.txt"
	fi
	find "$_top" -name __pycache__ -type d -prune -exec rm -rf {} +
	rm -rf "$_top/ext/bin"
	chmod 755 "$_top/dbus_ble_scanner.py"
}

app_version() { # repo
	_version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$1/ble_scanner/__init__.py")
	[ -n "$_version" ] || { echo "$0: no __version__ in ble_scanner/__init__.py" >&2; return 1; }
	echo "$_version"
}

# pack STAGE NAME OUT: STAGE/NAME as OUT (.tar.gz, names sorted, owner root), atomically.
pack() { # stage name out
	mkdir -p "$(dirname "$3")"
	(cd "$1" && LC_ALL=C tar --sort=name --owner=0 --group=0 --numeric-owner -czf "$3.new" "$2")
	mv "$3.new" "$3"
}
