"""Fixtures of the real-BlueZ tier: one guest per Debian suite, booted once per session.

``backend`` is parametrized over the guests in BLE_SCANNER_BLUEZ_SUITES
(default ``bookworm,trixie``; marked ``bluez``, so only ``-m bluez`` runs
them) and over the project's simulator modelling BlueZ 5.66 and 5.72
(unmarked: every scenario also runs in the default suite, in about a second
per version). See ``backends.selected_backends``.
pytest keeps one value of a session fixture at a time, so at most one guest
runs. ``test_bus`` is overridden to be the backend's bus, so the repository's
``bus`` fixture and anything reading DBUS_SYSTEM_BUS_ADDRESS (bleak, the
service) reach the real bluetoothd.

If qemu or the image cannot be had the tests fail with the reason; only
BLE_SCANNER_SKIP_BLUEZ=1 skips them.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio

from ble_scanner.testing.testbus import TestBus, start_test_bus
from tests.realbluez.backends import (
    DEFAULT_SIMULATOR_VERSIONS,
    Backend,
    BackendChoice,
    GuestBackend,
    SimulatorBackend,
    selected_backends,
    simulator_available,
)
from tests.realbluez.vm import BOOT_TIMEOUT, Guest

# pyproject.toml's timeout for a test, plus a guest's boot.
GUEST_TEST_TIMEOUT = 120.0 + BOOT_TIMEOUT


def backend_params(guest_only: bool = False) -> list[object]:
    """``guest_only``: the real guests alone (a module setting ``GUEST_ONLY = True``)."""
    chosen = selected_backends()
    if guest_only:
        chosen = [choice for choice in chosen if choice.guest]
    explicit = {choice.name for choice in chosen}
    params: list[object] = [
        pytest.param(choice, id=choice.name, marks=pytest.mark.bluez) for choice in chosen
    ]
    if guest_only:
        return params
    for version in DEFAULT_SIMULATOR_VERSIONS:
        name = f"simulator-{version}"
        if name not in explicit:
            params.append(pytest.param(BackendChoice(name, guest=False), id=name))
    return params


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A guest's tests may take pytest's timeout (pyproject.toml) plus a boot.

    The guest is a session fixture, so the first test on it also waits out
    QEMU's boot (up to BOOT_TIMEOUT); pytest-timeout counts fixtures in.
    """
    for item in items:
        if item.get_closest_marker("bluez") and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(GUEST_TEST_TIMEOUT))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        guest_only = bool(getattr(metafunc.module, "GUEST_ONLY", False))
        metafunc.parametrize("backend", backend_params(guest_only), indirect=True, scope="session")


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    choice: BackendChoice = request.param
    if not choice.guest:
        reason = simulator_available()
        if reason is not None:
            pytest.fail(f"simulator backend requested but unavailable: {reason}")
        with start_test_bus() as bus:
            yield SimulatorBackend(bus, choice.simulator_version)
        return
    if os.environ.get("BLE_SCANNER_SKIP_BLUEZ") == "1":
        pytest.skip("BLE_SCANNER_SKIP_BLUEZ=1: real-BlueZ tier skipped on request")
    with start_test_bus() as bus:
        start = time.monotonic()
        guest = Guest.boot(choice.name, bus)
        print(
            f"\n[realbluez] {choice.name}: BlueZ {guest.info['bluez_version']}, "
            f"kernel {guest.kernel}, ready {time.monotonic() - start:.1f} s after QEMU start",
            file=sys.stderr,
        )
        try:
            yield GuestBackend(guest)
        finally:
            guest.shutdown()


@pytest.fixture(scope="session")
def test_bus(backend: Backend) -> TestBus:
    """The backend's bus, for the repository's ``bus`` fixture and the service."""
    return backend.bus


@pytest.fixture(autouse=True)
def _system_bus_is_the_backends(test_bus: TestBus, monkeypatch: pytest.MonkeyPatch) -> None:
    """DBUS_SYSTEM_BUS_ADDRESS points at the backend's bus for bleak, for this test only.

    Per test, not per session: a parametrized session fixture is only torn down
    at the end of the run, and the tests after this tier use the root bus.
    """
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", test_bus.address)


@pytest_asyncio.fixture
async def bluez(
    backend: Backend, test_bus: TestBus, request: pytest.FixtureRequest
) -> AsyncIterator[Backend]:
    """The backend, reset to: bluetoothd -E running, adapters powered, no advertising;
    in the two-listener scene for a module with ``TWO_LISTENERS_SCENE = True``."""
    await backend.reset(two_listeners=bool(getattr(request.module, "TWO_LISTENERS_SCENE", False)))
    try:
        yield backend
    finally:
        await backend.teardown()
