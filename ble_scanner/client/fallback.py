"""Standing in for the service: BlueZ's own signals, read without ever scanning.

While the scanner service is absent a client that asked for
``fallback="bluez"`` follows ``org.bluez`` Device1 objects (InterfacesAdded,
PropertiesChanged, InterfacesRemoved) and builds the same Advertisement
records from them. It never calls StartDiscovery or SetDiscoveryFilter: it
only sees what someone else's discovery makes BlueZ report, and presence
follows BlueZ (a device is lost when BlueZ removes it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from ..const import (
    BLUEZ_DEVICE,
    BLUEZ_ROOT_PATH,
    BLUEZ_SERVICE,
    DBUS_INTERFACE,
    DBUS_PATH,
    DBUS_SERVICE,
    OBJECT_MANAGER,
    PROPERTIES,
)
from .errors import BusUnreachableError, CallTimeoutError, ScannerError
from .records import Advertisement, DeviceLost, Event

_LOGGER = logging.getLogger(__name__)

# bleak's rules (bluezdbus/manager.py): objects under /org/bluez only.
RULES: Final = (
    f"type='signal',sender='{BLUEZ_SERVICE}',interface='{OBJECT_MANAGER}',"
    f"member='InterfacesAdded',arg0path='{BLUEZ_ROOT_PATH}/'",
    f"type='signal',sender='{BLUEZ_SERVICE}',interface='{OBJECT_MANAGER}',"
    f"member='InterfacesRemoved',arg0path='{BLUEZ_ROOT_PATH}/'",
    f"type='signal',sender='{BLUEZ_SERVICE}',interface='{PROPERTIES}',"
    f"member='PropertiesChanged',path_namespace='{BLUEZ_ROOT_PATH}',arg0='{BLUEZ_DEVICE}'",
    f"type='signal',sender='{DBUS_SERVICE}',interface='{DBUS_INTERFACE}',"
    f"member='NameOwnerChanged',arg0='{BLUEZ_SERVICE}'",
)
# Device1 properties that change only when an advertisement was heard.
_REPORT_PROPERTIES: Final = frozenset(
    {"RSSI", "ManufacturerData", "ServiceData", "Name", "UUIDs", "TxPower"}
)


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Variant) else value


def advertisement_from_device(
    path: str, props: Mapping[str, Any], first_seen: float, last_seen: float
) -> Advertisement:
    """A BlueZ Device1 property dict (values unwrapped) → an Advertisement record."""
    adapter = str(props.get("Adapter", path.rsplit("/", 1)[0])).rsplit("/", 1)[-1]
    return Advertisement(
        address=str(props["Address"]),
        address_type=str(props.get("AddressType", "public")),
        adapter=adapter,
        path=path,
        rssi=props.get("RSSI"),
        name=props.get("Name"),
        tx_power=props.get("TxPower"),
        manufacturer_data=MappingProxyType(
            {int(k): bytes(_plain(v)) for k, v in props.get("ManufacturerData", {}).items()}
        ),
        service_data=MappingProxyType(
            {str(k): bytes(_plain(v)) for k, v in props.get("ServiceData", {}).items()}
        ),
        service_uuids=tuple(props.get("UUIDs", ())),
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
        self._devices: dict[str, dict[str, Any]] = {}
        self._seen: dict[str, tuple[float, float]] = {}  # path → (first, last) heard

    async def start(self) -> None:
        for rule in RULES:
            await self._call(DBUS_SERVICE, DBUS_PATH, DBUS_INTERFACE, "AddMatch", "s", [rule])
        reply = await self._call(
            DBUS_SERVICE, DBUS_PATH, DBUS_INTERFACE, "NameHasOwner", "s", [BLUEZ_SERVICE]
        )
        if reply.body[0]:
            await self._load()

    def snapshot(self) -> list[Advertisement]:
        """Devices BlueZ reports as in range (an RSSI is known)."""
        return [
            adv
            for path in self._devices
            if (adv := self._advertisement(path, touch=False)) is not None
        ]

    async def _load(self) -> None:
        owner = await self._call(
            DBUS_SERVICE, DBUS_PATH, DBUS_INTERFACE, "GetNameOwner", "s", [BLUEZ_SERVICE]
        )
        self.owner = str(owner.body[0])
        reply = await self._call(BLUEZ_SERVICE, "/", OBJECT_MANAGER, "GetManagedObjects", "", [])
        for path, interfaces in reply.body[0].items():
            props = interfaces.get(BLUEZ_DEVICE)
            if props is not None:
                self._added(path, props)

    def on_message(self, msg: Message) -> None:
        member = msg.member
        if msg.sender == DBUS_SERVICE:
            if member == "NameOwnerChanged" and msg.body[0] == BLUEZ_SERVICE:
                self._bluez_changed(msg.body[2])
            return
        if msg.sender != self.owner or self.owner is None:
            return
        try:
            if member == "PropertiesChanged" and msg.body[0] == BLUEZ_DEVICE:
                self._changed(msg.path or "", msg.body[1], msg.body[2])
            elif member == "InterfacesAdded" and BLUEZ_DEVICE in msg.body[1]:
                self._added(msg.body[0], msg.body[1][BLUEZ_DEVICE])
            elif member == "InterfacesRemoved" and BLUEZ_DEVICE in msg.body[1]:
                self._removed(msg.body[0])
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            _LOGGER.debug("ignoring a malformed BlueZ signal %s: %r", member, exc)

    def _bluez_changed(self, new_owner: str) -> None:
        for path in list(self._devices):
            self._removed(path)
        self.owner = None
        if new_owner:
            task = asyncio.get_running_loop().create_task(self._reload())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _reload(self) -> None:
        with contextlib.suppress(ScannerError):
            await self._load()

    def _added(self, path: str, props: dict[str, Variant]) -> None:
        self._devices[path] = {k: _plain(v) for k, v in props.items()}
        self._report(path)

    def _changed(self, path: str, changed: dict[str, Variant], invalidated: list[str]) -> None:
        props = self._devices.get(path)
        if props is None:
            return
        for key, value in changed.items():
            props[key] = _plain(value)
        for key in invalidated:
            props.pop(key, None)
        if not _REPORT_PROPERTIES.isdisjoint(changed):
            self._report(path)

    def _removed(self, path: str) -> None:
        props = self._devices.pop(path, None)
        self._seen.pop(path, None)
        if props is not None and "Address" in props:
            self.emit(DeviceLost(str(props["Address"])))

    def _report(self, path: str) -> None:
        adv = self._advertisement(path, touch=True)
        if adv is not None:
            self.emit(adv)

    def _advertisement(self, path: str, touch: bool) -> Advertisement | None:
        props = self._devices[path]
        if props.get("RSSI") is None or "Address" not in props:
            return None  # known to BlueZ (paired, cached) but not heard now
        now = time.time()
        first, last = self._seen.get(path, (now, now))
        if touch:
            last = now
            self._seen[path] = (first, last)
        return advertisement_from_device(path, props, first, last)

    async def _call(
        self, destination: str, path: str, interface: str, member: str, sig: str, body: list[Any]
    ) -> Message:
        msg = Message(
            destination=destination,
            path=path,
            interface=interface,
            member=member,
            signature=sig,
            body=body,
        )
        try:
            reply = await asyncio.wait_for(self.bus.call(msg), self.timeout)
        except TimeoutError:
            raise CallTimeoutError(f"{member}: no answer within {self.timeout:g} s") from None
        except (EOFError, OSError) as exc:
            raise BusUnreachableError(str(exc)) from exc
        assert reply is not None
        if reply.message_type == MessageType.ERROR:
            raise ScannerError(f"{member}: {reply.error_name}: {reply.body}")
        return reply


async def remove_rules(bus: MessageBus, timeout: float) -> None:  # noqa: ASYNC109 per call
    """Drop the fallback's match rules once the service is back."""
    for rule in RULES:
        msg = Message(
            destination=DBUS_SERVICE,
            path=DBUS_PATH,
            interface=DBUS_INTERFACE,
            member="RemoveMatch",
            signature="s",
            body=[rule],
        )
        with contextlib.suppress(Exception):
            await asyncio.wait_for(bus.call(msg), timeout)
