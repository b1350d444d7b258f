"""Two adapters hearing one advertiser, read from the kernel's control channel.

``test_two_adapters.py`` with the service inside the guest on management
ingest (``guestservice.py``), where one control socket carries the
``Device Found`` events of both controllers: the same one record, one source
and both adapters ``Listening``. Guests only (``GUEST_ONLY``): on the
simulator the default suite's management ingest runs the in-process test.
"""

from __future__ import annotations

from collections.abc import Callable

from dbus_fast.aio import MessageBus

from tests.realbluez.backends import GuestBackend
from tests.realbluez.bluez import remove_all_devices
from tests.realbluez.guestservice import GuestService
from tests.realbluez.test_mgmt_ingest import (  # noqa: F401  (guest, run_service: fixtures)
    SERVICE_START,
    guest,
    run_service,
)
from tests.realbluez.test_two_adapters import one_record_one_source

GUEST_ONLY = True
TWO_LISTENERS_SCENE = True


async def test_one_record_from_one_source_over_the_control_channel(
    guest: GuestBackend,  # noqa: F811
    bus: MessageBus,
    run_service: Callable[..., GuestService],  # noqa: F811
) -> None:
    await remove_all_devices(bus, "hci1")  # run_service clears hci0
    service = run_service("--ingest", "mgmt", "--adapter", "hci1")
    try:
        await one_record_one_source(guest, bus, ingest="mgmt", arm_timeout=SERVICE_START)
    except AssertionError as exc:
        exc.add_note(f"the guest's service:\n{service.log()[-4000:]}")
        raise
