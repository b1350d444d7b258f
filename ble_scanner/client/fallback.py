"""Standing in for the service: BlueZ's own signals, read without ever scanning.

While the scanner service is absent a client that asked for
``fallback="bluez"`` follows ``org.bluez`` Device1 objects (InterfacesAdded,
PropertiesChanged, InterfacesRemoved) and builds the same Advertisement
records from them. It never calls StartDiscovery or SetDiscoveryFilter: it
only sees what someone else's discovery makes BlueZ report, and presence
follows BlueZ (a device is lost when BlueZ removes it).

Device1 is read with the service's own code (``ble_scanner.core.record``: the
signatures, the checks, which properties mean "heard"), so a record from the
fallback is the one the service would have sent. Calls go through
``ble_scanner.bus.calls``; their errors reach the proxy untranslated, which
puts them in the client's terms in its one place.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Collection, Mapping
from types import MappingProxyType
from typing import Final

from dbus_fast import Message, Variant
from dbus_fast.aio import MessageBus

from ..bus.calls import (
    BusGoneError,
    CallError,
    add_match,
    call,
    call_bus,
    name_owner,
    name_owner_rule,
    remove_match,
    signal_rule,
)
from ..bus.owner import owner_change
from ..const import (
    BLUEZ_DEVICE,
    BLUEZ_ROOT_PATH,
    BLUEZ_SERVICE,
    DBUS_SERVICE,
    OBJECT_MANAGER,
    PROPERTIES,
)
from ..core.record import DeviceView, MalformedData, adapter_name, unwrap_device
from ..tasks import TaskSet
from .records import Advertisement, DeviceLost, Event

_LOGGER = logging.getLogger(__name__)

# bleak's rules (bluezdbus/manager.py): objects under /org/bluez only.
RULES: Final = (
    signal_rule(
        sender=BLUEZ_SERVICE,
        interface=OBJECT_MANAGER,
        member="InterfacesAdded",
        arg0path=f"{BLUEZ_ROOT_PATH}/",
    ),
    signal_rule(
        sender=BLUEZ_SERVICE,
        interface=OBJECT_MANAGER,
        member="InterfacesRemoved",
        arg0path=f"{BLUEZ_ROOT_PATH}/",
    ),
    signal_rule(
        sender=BLUEZ_SERVICE,
        interface=PROPERTIES,
        member="PropertiesChanged",
        path_namespace=BLUEZ_ROOT_PATH,
        arg0=BLUEZ_DEVICE,
    ),
    name_owner_rule(BLUEZ_SERVICE),
)
# What a failed call raises (ble_scanner.bus.calls); the proxy translates them.
CALL_ERRORS: Final = (CallError, TimeoutError, BusGoneError)


def advertisement_from_view(view: DeviceView, first_seen: float, last_seen: float) -> Advertisement:
    """The client's record of what BlueZ's Device1 object says now."""
    content = view.content
    return Advertisement(
        address=view.address,
        address_type=view.address_type,
        adapter=view.adapter,
        path=view.path,
        rssi=view.rssi,
        name=content.name,
        tx_power=content.tx_power,
        # DeviceView replaces these dicts on change and never mutates them.
        manufacturer_data=MappingProxyType(content.manufacturer_data),
        service_data=MappingProxyType(content.service_data),
        service_uuids=content.service_uuids,
        first_seen=first_seen,
        last_seen=last_seen,
    )


class BluezListener:
    """Follows BlueZ's Device1 objects; ``emit`` gets each Advertisement / DeviceLost."""

    def __init__(self, bus: MessageBus, emit: Callable[[Event], None], timeout: float) -> None:
        self.bus = bus
        self.emit = emit
        self.timeout = timeout
        self.owner: str | None = None
        self._views: dict[str, DeviceView] = {}
        self._seen: dict[str, tuple[float, float]] = {}  # path → (first, last) heard
        self._tasks = TaskSet(_LOGGER, "reading BlueZ's objects again")

    async def start(self) -> None:
        """Add the match rules and load BlueZ's objects; raises what ``bus.calls`` raises."""
        for rule in RULES:
            await add_match(self.bus, rule, timeout=self.timeout)
        (has_owner,) = await call_bus(
            self.bus, "NameHasOwner", "s", [BLUEZ_SERVICE], timeout=self.timeout
        )
        if has_owner:
            await self._load()

    def snapshot(self) -> list[Advertisement]:
        """Devices BlueZ reports as in range (an RSSI is known)."""
        return [
            adv
            for view in self._views.values()
            if (adv := self._advertisement(view, touch=False)) is not None
        ]

    async def _load(self) -> None:
        self.owner = await name_owner(self.bus, BLUEZ_SERVICE, timeout=self.timeout)
        (objects,) = await call(
            self.bus, BLUEZ_SERVICE, "/", OBJECT_MANAGER, "GetManagedObjects", timeout=self.timeout
        )
        for path, interfaces in objects.items():
            props = interfaces.get(BLUEZ_DEVICE)
            if props is not None:
                self._added(path, props)

    def on_message(self, msg: Message) -> None:
        member = msg.member
        if msg.sender == DBUS_SERVICE:
            change = owner_change(msg)
            if change is not None:
                name, new_owner = change
                if name == BLUEZ_SERVICE:
                    self._bluez_changed(new_owner)
            return
        if msg.sender != self.owner or self.owner is None:
            return
        try:
            if member == "PropertiesChanged" and msg.body[0] == BLUEZ_DEVICE:
                _interface, changed, invalidated = msg.body
                self._changed(msg.path or "", changed, invalidated)
            elif member == "InterfacesAdded" and BLUEZ_DEVICE in msg.body[1]:
                self._added(msg.body[0], msg.body[1][BLUEZ_DEVICE])
            elif member == "InterfacesRemoved" and BLUEZ_DEVICE in msg.body[1]:
                self._removed(msg.body[0])
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            _LOGGER.debug("ignoring a malformed BlueZ signal %s: %r", member, exc)

    def _bluez_changed(self, new_owner: str) -> None:
        for path in list(self._views):
            self._removed(path)
        self.owner = None
        if new_owner:
            self._tasks.spawn(self._reload())

    async def _reload(self) -> None:
        with contextlib.suppress(*CALL_ERRORS):
            await self._load()

    def _added(self, path: str, props: Mapping[str, Variant]) -> None:
        view = self._views.get(path) or DeviceView(path, adapter_name(path))
        if self._update(view, props, ()) is not None and view.address:
            self._views[path] = view
            self._report(view)

    def _changed(self, path: str, changed: Mapping[str, Variant], invalidated: list[str]) -> None:
        view = self._views.get(path)
        if view is not None and self._update(view, changed, invalidated):
            self._report(view)

    @staticmethod
    def _update(
        view: DeviceView, changed: Mapping[str, Variant], invalidated: Collection[str]
    ) -> bool | None:
        """Apply one signal's properties: True if it carries a report, None if malformed."""
        try:
            is_report = view.update(unwrap_device(changed), invalidated)
        except (MalformedData, AttributeError, TypeError, ValueError) as exc:
            _LOGGER.debug("ignoring malformed Device1 data from %s: %s", view.path, exc)
            return None
        if "RSSI" in invalidated:
            # Unlike the service, which decides presence itself and keeps the last
            # reading, the fallback follows BlueZ: no RSSI means not in range.
            view.rssi = None
        return is_report

    def _removed(self, path: str) -> None:
        view = self._views.pop(path, None)
        self._seen.pop(path, None)
        if view is not None:
            self.emit(DeviceLost(view.address))

    def _report(self, view: DeviceView) -> None:
        adv = self._advertisement(view, touch=True)
        if adv is not None:
            self.emit(adv)

    def _advertisement(self, view: DeviceView, touch: bool) -> Advertisement | None:
        if view.rssi is None:
            return None  # known to BlueZ (paired, cached) but not heard now
        now = time.time()
        first, last = self._seen.get(view.path, (now, now))
        if touch:
            last = now
            self._seen[view.path] = (first, last)
        return advertisement_from_view(view, first, last)


async def remove_rules(bus: MessageBus, timeout: float) -> None:  # noqa: ASYNC109 per call
    """Drop the fallback's match rules once the service is back (best effort)."""
    for rule in RULES:
        with contextlib.suppress(*CALL_ERRORS):
            await remove_match(bus, rule, timeout=timeout)
