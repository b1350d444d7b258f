"""Management ingest on a real kernel: the service in the guest reads the control channel.

Only the guest has the kernel (the host has no Bluetooth), so the service runs
inside it (``guestservice.py``) as its own process on the relayed bus, and
the tests talk to it from the host like every other test of this tier. They
pin what the issue asks of the real thing: as root the service opens the
control channel (``--ingest mgmt`` and ``auto``), says so in GetStatus and
serves btvirt's advertiser with its exact bytes; without CAP_NET_ADMIN
``auto`` falls back to D-Bus ingest and reports still flow; bluetoothd killed
and restarted leaves the channel open, reports flowing and discovery re-armed
on the new daemon; and the libc path Venus OS needs (its Python has no
``socket.AF_BLUETOOTH``) opens the same channel for real.

They run on the guests only (``GUEST_ONLY``): against the simulator the
channel is its seam, which the default suite runs with
``BLE_SCANNER_TEST_INGEST=mgmt`` (tests/ingest.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from dbus_fast import MessageType
from dbus_fast.aio import MessageBus

from ble_scanner.const import SCANNER_INTERFACE, SCANNER_SERVICE
from ble_scanner.testing.simulator.const import KERNEL_LE_DISCOVERY_TIMEOUT
from tests.helpers import assert_ok, call, wait_until
from tests.realbluez.backends import Advert, Backend, GuestBackend
from tests.realbluez.bluez import discovering, remove_all_devices
from tests.realbluez.guestservice import GuestService, deploy, guest_python
from tests.realbluez.test_service import (
    REARM_AFTER_CRASH_TIMEOUT,
    VICTRON,
    payload,
    serves_a_new_payload,
    serves_exact_bytes,
)

# The guest's Python imports a pure-Python dbus-fast under TCG on a shared
# 2-core machine: measured 2.5-3 s to GetStatus; the margin is for load.
SERVICE_START = 60.0
SCAN_HCI0 = ("--no-settings", "--adapter", "hci0", "--state-file", "")


# conftest.py parametrizes ``backend`` over the guests alone: a kernel is needed.
GUEST_ONLY = True


@pytest.fixture
def guest(bluez: Backend) -> GuestBackend:
    """The guest backend, with the code under test copied in (once per boot)."""
    assert isinstance(bluez, GuestBackend)
    if not getattr(bluez, "service_deployed", False):
        deploy(bluez.guest)
        bluez.service_deployed = True  # type: ignore[attr-defined]
    return bluez


@pytest.fixture
async def run_service(
    guest: GuestBackend, bus: MessageBus
) -> AsyncIterator[Callable[..., GuestService]]:
    """Start the service in the guest (hci0 only); every one started is stopped after."""
    await remove_all_devices(bus)
    started: list[GuestService] = []

    def start(*args: str, **options: Any) -> GuestService:
        service = GuestService(guest.guest, *SCAN_HCI0, *args, **options)
        service.start()
        started.append(service)
        return service

    try:
        yield start
    finally:
        for service in started:
            await asyncio.to_thread(service.stop)


async def hci0_status(bus: MessageBus) -> dict[str, Any]:
    """GetStatus's entry for hci0, unwrapped; {} while the service or hci0 is not there."""
    reply = await call(bus, SCANNER_SERVICE, "/", SCANNER_INTERFACE, "GetStatus")
    if reply.message_type == MessageType.ERROR:
        return {}
    adapters = reply.body[0]["Adapters"].value
    return {k: v.value for k, v in adapters.get("hci0", {}).items()}


async def reports(bus: MessageBus) -> int:
    reply = await call(bus, SCANNER_SERVICE, "/", SCANNER_INTERFACE, "GetStatus")
    return int(assert_ok(reply)[0]["Reports"].value)


async def wait_armed(bus: MessageBus, service: GuestService, ingest: str, timeout: float) -> None:
    """hci0 scanning with our session, reports coming from ``ingest``."""

    async def armed() -> bool:
        if not service.running():
            raise AssertionError(f"the guest's service exited:\n{service.log()}")
        status = await hci0_status(bus)
        return status.get("Ingest") == ingest and bool(status.get("Session"))

    try:
        await wait_until(armed, timeout=timeout, interval=0.25, what=f"hci0 armed, {ingest}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; status {await hci0_status(bus)}\n{service.log()}") from None


@pytest.mark.parametrize("ingest", ["mgmt", "auto"])
async def test_as_root_the_service_reads_the_control_channel_with_exact_bytes(
    guest: GuestBackend, bus: MessageBus, run_service: Callable[..., GuestService], ingest: str
) -> None:
    service = run_service("--ingest", ingest)
    await wait_armed(bus, service, "mgmt", SERVICE_START)
    await serves_exact_bytes(guest, bus, "rbz-mgmt")
    assert (await hci0_status(bus))["Ingest"] == "mgmt"


async def test_the_libc_path_opens_the_same_channel(
    guest: GuestBackend, bus: MessageBus, run_service: Callable[..., GuestService]
) -> None:
    """Venus OS's Python has no socket.AF_BLUETOOTH: socket(2)/bind(2) through ctypes."""
    assert guest_python(guest.guest).endswith("True"), "the guest's Python has AF_BLUETOOTH"
    service = run_service("--ingest", "mgmt", af_bluetooth=False)
    await wait_armed(bus, service, "mgmt", SERVICE_START)
    await serves_exact_bytes(guest, bus, "rbz-mgmt")


async def test_without_cap_net_admin_auto_falls_back_to_dbus_ingest(
    guest: GuestBackend, bus: MessageBus, run_service: Callable[..., GuestService]
) -> None:
    service = run_service("--ingest", "auto", capabilities=False)
    # The kernel lets the bind succeed without CAP_NET_ADMIN but makes the socket
    # untrusted: it never gets Device Found (net/bluetooth/hci_sock.c, mgmt.c).
    # A service that took that for a working channel would serve nothing.
    await wait_armed(bus, service, "dbus", SERVICE_START)
    await serves_exact_bytes(guest, bus, "rbz-mgmt")
    assert (await hci0_status(bus))["Ingest"] == "dbus"


async def test_bluetoothd_killed_and_restarted_reports_keep_flowing_and_discovery_rearms(
    guest: GuestBackend, bus: MessageBus, run_service: Callable[..., GuestService]
) -> None:
    service = run_service("--ingest", "mgmt")
    await wait_armed(bus, service, "mgmt", SERVICE_START)
    await serves_a_new_payload(guest, bus, timeout=SERVICE_START)
    await guest.kill_bluetoothd()
    # The dead daemon's scan runs on in the kernel (up to 10.24 s): its reports
    # reach the channel with no bluetoothd at all.
    before = await reports(bus)

    async def flowing() -> bool:
        await guest.advertise(Advert(manufacturer_data={VICTRON: payload()}))
        return await reports(bus) > before

    await wait_until(flowing, timeout=KERNEL_LE_DISCOVERY_TIMEOUT, interval=0.5,
                     what="reports while bluetoothd is dead")  # fmt: skip
    await guest.start_bluetoothd()
    # The new daemon holds our session again (nobody else scans hci0) ...
    await wait_armed(bus, service, "mgmt", REARM_AFTER_CRASH_TIMEOUT)
    await wait_until(lambda: discovering(bus), timeout=REARM_AFTER_CRASH_TIMEOUT,
                     what="Discovering on the new bluetoothd")  # fmt: skip
    # ... and reports still come from the channel.
    await serves_a_new_payload(guest, bus, timeout=SERVICE_START)
    assert (await hci0_status(bus))["Ingest"] == "mgmt"
