"""Our items in the Venus tree (docs/dbus-api.md), refreshed from the service's status.

Status is sampled once a second rather than pushed on every change: the
tree batches ItemsChanged to one a second anyway, and sampling keeps the
per-advertisement path free of any Venus work.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

from .. import __version__
from ..config import BY_FIELD, from_stored
from ..const import DEFAULT_PUBLISH_DEVICES_MAX
from ..core.cache import Device
from ..core.loadcap import ShedStep
from ..core.state import AdapterStatus, ServiceStatus
from ..tasks import Periodic
from .blesensors import FeedStatus
from .busitem import BusItemTree, Value, add_mandatory_paths

_LOGGER = logging.getLogger(__name__)

STATUS_INTERVAL: Final = 1.0
# The opt-in device list changes with every advertiser; refreshing it every
# 10 s bounds what flashmq forwards to MQTT and VRM.
DEVICE_LIST_INTERVAL: Final = 10.0
PRODUCT_NAME: Final = "BLE scanner"
# Not a Victron product: 0xFFFF is what community services use for "none".
PRODUCT_ID: Final = 0xFFFF
CONNECTION: Final = "Bluetooth LE (BlueZ)"
DEVICE_FIELDS: Final = ("Address", "Name", "Rssi", "Adapter", "LastSeen")
# The GUI and dbus-spy show a rate and a time in tenths; more digits only churn
# ItemsChanged.
DISPLAY_DECIMALS: Final = 1


class ScannerTree:
    """Owns the BusItemTree content; ``refresh`` maps a ServiceStatus onto it."""

    def __init__(
        self,
        tree: BusItemTree,
        status: Callable[[], ServiceStatus],
        devices: Callable[[], list[Device]],
        device_instance: int,
        custom_name: str,
        on_custom_name: Callable[[str], None],
        monotonic: Callable[[], float] = time.monotonic,
        feed: Callable[[], FeedStatus] = FeedStatus,
    ) -> None:
        self.tree = tree
        self.feed = feed
        self.status = status
        self.devices = devices
        self.monotonic = monotonic
        self.publish_devices = False
        self.publish_devices_max = DEFAULT_PUBLISH_DEVICES_MAX
        self._on_custom_name = on_custom_name
        self._adapters: set[str] = set()
        self._published = 0
        self._last_reports: tuple[float, int] | None = None
        self._last_device_list = -DEVICE_LIST_INTERVAL
        self._refresher = Periodic(
            "updating the Venus tree", STATUS_INTERVAL, self.refresh, _LOGGER, immediately=True
        )
        add_mandatory_paths(
            tree,
            processname="dbus_ble_scanner.py",
            processversion=__version__,
            connection=CONNECTION,
            deviceinstance=device_instance,
            productid=PRODUCT_ID,
            productname=PRODUCT_NAME,
            firmwareversion=__version__,
            hardwareversion="",
            connected=0,
        )
        tree.add_item("/CustomName", custom_name, kind=str, writable=True, onchange=self._custom)
        tree.add_item("/Scanning", 0, kind=int)
        tree.add_item("/Devices/Count", 0, kind=int)
        tree.add_item("/Stats/Reports", 0, kind=int)
        tree.add_item("/Stats/ReportsPerSecond", 0.0, kind=float, text_fn=lambda v: f"{v:.1f}/s")
        tree.add_item("/Stats/Subscriptions", 0, kind=int)
        # The load-shedding step as a number (0..4), its meaning as the item's text.
        tree.add_item("/Stats/LoadShedding", 0, kind=int, text_fn=lambda v: ShedStep(int(v)).text)
        # Reports not delivered because the bus did not keep up (GetStatus Shed), and
        # per subscription that lost any: "/Subscription/3: 120, ..." ("" if none).
        tree.add_item("/Stats/Shed", 0, kind=int)
        tree.add_item("/Stats/SubscriptionsShed", "", kind=str)
        # The dbus-ble-sensors feed (venus/feed.py): its state in words and its datagrams.
        tree.add_item("/BleSensorsFeed/State", FeedStatus().state, kind=str)
        tree.add_item("/BleSensorsFeed/Sent", 0, kind=int)
        tree.add_item("/BleSensorsFeed/Errors", 0, kind=int)

    def _custom(self, path: str, value: object) -> bool:
        # The settings table's bound, so /CustomName and the setting agree.
        if not isinstance(value, str):
            return False
        try:
            from_stored(BY_FIELD["custom_name"], value)
        except ValueError:
            return False
        self._on_custom_name(value)
        return True

    def set_publish(self, enabled: bool, most: int) -> None:
        """The opt-in device list setting changed: apply it at the next refresh."""
        if (enabled, most) != (self.publish_devices, self.publish_devices_max):
            self.publish_devices, self.publish_devices_max = enabled, most
            self._last_device_list = -DEVICE_LIST_INTERVAL

    def set_custom_name(self, name: str) -> None:
        self.tree["/CustomName"] = name

    def start(self) -> None:
        self._refresher.start()

    async def stop(self) -> None:
        await self._refresher.stop()

    def refresh(self) -> None:
        status = self.status()
        tree = self.tree
        now = self.monotonic()
        tree["/Connected"] = int(status.scanning)
        tree["/Scanning"] = int(status.scanning)
        tree["/Devices/Count"] = status.devices
        tree["/Stats/Reports"] = status.reports
        tree["/Stats/Subscriptions"] = status.subscriptions
        tree["/Stats/LoadShedding"] = status.load_shedding
        tree["/Stats/Shed"] = status.shed
        tree["/Stats/SubscriptionsShed"] = ", ".join(
            f"{path}: {count}" for path, count in status.subscriptions_shed
        )
        if self._last_reports is not None:
            then, reports = self._last_reports
            if now > then:
                tree["/Stats/ReportsPerSecond"] = round(
                    (status.reports - reports) / (now - then), DISPLAY_DECIMALS
                )
        self._last_reports = (now, status.reports)
        self._refresh_adapters(status.adapters)
        feed = self.feed()
        tree["/BleSensorsFeed/State"] = feed.state
        tree["/BleSensorsFeed/Sent"] = feed.sent
        tree["/BleSensorsFeed/Errors"] = feed.errors
        if now - self._last_device_list >= DEVICE_LIST_INTERVAL:
            self._last_device_list = now
            self._refresh_device_list()

    def _refresh_adapters(self, adapters: tuple[AdapterStatus, ...]) -> None:
        tree = self.tree
        present = {a.name for a in adapters}
        for gone in self._adapters - present:
            tree.remove_subtree(f"/Adapters/{gone}")
        for adapter in adapters:
            base = f"/Adapters/{adapter.name}"
            values: dict[str, Value] = {
                "Address": adapter.address,
                "Powered": int(adapter.powered),
                "Discovering": int(adapter.discovering),
                "State": adapter.state,
                "Ingest": adapter.ingest,
                "Listening": int(adapter.listening),
            }
            for leaf, value in values.items():
                path = f"{base}/{leaf}"
                if path in tree:
                    tree[path] = value
                else:
                    tree.add_item(path, value)
        self._adapters = present

    def _refresh_device_list(self) -> None:
        """The opt-in list: the most recently heard devices, capped."""
        tree = self.tree
        wanted: list[Device] = []
        if self.publish_devices:
            wanted = sorted(self.devices(), key=lambda d: d.last_seen, reverse=True)
            wanted = wanted[: self.publish_devices_max]
        for index, device in enumerate(wanted):
            content = device.content
            values: dict[str, Value] = {
                "Address": device.address,
                "Name": content.name if content is not None else None,
                "Rssi": device.rssi,
                "Adapter": device.adapter,
                "LastSeen": round(device.last_seen, DISPLAY_DECIMALS),
            }
            kinds: dict[str, type[int] | type[float] | type[str]] = {
                "Address": str,
                "Name": str,
                "Rssi": int,
                "Adapter": str,
                "LastSeen": float,
            }
            for leaf in DEVICE_FIELDS:
                path = f"/Devices/{index}/{leaf}"
                if path in tree:
                    tree[path] = values[leaf]
                else:
                    tree.add_item(path, values[leaf], kind=kinds[leaf])
        for index in range(len(wanted), self._published):
            tree.remove_subtree(f"/Devices/{index}")
        self._published = len(wanted)
