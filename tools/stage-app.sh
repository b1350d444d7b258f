# Sourced by tools/build-bundle.sh and tools/build-gx-package.sh: the app as a GX
# runs it, staged into one folder. POSIX sh.
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
