# The two commands: `make demo` and `make test`. Both install what they need.
SHELL := /bin/bash
VENV := .venv
VENUS := .venv-venus
PY311 := .venv-py311
PYTEST_ARGS ?=

.PHONY: setup demo test lint typecheck test-unit test-newest test-venus test-newest-shared test-newest-exclusive test-venus-shared test-venus-exclusive test-dbus-ingest test-dbus-ingest-shared test-dbus-ingest-exclusive test-dbus-ingest-and-py311 test-loaded test-py311 test-bluez soak bench bench-smoke clean

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

# Workers per suite run (.ci/suite): the suite mostly waits on timers, processes
# and the bus, so more workers than cores shorten a run. JOBS=0: one process.
JOBS ?= 6
export JOBS

# The suite's ingest (tests/ingest.py): mgmt, the production path, reads the
# simulator's management-channel seam; dbus reads Device1 signals.
INGEST ?= mgmt

# What cannot depend on the ingest or on the dbus-fast version's D-Bus handling is
# left out of the extra configurations: the pure units (no bus; they still run on
# both dbus-fast versions and on 3.11), the bench harness (its smoke run drives
# both ingests itself, on .venv as `make bench` does) and the suite's own guards.
NOT_INGEST := --ignore=tests/unit --ignore=tests/bench --ignore=tests/test_allowed_skips.py \
	--ignore=tests/test_leftovers.py --ignore=tests/test_testbus.py

# CI (CI set) fuzzes the BlueZ edge with 10 000 cases, once, in this configuration.
FUZZ_EXAMPLES := $(if $(CI),10000,300)

NEWEST_SUITE = BLE_SCANNER_TEST_INGEST=$(INGEST) BLE_SCANNER_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) \
	.ci/suite $(1) $(VENV)/bin/python $(PYTEST_ARGS)
# The pure units run on the newest only: on 2.21.1 they would test the same Python
# twice. Pure: the file names neither dbus-fast nor what builds D-Bus values
# (the wire-cost harness, service.py's records, main.py); tests/unit/test_layout.py
# holds the same rule.
PURE_UNITS := $(shell grep -L -e dbus_fast -e wire_cost -e ble_scanner.service \
	-e ble_scanner.main tests/unit/test_*.py)
VENUS_SUITE = BLE_SCANNER_TEST_INGEST=$(INGEST) \
	.ci/suite $(1) $(VENUS)/bin/python --ignore=tests/bench $(PURE_UNITS:%=--ignore=%) $(PYTEST_ARGS)

test-newest: setup
	$(call NEWEST_SUITE,all)

test-venus: setup
	$(call VENUS_SUITE,all)

test-newest-shared test-newest-exclusive: test-newest-%: setup
	$(call NEWEST_SUITE,$*)

test-venus-shared test-venus-exclusive: test-venus-%: setup
	$(call VENUS_SUITE,$*)

# Everything a change needs before it lands: lint, types, and the suite on the
# newest dbus-fast and on Venus's 2.21.1 with management ingest: the two suites'
# shared parts side by side (each one's output is shown when it ends), then the
# `exclusive` tests alone. CI's deep fuzz run rides on the newest one.
test: setup
	@echo "make test: lint, typecheck, the suite on both dbus-fast versions side by side, then its exclusive tests"
	@$(MAKE) --no-print-directory lint typecheck
	@$(MAKE) --no-print-directory -j2 --output-sync=target test-newest-shared test-venus-shared
	@$(MAKE) --no-print-directory test-newest-exclusive test-venus-exclusive

# CI's matrix beyond `make test` (tests/README.md has each part and its time).
# D-Bus ingest on Venus's dbus-fast; D-Bus ingest on the newest with every core kept
# busy by a busy loop (.ci/with-load ends them however the run ends: deadlines and
# waits must hold on a busy CI runner or a GX); Python 3.11 with management ingest.
DBUS_INGEST_SUITE = BLE_SCANNER_TEST_INGEST=dbus \
	.ci/suite $(1) $(VENUS)/bin/python $(NOT_INGEST) $(PYTEST_ARGS)

test-dbus-ingest: setup
	$(call DBUS_INGEST_SUITE,all)

test-dbus-ingest-shared test-dbus-ingest-exclusive: test-dbus-ingest-%: setup
	$(call DBUS_INGEST_SUITE,$*)

# Loaded: the tiers whose tests hold deadlines against the service (the service
# itself, its clients, the faults and loads of tests/reliability).
LOADED_TESTS := tests/service tests/client tests/reliability

test-loaded: setup
	BLE_SCANNER_TEST_INGEST=dbus .ci/with-load .ci/suite all $(VENV)/bin/python $(LOADED_TESTS) $(PYTEST_ARGS)

# Python 3.11 still works: every module of the package run on 3.11 with the
# newest dbus-fast: the pure units, the service, its clients, the Venus side and
# the GX package. What 3.11 could break is the package's own code; the faults
# (tests/reliability), the simulator's own BlueZ behaviour (tests/sim,
# tests/realbluez) and the bench drive the same code, on 3.12 in three
# configurations.
PY311_TESTS := tests/unit tests/service tests/client tests/venus tests/gx

test-py311: setup
	@.ci/setup py311
	BLE_SCANNER_TEST_INGEST=mgmt .ci/suite all $(PY311)/bin/python $(PY311_TESTS) $(PYTEST_ARGS)

# CI runs D-Bus ingest and 3.11 side by side (both mostly wait), then D-Bus
# ingest's exclusive tests alone; each part's output is shown when it ends.
test-dbus-ingest-and-py311: setup
	@.ci/setup py311
	@$(MAKE) --no-print-directory -j2 --output-sync=target test-dbus-ingest-shared test-py311
	@$(MAKE) --no-print-directory test-dbus-ingest-exclusive

# The real-BlueZ tier: Debian's bluetoothd 5.66 and 5.82 in QEMU guests (root;
# builds the guest images first, cached outside the repository), one guest after
# the other: a TCG guest is CPU-bound, and two side by side on 2 cores make their
# controllers' timings, not the code, the thing under test.
# BLE_SCANNER_SKIP_BLUEZ=1 is the only way to skip it, and it says so.
test-bluez: setup
	@if [ "$$BLE_SCANNER_SKIP_BLUEZ" = 1 ]; then \
	    echo "real-BlueZ tier SKIPPED on request (BLE_SCANNER_SKIP_BLUEZ=1)"; \
	else \
	    tests/realbluez/build-guest.sh bookworm && \
	    tests/realbluez/build-guest.sh trixie && \
	    $(VENV)/bin/python -m pytest -m bluez tests/realbluez $(PYTEST_ARGS); \
	fi

# One guest's tier: make test-bluez-bookworm, make test-bluez-trixie.
test-bluez-%:
	BLE_SCANNER_BLUEZ_SUITES=$* $(VENV)/bin/python -m pytest -m bluez tests/realbluez $(PYTEST_ARGS)

# The stability check of tests/reliability/README.md: the reliability suite RUNS
# times in a row on each
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
