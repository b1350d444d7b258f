"""Client side of the BLE scanner service ``com.victronenergy.ble.scanner``.

Everything a program needs to use the service, in one package. Of the service
it imports only the pure core (``ble_scanner.core.record``, ``ble_scanner.core.filters``),
so a client filters exactly as the service does, and the D-Bus plumbing
(``ble_scanner.bus.calls``); nothing with state or I/O:

- ``records``: what the service reports (``Advertisement``, ``DeviceLost``) and
  filters (``ScanFilter``, ``make_filter``); no D-Bus library.
- ``proxy``: the asyncio proxy on dbus-fast (``ScannerClient``): its source of
  events, the service or BlueZ standing in. ``subscription``: what reaches
  each subscription and stream. ``calls``: calls in the client's terms.
- ``bleak``: a bleak backend on the proxy. ``glib``: the same for GLib and
  dbus-python programs (velib_python drivers). ``fallback``: listening to
  BlueZ directly, never scanning, while the service is absent. ``cli``:
  ``ble-scanner``. ``errors``: what the client raises.

Quick start::

    from ble_scanner.client import ScannerClient

    async with ScannerClient() as client:
        present = await client.devices(manufacturer_id=0x02E1)
        async for event in client.subscribe(manufacturer_id=0x02E1):
            print(event)

The names below are loaded on first use, so ``ble_scanner.client.records`` and
``ble_scanner.client.glib`` work where dbus-fast is not installed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .errors import (
        AccessDeniedError,
        BusLostError,
        BusUnreachableError,
        CallTimeoutError,
        InvalidFilterError,
        ScannerError,
        ServiceCallError,
        ServiceNotRunningError,
        UntrustedServiceError,
    )
    from .proxy import CALL_TIMEOUT, DEFAULT_SERVICE_WAIT, ScannerClient
    from .records import Advertisement, DeviceLost, Event, ScanFilter, make_filter
    from .status import AdapterState, ScannerStatus
    from .subscription import AdvertisementStream, Subscription

# Public name -> the module of this package that defines it.
_WHERE = {
    "AccessDeniedError": "errors",
    "BusLostError": "errors",
    "BusUnreachableError": "errors",
    "CallTimeoutError": "errors",
    "InvalidFilterError": "errors",
    "ScannerError": "errors",
    "ServiceCallError": "errors",
    "ServiceNotRunningError": "errors",
    "UntrustedServiceError": "errors",
    "CALL_TIMEOUT": "proxy",
    "DEFAULT_SERVICE_WAIT": "proxy",
    "AdvertisementStream": "subscription",
    "ScannerClient": "proxy",
    "Subscription": "subscription",
    "Advertisement": "records",
    "DeviceLost": "records",
    "Event": "records",
    "ScanFilter": "records",
    "make_filter": "records",
    "AdapterState": "status",
    "ScannerStatus": "status",
}

__all__ = [
    "CALL_TIMEOUT",
    "DEFAULT_SERVICE_WAIT",
    "AccessDeniedError",
    "AdapterState",
    "Advertisement",
    "AdvertisementStream",
    "BusLostError",
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


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])
