# The two commands: `make demo` and `make test`. Both install what they need.
SHELL := /bin/bash
VENV := .venv
VENUS := .venv-venus
PY311 := .venv-py311
PYTEST_ARGS ?=

.PHONY: setup demo test lint typecheck test-unit test-newest test-venus test-dbus-ingest test-loaded test-loaded-venus test-py311 test-bluez soak bench bench-smoke clean

setup:
	@.ci/setup

demo: setup
	@$(VENV)/bin/python -m ble_scanner.testing.demo

lint: setup
	$(VENV)/bin/ruff check ble_scanner tests dbus_ble_scanner.py
	$(VENV)/bin/ruff format --check ble_scanner tests dbus_ble_scanner.py

typecheck: setup
	$(VENV)/bin/mypy

test-unit: setup
	$(VENV)/bin/python -m pytest tests/unit $(PYTEST_ARGS)

# The suite's ingest (tests/ingest.py): mgmt, the production path, reads the
# simulator's management-channel seam; dbus reads Device1 signals.
INGEST ?= mgmt

test-newest: setup
	BLE_SCANNER_TEST_INGEST=$(INGEST) $(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-venus: setup
	BLE_SCANNER_TEST_INGEST=$(INGEST) $(VENUS)/bin/python -m pytest $(PYTEST_ARGS)

# Everything: lint, types, and the suite on the newest dbus-fast and on Venus's
# 2.21.1, with management ingest.
test: setup lint typecheck test-newest test-venus

# The suite on both dbus-fast versions with D-Bus ingest (the fallback path).
test-dbus-ingest: setup
	$(MAKE) test-newest test-venus INGEST=dbus

# The suite on a loaded machine: every core kept busy by a busy loop for the whole
# run (.ci/with-load ends them however the run ends). Deadlines and waits must hold
# on a busy CI runner or a GX, not only on an idle workstation. CI runs the first.
test-loaded: setup
	.ci/with-load $(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-loaded-venus: setup
	.ci/with-load $(VENUS)/bin/python -m pytest $(PYTEST_ARGS)

# Python 3.11 still works: the suite on 3.11 with the newest dbus-fast (CI runs it).
test-py311: setup
	@.ci/setup py311
	$(PY311)/bin/python -m pytest $(PYTEST_ARGS)

# The real-BlueZ tier: Debian's bluetoothd 5.66 and 5.82 in QEMU guests (root;
# builds the guest images first, cached outside the repository).
# BLE_SCANNER_SKIP_BLUEZ=1 is the only way to skip it, and it says so.
test-bluez: setup
	@if [ "$$BLE_SCANNER_SKIP_BLUEZ" = 1 ]; then \
	    echo "real-BlueZ tier SKIPPED on request (BLE_SCANNER_SKIP_BLUEZ=1)"; \
	else \
	    tests/realbluez/build-guest.sh bookworm && \
	    tests/realbluez/build-guest.sh trixie && \
	    $(VENV)/bin/python -m pytest -m bluez tests/realbluez $(PYTEST_ARGS); \
	fi

# Issue 5's stability check: the reliability suite RUNS times in a row on each
# dbus-fast; stops at the first failing run and shows what failed (~25 min).
RUNS ?= 20
soak: setup
	@log=$$(mktemp); trap 'rm -f $$log' EXIT; \
	for venv in $(VENV) $(VENUS); do \
	    for i in $$(seq $(RUNS)); do \
	        if $$venv/bin/python -m pytest -q -rf -p no:cacheprovider tests/reliability $(PYTEST_ARGS) >$$log 2>&1; then \
	            echo "$$venv run $$i/$(RUNS): $$(tail -n 1 $$log)"; \
	        else \
	            cat $$log; echo "$$venv run $$i/$(RUNS) FAILED"; exit 1; \
	        fi; \
	    done; \
	done

# Benchmarks against same-run baselines; figures on stdout and in bench-results.json.
bench: setup
	$(VENV)/bin/python -m tests.bench --json bench-results.json

bench-smoke: setup
	$(VENV)/bin/python -m tests.bench --smoke --json bench-results-smoke.json

# The SetupHelper package for PackageManager and USB sticks (docs/install.md):
# dist/dbus-ble-scanner-install.tar.gz. GITHUB_USER=... names the GitHub user
# for its gitHubInfo when the checkout has no origin remote to take it from.
.PHONY: gx-package
gx-package:
	tools/build-gx-package.sh

clean:
	rm -rf $(VENV) $(VENUS) $(PY311) dist build *.egg-info
