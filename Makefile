# The two commands: `make demo` and `make test`. Both install what they need.
SHELL := /bin/bash
VENV := .venv
VENUS := .venv-venus
PYTEST_ARGS ?=

.PHONY: setup demo test lint typecheck test-newest test-venus test-bluez bench bench-smoke clean

setup:
	@.ci/setup

demo: setup
	@$(VENV)/bin/python -m ble_scanner.demo

lint: setup
	$(VENV)/bin/ruff check ble_scanner tests dbus_ble_scanner.py
	$(VENV)/bin/ruff format --check ble_scanner tests dbus_ble_scanner.py

typecheck: setup
	$(VENV)/bin/mypy

test-newest: setup
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-venus: setup
	$(VENUS)/bin/python -m pytest $(PYTEST_ARGS)

# Everything: lint, types, and the suite on the newest dbus-fast and on Venus's 2.21.1.
test: setup lint typecheck test-newest test-venus

clean:
	rm -rf $(VENV) $(VENUS) dist build *.egg-info
