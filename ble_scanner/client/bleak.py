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
# AdvertisementData is a NamedTuple of these fields in this order
# (bleak/backends/scanner.py, since 0.15); built positionally when it still is.
_POSITIONAL = AdvertisementData._fields == (
    "local_name",
    "manufacturer_data",
    "service_data",
    "service_uuids",
    "tx_power",
    "rssi",
    "platform_data",
)
# bleak < 0.23 took a required ``rssi`` argument in BLEDevice.
_BLEDEVICE_TAKES_RSSI = "rssi" in inspect.signature(BLEDevice.__init__).parameters


def bluez_props(adv: Advertisement) -> dict[str, Any]:
    """The record as BlueZ Device1 properties (bleak's ``details["props"]``)."""
    props: dict[str, Any] = {
        "Address": adv.address,
        "AddressType": adv.address_type,
        "Adapter": f"/org/bluez/{adv.adapter}",
        "Alias": _alias(adv),
        "ManufacturerData": dict(adv.manufacturer_data),
        "ServiceData": dict(adv.service_data),
        "UUIDs": list(adv.service_uuids),
    }
    _set_optional(props, adv)
    return props


def _alias(adv: Advertisement) -> str:
    return adv.name if adv.name is not None else adv.address.replace(":", "-")


def _set_optional(props: dict[str, Any], adv: Advertisement) -> None:
    """Name, RSSI and TxPower as BlueZ has them: present only when known."""
    for key, value in (("Name", adv.name), ("RSSI", adv.rssi), ("TxPower", adv.tx_power)):
        if value is None:
            props.pop(key, None)
        else:
            props[key] = value


def _update_props(props: dict[str, Any], last: Advertisement, adv: Advertisement) -> None:
    """Bring a device's live ``props`` from ``last`` to ``adv``, as BlueZ's PropertiesChanged.

    A payload dict is replaced, never changed in place, and only when the
    payload changed: an AdvertisementData already handed out keeps its own.
    Only what differs is touched (most reports change the RSSI and a payload).
    """
    if adv.manufacturer_data is not last.manufacturer_data:
        props["ManufacturerData"] = dict(adv.manufacturer_data)
    if adv.service_data is not last.service_data:
        props["ServiceData"] = dict(adv.service_data)
    if adv.service_uuids is not last.service_uuids:
        props["UUIDs"] = list(adv.service_uuids)
    if adv.rssi != last.rssi:
        if adv.rssi is None:
            del props["RSSI"]
        else:
            props["RSSI"] = adv.rssi
    if adv.name != last.name or adv.tx_power != last.tx_power:
        props["Alias"] = _alias(adv)
        _set_optional(props, adv)
    if adv.adapter != last.adapter:
        props["Adapter"] = f"/org/bluez/{adv.adapter}"
    if adv.address_type != last.address_type:
        props["AddressType"] = adv.address_type


def to_ble_device(adv: Advertisement) -> BLEDevice:
    """A BLEDevice whose ``details["path"]`` lets ``BleakClient(device)`` connect at once."""
    return _ble_device(adv, bluez_props(adv))


def _ble_device(adv: Advertisement, props: dict[str, Any]) -> BLEDevice:
    details = {"path": adv.path, "props": props}
    if _BLEDEVICE_TAKES_RSSI:  # pragma: no cover - bleak 0.22
        return BLEDevice(adv.address, adv.name, details, adv.rssi)  # type: ignore[call-arg]
    return BLEDevice(adv.address, adv.name, details)


def to_advertisement_data(adv: Advertisement) -> AdvertisementData:
    """bleak's AdvertisementData; ``platform_data`` is ``(path, props, record)``."""
    return _advertisement_data(adv, bluez_props(adv))


def _advertisement_data(adv: Advertisement, props: dict[str, Any]) -> AdvertisementData:
    """The payloads are ``props``' own dicts and list, as bleak's BlueZ backend hands out."""
    rssi = NO_RSSI if adv.rssi is None else adv.rssi
    if _POSITIONAL:  # half the cost of keywords, on every report
        return AdvertisementData(
            adv.name,
            props["ManufacturerData"],
            props["ServiceData"],
            props["UUIDs"],
            adv.tx_power,
            rssi,
            (adv.path, props, adv),
        )
    return AdvertisementData(  # pragma: no cover - a bleak with other fields
        local_name=adv.name,
        manufacturer_data=props["ManufacturerData"],
        service_data=props["ServiceData"],
        service_uuids=props["UUIDs"],
        tx_power=adv.tx_power,
        rssi=rssi,
        platform_data=(adv.path, props, adv),
    )


class _Seen:
    """A device as the backend keeps it: bleak's BLEDevice, its live props, the last record."""

    __slots__ = ("adv", "device", "props")

    def __init__(self, device: BLEDevice, props: dict[str, Any], adv: Advertisement) -> None:
        self.device = device
        self.props = props
        self.adv = adv


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
        self._seen: dict[str, _Seen] = {}  # seen_devices key → the device's live state

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
        self._seen = {}
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
        self._seen = {}

    def _on_event(self, event: Event) -> None:
        """One record: the objects bleak's callback gets, and nothing more.

        As bleak's BlueZ backend, each device has one props dict, kept up to
        date (``details["props"]`` and ``platform_data[1]``); a payload dict is
        copied from the record only when it changed, and the AdvertisementData
        shares it with props.
        """
        if isinstance(event, DeviceLost):
            key = self._devices_by_address.pop(event.address, None)
            if key is not None:
                self.seen_devices.pop(key, None)
                self._seen.pop(key, None)
            return
        if self._adapter is not None and event.adapter != self._adapter:
            return
        if self._service_uuids and not self.is_allowed_uuid(list(event.service_uuids)):
            return
        key = event.path or event.address
        seen = self._seen.get(key)
        if seen is None:
            props = bluez_props(event)
            device = _ble_device(event, props)
            self._seen[key] = _Seen(device, props, event)
            self._devices_by_address[event.address] = key
        else:
            props, device = seen.props, seen.device
            _update_props(props, seen.adv, event)
            seen.adv = event
            device.name = event.name
        adv = _advertisement_data(event, props)
        self.seen_devices[key] = (device, adv)
        self.call_detection_callbacks(device, adv)
