"""Scanner1's signals: the hub's decisions (``core/hub.py`` ``Emitter``) written to the bus.

DeviceDiscovered and DeviceLost, one body to the broadcast and to each
subscription (unicast, from its path), through the outbox (``bus/outbox.py``),
which writes them once per loop iteration; a batched subscription's items go
to ``bus/batches.py`` instead, which sends them as DevicesDiscovered. Each
report's encodings are built once and shared: the full record by everyone who
gets it, a changed-keys item by every subscription whose client holds the same
record for the device. Apart from the methods (service.py) so that the hub
can be given it when built, before the methods are served.
"""

from __future__ import annotations

from typing import Final

from dbus_fast.aio import MessageBus

from .bus.batches import Batches
from .bus.marshal import MESSAGE_SIGNAL, header_fields, string_body
from .bus.outbox import Outbox
from .bus.records import changed_entry, record_entry
from .bus.writer import WriterGuard
from .const import SCANNER_INTERFACE, SCANNER_PATH
from .core.cache import Device
from .core.delta import Sent, changes, sent_of
from .core.subscriptions import Subscription

_SIGNAL_SIGNATURES: Final = {
    "DeviceDiscovered": "sa{sv}",
    "DevicesDiscovered": "a(sa{sv})",
    "DeviceLost": "s",
}
# Signal headers are cached per (path, member, destination): at most three members
# for the broadcast and for each of MAX_SUBSCRIPTIONS_TOTAL subscriptions; past
# this (subscriptions come and go) the cache starts over.
_HEADER_CACHE_SIZE: Final = 1024


class ScannerSignals:
    """Implements the hub's ``Emitter`` on our connection."""

    def __init__(self, bus: MessageBus, guard: WriterGuard | None = None) -> None:
        """``guard``: our connection's write budget, which batched subscriptions heed."""
        # Our signals and snapshot replies, marshalled from cached record parts.
        self.outbox = Outbox(bus)
        self._signal_fields: dict[tuple[str, str, str | None], bytes] = {}
        self.batches = Batches(self.outbox, self._fields, guard)

    def device_discovered(
        self, device: Device, broadcast: bool, subscriptions: list[Subscription]
    ) -> None:
        """This report to the broadcast and to ``subscriptions``, each encoding built once."""
        entry: bytes | None = None
        if broadcast:
            entry = record_entry(device)
            self.outbox.send(
                MESSAGE_SIGNAL, self._fields(SCANNER_PATH, "DeviceDiscovered", None), entry
            )
        # For ChangedKeysOnly: the record this report leaves a client with, and the
        # item already built against each record a client held before it.
        now: Sent | None = None
        built: dict[int, tuple[Sent, bytes]] | None = None
        address = device.address
        for subscription in subscriptions:
            batch = subscription.batch
            if batch is None:
                if entry is None:
                    entry = record_entry(device)
                self.outbox.send(
                    MESSAGE_SIGNAL,
                    self._fields(subscription.path, "DeviceDiscovered", subscription.owner),
                    entry,
                )
                continue
            sent = batch.sent
            before = None
            if sent is not None:
                if now is None:
                    now = sent_of(device)
                before = sent.get(address)
                sent[address] = now
            if before is None:
                if entry is None:
                    entry = record_entry(device)
                item = entry
            else:
                if built is None:
                    built = {}
                # Keyed by identity: clients that got the same report hold the same
                # Sent; the tuple keeps ``before`` alive, so the id is not reused.
                known = built.get(id(before))
                if known is None:
                    assert now is not None
                    item = changed_entry(device, changes(before, now))
                    built[id(before)] = (before, item)
                else:
                    item = known[1]
            self.batches.add(subscription, batch, address, item)

    def device_lost(self, address: str, broadcast: bool, subscriptions: list[Subscription]) -> None:
        """DeviceLost, after whatever a batched subscription still holds (order per device)."""
        for subscription in subscriptions:
            batch = subscription.batch
            if batch is not None:
                self.batches.send_now(subscription)
                batch.forget(address)
        self._emit("DeviceLost", string_body(address), broadcast, subscriptions)

    def replay(self, devices: list[Device], subscription: Subscription) -> None:
        """Cached devices to a new subscription only (Subscribe's Replay): full records,
        as DeviceDiscovered each or, batched, in DevicesDiscovered of bounded size."""
        batch = subscription.batch
        if batch is None:
            for device in devices:
                self._emit("DeviceDiscovered", record_entry(device), False, [subscription])
            return
        sent = batch.sent
        add = self.batches.add
        for device in devices:
            if sent is not None:
                sent[device.address] = sent_of(device)
            add(subscription, batch, device.address, record_entry(device))
        self.batches.send_now(subscription)

    def ended(self, subscription: Subscription, send: bool) -> None:
        """``subscription`` ended: ``send`` what it still holds first (Unsubscribe), or not
        (its owner left the bus); its shed count goes with it."""
        if subscription.batch is not None:
            self.batches.ended(subscription, send)
        guard = self.batches.guard
        if guard is not None:
            guard.shed_by_path.pop(subscription.path, None)

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
