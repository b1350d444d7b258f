"""bleak on top of the scanner service: converters and a drop-in scanner backend.

Existing bleak code switches with one argument::

    from bleak import BleakScanner
    from ble_scanner.client.bleak import ScannerServiceBackend

    async with BleakScanner(callback, backend=ScannerServiceBackend):
        ...

``start``/``stop``, ``discover``, ``find_device_by_*``, ``advertisement_data()``
and ``discovered_devices_and_advertisement_data`` behave as bleak documents,
answered by the shared service: BlueZ discovery is never started by this
process. Devices the service already knows arrive at once (bleak's own
backend waits for the next report).

When the system bus goes away it does what bleak's BlueZ backend (3.1) does:
one warning in the log, ``seen_devices`` emptied, no more callbacks and no
exception while scanning; ``start()`` fails while the bus is down and works
again once it is back. Unlike bleak's, ``stop()`` then returns quietly
(bleak's raises ``OSError`` from the dead socket).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any, Literal

from bleak.backends.device import BLEDevice
from bleak.backends.scanner import (
    AdvertisementData,
    AdvertisementDataCallback,
    BaseBleakScanner,
)

from .errors import BusLostError
from .proxy import ScannerClient
from .records import Advertisement, DeviceLost, Event
from .subscription import Subscription

_LOGGER = logging.getLogger(__name__)

# bleak reports this when it has no RSSI (bluezdbus/scanner.py).
NO_RSSI = -127
# bleak < 0.23 took a required ``rssi`` argument in BLEDevice.
_BLEDEVICE_TAKES_RSSI = "rssi" in inspect.signature(BLEDevice.__init__).parameters


def bluez_props(adv: Advertisement) -> dict[str, Any]:
    """The record as BlueZ Device1 properties (bleak's ``details["props"]``)."""
    props: dict[str, Any] = {
        "Address": adv.address,
        "AddressType": adv.address_type,
        "Adapter": f"/org/bluez/{adv.adapter}",
        "Alias": adv.name if adv.name is not None else adv.address.replace(":", "-"),
        "ManufacturerData": dict(adv.manufacturer_data),
        "ServiceData": dict(adv.service_data),
        "UUIDs": list(adv.service_uuids),
    }
    if adv.name is not None:
        props["Name"] = adv.name
    if adv.rssi is not None:
        props["RSSI"] = adv.rssi
    if adv.tx_power is not None:
        props["TxPower"] = adv.tx_power
    return props


def to_ble_device(adv: Advertisement) -> BLEDevice:
    """A BLEDevice whose ``details["path"]`` lets ``BleakClient(device)`` connect at once."""
    details = {"path": adv.path, "props": bluez_props(adv)}
    if _BLEDEVICE_TAKES_RSSI:  # pragma: no cover - bleak 0.22
        return BLEDevice(adv.address, adv.name, details, adv.rssi)  # type: ignore[call-arg]
    return BLEDevice(adv.address, adv.name, details)


def to_advertisement_data(adv: Advertisement) -> AdvertisementData:
    """bleak's AdvertisementData; ``platform_data`` is ``(path, props, record)``."""
    return AdvertisementData(
        local_name=adv.name,
        manufacturer_data=dict(adv.manufacturer_data),
        service_data=dict(adv.service_data),
        service_uuids=list(adv.service_uuids),
        tx_power=adv.tx_power,
        rssi=NO_RSSI if adv.rssi is None else adv.rssi,
        platform_data=(adv.path, bluez_props(adv), adv),
    )


class ScannerServiceBackend(BaseBleakScanner):
    """A bleak scanner backend served by ``com.victronenergy.ble.scanner``.

    Honoured from bleak's arguments: ``service_uuids``; ``bluez={"adapter":
    "hci1"}`` (only that adapter's reports); ``bluez={"filters": {"UUIDs": [...],
    "RSSI": n}}``. ``scanning_mode`` is the service's business and ignored.
    Extra keyword arguments: ``client_options`` (a dict for ScannerClient, e.g.
    ``{"fallback": "bluez", "service_timeout": 30}``).
    """

    def __init__(
        self,
        detection_callback: AdvertisementDataCallback | None,
        service_uuids: list[str] | None,
        scanning_mode: Literal["active", "passive"] = "active",
        *,
        bluez: Any = None,
        cb: Any = None,
        client_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._client: ScannerClient | None = None  # before super(): it registers the callback
        super().__init__(detection_callback, service_uuids)
        bluez = dict(bluez or {})
        filters = dict(bluez.get("filters") or {})
        self._adapter: str | None = bluez.get("adapter")
        uuids = list(service_uuids or []) + list(filters.get("UUIDs") or [])
        self._filters: dict[str, Any] = {}
        if uuids:
            self._filters["service_uuids"] = uuids
        if filters.get("RSSI") is not None:
            self._filters["min_rssi"] = int(filters["RSSI"])
        self._client_options = dict(client_options or {})
        self._subscription: Subscription | None = None
        self._devices_by_address: dict[str, str] = {}  # address → seen_devices key

    def register_detection_callback(
        self, callback: AdvertisementDataCallback | None
    ) -> Callable[[], None]:
        """As bleak's, and while scanning the new callback first gets the devices seen so far.

        So ``find_device_by_*`` and ``advertisement_data()`` answer at once for
        a device the service already knows, as Home Assistant's scanner does.
        """
        remove = super().register_detection_callback(callback)
        if self._client is not None and self.seen_devices:
            registered = next(reversed(self._ad_callbacks.values()))
            for device, adv in list(self.seen_devices.values()):
                registered(device, adv)
        return remove

    async def start(self) -> None:
        self.seen_devices = {}
        self._devices_by_address = {}
        options = dict(self._client_options)
        user_on_bus_lost = options.pop("on_bus_lost", None)

        def bus_lost(error: BusLostError) -> None:
            self._bus_lost(error)
            if user_on_bus_lost is not None:
                user_on_bus_lost(error)

        client = ScannerClient(on_bus_lost=bus_lost, **options)
        await client.connect()
        self._client = client
        try:
            self._subscription = await client.on_advertisement(self._on_event, **self._filters)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        client, self._client = self._client, None
        self._subscription = None
        if client is not None:
            await client.close()  # ends the subscription with the connection

    def _bus_lost(self, error: BusLostError) -> None:
        """As bleak's BlueZ manager: say so once, forget every device, stay quiet."""
        _LOGGER.warning("D-Bus connection to the scanner service was lost (%s); resetting", error)
        self.seen_devices = {}
        self._devices_by_address = {}

    def _on_event(self, event: Event) -> None:
        if isinstance(event, DeviceLost):
            key = self._devices_by_address.pop(event.address, None)
            if key is not None:
                self.seen_devices.pop(key, None)
            return
        if self._adapter is not None and event.adapter != self._adapter:
            return
        if not self.is_allowed_uuid(list(event.service_uuids)):
            return
        adv = to_advertisement_data(event)
        key = event.path or event.address
        known = self.seen_devices.get(key)
        if known is not None:
            device = known[0]
            device.name = event.name
            device.details = {"path": event.path, "props": adv.platform_data[1]}
        else:
            device = to_ble_device(event)
        self.seen_devices[key] = (device, adv)
        self._devices_by_address[event.address] = key
        self.call_detection_callbacks(device, adv)
