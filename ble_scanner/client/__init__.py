"""Client proxy for the BLE scanner service ``com.victronenergy.ble.scanner``.

asyncio on dbus-fast; imports nothing of the service. Quick start::

    from ble_scanner.client import ScannerClient

    async with ScannerClient() as client:
        present = await client.devices(manufacturer_id=0x02E1)
        async for event in client.subscribe(manufacturer_id=0x02E1):
            print(event)

bleak users: :mod:`ble_scanner.client.bleak`. GLib / dbus-python users:
:mod:`ble_scanner.glib_client`.
"""

from ..advertisement import Advertisement, DeviceLost, Event, ScanFilter, make_filter
from .errors import (
    BusUnreachableError,
    CallTimeoutError,
    InvalidFilterError,
    ScannerError,
    ServiceCallError,
    ServiceNotRunningError,
    UntrustedServiceError,
)
from .proxy import (
    CALL_TIMEOUT,
    DEFAULT_SERVICE_WAIT,
    AdvertisementStream,
    ScannerClient,
    Subscription,
)
from .status import AdapterState, ScannerStatus

__all__ = [
    "CALL_TIMEOUT",
    "DEFAULT_SERVICE_WAIT",
    "AdapterState",
    "Advertisement",
    "AdvertisementStream",
    "BusUnreachableError",
    "CallTimeoutError",
    "DeviceLost",
    "Event",
    "InvalidFilterError",
    "ScanFilter",
    "ScannerClient",
    "ScannerError",
    "ScannerStatus",
    "ServiceCallError",
    "ServiceNotRunningError",
    "Subscription",
    "UntrustedServiceError",
    "make_filter",
]
