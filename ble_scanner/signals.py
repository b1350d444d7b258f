"""Scanner1's signals: the hub's decisions (``core/hub.py`` ``Emitter``) written to the bus.

DeviceDiscovered and DeviceLost, one body to the broadcast and to each
subscription (unicast, from its path), through the outbox (``bus/outbox.py``),
which writes them once per loop iteration. Apart from the methods (service.py)
so that the hub can be given it when built, before the methods are served.
"""

from __future__ import annotations

from typing import Final

from dbus_fast.aio import MessageBus

from .bus.marshal import MESSAGE_SIGNAL, header_fields, record_entry, string_body
from .bus.outbox import Outbox
from .const import SCANNER_INTERFACE, SCANNER_PATH
from .core.cache import Device
from .core.subscriptions import Subscription

_SIGNAL_SIGNATURES: Final = {"DeviceDiscovered": "sa{sv}", "DeviceLost": "s"}
# Signal headers are cached per (path, member, destination): at most two members
# for the broadcast and for each of MAX_SUBSCRIPTIONS_TOTAL subscriptions; past
# this (subscriptions come and go) the cache starts over.
_HEADER_CACHE_SIZE: Final = 1024


class ScannerSignals:
    """Implements the hub's ``Emitter`` on our connection."""

    def __init__(self, bus: MessageBus) -> None:
        # Our signals and snapshot replies, marshalled from cached record parts.
        self.outbox = Outbox(bus)
        self._signal_fields: dict[tuple[str, str, str | None], bytes] = {}

    def device_discovered(
        self, device: Device, broadcast: bool, subscriptions: list[Subscription]
    ) -> None:
        self._emit("DeviceDiscovered", record_entry(device), broadcast, subscriptions)

    def device_lost(self, address: str, broadcast: bool, subscriptions: list[Subscription]) -> None:
        self._emit("DeviceLost", string_body(address), broadcast, subscriptions)

    def replay(self, device: Device, subscription: Subscription) -> None:
        """A cached device to a new subscription only (Subscribe's Replay)."""
        self._emit("DeviceDiscovered", record_entry(device), False, [subscription])

    def _emit(
        self, member: str, body: bytes, broadcast: bool, subscriptions: list[Subscription]
    ) -> None:
        """One body, to the broadcast and to each subscription (unicast, from its path)."""
        send, fields = self.outbox.send, self._fields
        if broadcast:
            send(MESSAGE_SIGNAL, fields(SCANNER_PATH, member, None), body)
        for subscription in subscriptions:
            send(MESSAGE_SIGNAL, fields(subscription.path, member, subscription.owner), body)

    def _fields(self, path: str, member: str, destination: str | None) -> bytes:
        """The header fields of one of our signals, built once per path and destination."""
        key = (path, member, destination)
        fields = self._signal_fields.get(key)
        if fields is None:
            if len(self._signal_fields) >= _HEADER_CACHE_SIZE:
                self._signal_fields.clear()
            fields = self._signal_fields[key] = header_fields(
                _SIGNAL_SIGNATURES[member],
                path=path,
                interface=SCANNER_INTERFACE,
                member=member,
                destination=destination,
            )
        return fields
