"""The scanner service for GLib main-loop programs on dbus-python (velib_python style).

Most Venus drivers run ``GLib.MainLoop`` with dbus-python; this module gives
them the same records and guarantees as the asyncio client without
dbus-fast::

    from dbus.mainloop.glib import DBusGMainLoop
    from gi.repository import GLib
    from ble_scanner.client.glib import GlibScannerClient

    DBusGMainLoop(set_as_default=True)
    client = GlibScannerClient()
    print(client.devices(manufacturer_id=0x02E1))
    client.subscribe(print, manufacturer_id=0x02E1)
    GLib.MainLoop().run()

Callbacks run on the main loop and get an ``Advertisement`` or a
``DeviceLost``. Subscriptions outlive service restarts (re-subscribed, with
what was already delivered not repeated). Imports: dbus-python, PyGObject and
the pure ``ble_scanner.client.records``; nothing of the service or dbus-fast.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import dbus  # type: ignore[import-not-found,import-untyped,unused-ignore]
from gi.repository import GLib  # type: ignore[import-not-found,import-untyped,unused-ignore]

from ..const import (
    DBUS_INTERFACE,
    DBUS_PATH,
    DBUS_SERVICE,
    DEFAULT_LOST_TIMEOUT,
    PEER,
    SCANNER_INTERFACE,
    SCANNER_PATH,
    SCANNER_SERVICE,
)
from .merge import RecordMerger
from .records import (
    BATCH_OPTIONS,
    Advertisement,
    DeliveryLedger,
    DeviceLost,
    Event,
    make_filter,
    refuses_batch,
)

_LOGGER = logging.getLogger(__name__)

# The service answers from memory; longer means it is wedged (libdbus's own
# default is 25 s, far too long for a main loop to stall).
CALL_TIMEOUT = 5.0
# GLib.timeout_add counts in milliseconds.
_MS_PER_S = 1000

_TYPES: dict[str, Callable[[Any], Any]] = {
    "as": lambda v: dbus.Array([dbus.String(x) for x in v], signature="s"),
    "aq": lambda v: dbus.Array([dbus.UInt16(x) for x in v], signature="q"),
    "n": dbus.Int16,
    "d": dbus.Double,
    "b": dbus.Boolean,
}


class ScannerUnavailable(Exception):
    """The service is not running (or its name is held by an untrusted process)."""


class UntrustedService(ScannerUnavailable):
    """The service's name is owned by a process that is neither root nor us."""


class BusLost(ScannerUnavailable):
    """The connection to the system bus ended (dbus-daemon stopped or restarted)."""


def _dbus_filter(wire: dict[str, tuple[str, Any]]) -> dbus.Dictionary:
    return dbus.Dictionary(
        {key: _TYPES[sig](value) for key, (sig, value) in wire.items()}, signature="sv"
    )


class GlibSubscription:
    """One standing subscription; ``client.unsubscribe(sub)`` ends it."""

    def __init__(self, flt: Any, callback: Callable[[Event], None]) -> None:
        self.filter = flt
        self.callback = callback
        self.path: str | None = None
        self.ledger = DeliveryLedger()
        self.merger = RecordMerger()  # the full records behind changed-keys items
        self.timers: dict[str, int] = {}

    def deliver(self, event: Event) -> None:
        try:
            self.callback(event)
        except Exception:
            _LOGGER.exception("scanner callback failed")

    def discovered(self, adv: Advertisement) -> None:
        self._cancel(adv.address)
        if self.ledger.discovered(adv):
            self.deliver(adv)

    def lost(self, address: str) -> None:
        self._cancel(address)
        if self.ledger.lost(address):
            self.deliver(DeviceLost(address))

    def expire_later(self, adverts: Iterable[Advertisement], lost_timeout: float) -> None:
        now = time.time()
        for adv in adverts:
            self._cancel(adv.address)
            delay = max(0.0, adv.last_seen + lost_timeout - now)
            self.timers[adv.address] = GLib.timeout_add(int(delay * _MS_PER_S), self._expire, adv)

    def _expire(self, adv: Advertisement) -> bool:
        self.timers.pop(adv.address, None)
        if self.ledger.expire(adv):
            self.deliver(DeviceLost(adv.address))
        return False  # one-shot

    def _cancel(self, address: str) -> None:
        source = self.timers.pop(address, None)
        if source is not None:
            GLib.source_remove(source)

    def cancel_all(self) -> None:
        for source in self.timers.values():
            GLib.source_remove(source)
        self.timers.clear()


class GlibScannerClient:
    """A client of ``com.victronenergy.ble.scanner`` for dbus-python + GLib programs.

    Args:
        bus: a dbus-python bus; default ``dbus.SystemBus()`` (set
            ``DBusGMainLoop(set_as_default=True)`` first).
        trusted_uids: users the service may run as; default root and us.
        lost_timeout: after a service restart, a device not heard again this
            long after it was last seen is reported lost.
        on_bus_lost: called (no arguments) on the main loop when the
            connection to the bus ends (dbus-daemon stopped or restarted);
            the loss is logged as an error either way. libdbus then exits
            the process with code 1 (its default for bus connections), which
            a supervisor restarts; after ``bus.set_exit_on_disconnect(False)``
            the program lives on, and ``devices()`` raises :class:`BusLost`.
        batch: subscribe with ``Batch`` and ``ChangedKeysOnly`` (several
            reports per signal, each only what changed; the same full records
            reach the callback), falling back to one signal per report with a
            service that refuses them. ``False``: one signal per report.
    """

    def __init__(
        self,
        bus: Any = None,
        trusted_uids: Iterable[int] | None = None,
        lost_timeout: float = DEFAULT_LOST_TIMEOUT,
        on_bus_lost: Callable[[], None] | None = None,
        batch: bool = True,
    ) -> None:
        self.bus = dbus.SystemBus() if bus is None else bus
        self.on_bus_lost = on_bus_lost
        self.bus_lost = False
        # libdbus's own "Disconnected" signal on /org/freedesktop/DBus/Local.
        self.bus.call_on_disconnection(self._disconnected)
        self.trusted_uids = frozenset((0, os.getuid()) if trusted_uids is None else trusted_uids)
        self.lost_timeout = lost_timeout
        self.batch = batch
        self._unbatched: str | None = None  # the service owner that refused the batch options
        self.owner: str | None = None
        self._subscriptions: list[GlibSubscription] = []
        self._by_path: dict[str, GlibSubscription] = {}
        self._owner_watch = self.bus.add_signal_receiver(
            self._owner_changed,
            signal_name="NameOwnerChanged",
            dbus_interface=DBUS_INTERFACE,
            bus_name=DBUS_SERVICE,
            path=DBUS_PATH,
            arg0=SCANNER_SERVICE,
        )
        self.bus.add_message_filter(self._filter)
        try:
            owner = str(self._bus_call("GetNameOwner", "s", (SCANNER_SERVICE,)))
        except dbus.DBusException:
            owner = ""
        if owner:
            self._adopt(owner)

    # --- the API -------------------------------------------------------------------

    @property
    def available(self) -> bool:
        return self.owner is not None

    def devices(self, **filters: Any) -> dict[str, Advertisement]:
        """Snapshot of present devices (a blocking call, like velib's own)."""
        flt = make_filter(**filters)
        if self.bus_lost:
            raise BusLost("lost the system bus")
        if self.owner is None:
            raise ScannerUnavailable(f"{SCANNER_SERVICE} is not running")
        reply = self.bus.call_blocking(
            SCANNER_SERVICE,
            SCANNER_PATH,
            SCANNER_INTERFACE,
            "GetDiscoveredDevices",
            "a{sv}",
            (_dbus_filter(flt.to_dbus(subscription=False)),),
            timeout=CALL_TIMEOUT,
            byte_arrays=True,
        )
        return {str(a): Advertisement.from_record(r) for a, r in reply.items()}

    def subscribe(self, callback: Callable[[Event], None], **filters: Any) -> GlibSubscription:
        """Call ``callback(event)`` on the main loop for each matching event.

        Works while the service is away too: the subscription is made when it
        appears.
        """
        subscription = GlibSubscription(make_filter(**filters), callback)
        self._subscriptions.append(subscription)
        if self.owner is not None:
            self._subscribe_remote(subscription)
        return subscription

    def unsubscribe(self, subscription: GlibSubscription) -> None:
        subscription.cancel_all()
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)
        path, subscription.path = subscription.path, None
        if path is not None:
            self._by_path.pop(path, None)
            if self.owner is not None and not self.bus_lost:
                self.bus.call_async(
                    SCANNER_SERVICE,
                    SCANNER_PATH,
                    SCANNER_INTERFACE,
                    "Unsubscribe",
                    "o",
                    (path,),
                    None,
                    lambda error: None,
                    timeout=CALL_TIMEOUT,
                )

    def close(self) -> None:
        for subscription in list(self._subscriptions):
            self.unsubscribe(subscription)
        # The filter stays installed but idle: dbus-python 1.3's
        # remove_message_filter aborts the process (libdbus "no such filter").
        self.owner = None
        if not self.bus_lost:
            self._owner_watch.remove()

    # --- internals -----------------------------------------------------------------

    def _disconnected(self, connection: Any) -> None:
        self.bus_lost = True
        self.owner = None
        self._by_path.clear()
        for subscription in self._subscriptions:
            subscription.path = None
            subscription.cancel_all()
        _LOGGER.error("lost the system bus: no more events from %s", SCANNER_SERVICE)
        if self.on_bus_lost is not None:
            try:
                self.on_bus_lost()
            except Exception:
                _LOGGER.exception("on_bus_lost callback failed")

    def _bus_call(self, member: str, signature: str, args: tuple[Any, ...]) -> Any:
        return self.bus.call_blocking(
            DBUS_SERVICE, DBUS_PATH, DBUS_INTERFACE, member, signature, args, timeout=CALL_TIMEOUT
        )

    def _adopt(self, owner: str) -> None:
        uid = int(self._bus_call("GetConnectionUnixUser", "s", (owner,)))
        if uid not in self.trusted_uids:
            _LOGGER.error("%s is owned by uid %d: not trusted, ignored", SCANNER_SERVICE, uid)
            return
        self.owner = owner
        for subscription in self._subscriptions:
            self._subscribe_remote(subscription)

    def _owner_changed(self, name: str, old: str, new: str) -> None:
        if self.owner is not None and new != self.owner:
            self.owner = None
            self._by_path.clear()
            for subscription in self._subscriptions:
                subscription.path = None
                subscription.expire_later(subscription.ledger.source_lost(), self.lost_timeout)
        if new:
            try:
                self._adopt(str(new))
            except dbus.DBusException as exc:
                _LOGGER.warning("cannot check the new owner of %s: %s", SCANNER_SERVICE, exc)

    def _subscribe_remote(self, subscription: GlibSubscription) -> None:
        # Replies and signals are dispatched in order, so the reply handler has
        # recorded the path before the replayed signals reach _filter; a Ping
        # answered after them marks the end of the replay.
        subscription.ledger.begin_resync()
        owner = self.owner

        def subscribed(path: str) -> None:
            # A reply read before the connection broke is dispatched after it.
            if owner != self.owner or subscription not in self._subscriptions or self.bus_lost:
                return
            subscription.path = str(path)
            subscription.merger.clear()  # a new subscription: every device's first item is full
            self._by_path[subscription.path] = subscription
            try:
                self.bus.call_async(
                    SCANNER_SERVICE,
                    SCANNER_PATH,
                    PEER,
                    "Ping",
                    "",
                    (),
                    replayed,
                    failed,
                    timeout=CALL_TIMEOUT,
                )
            except dbus.DBusException:
                return  # disconnected: the Disconnected signal comes next, and says so

        def replayed() -> None:
            subscription.expire_later(subscription.ledger.end_resync(), self.lost_timeout)

        options = subscription.filter.to_dbus(subscription=True)
        batched = self.batch and self._unbatched != owner
        if batched:
            options.update(BATCH_OPTIONS)

        def failed(error: Exception) -> None:
            if self.bus_lost:
                return  # said once, in _disconnected
            name = error.get_dbus_name() if isinstance(error, dbus.DBusException) else ""
            if batched and refuses_batch(name or "", str(error)) and owner == self.owner:
                _LOGGER.info("%s does not batch: one signal per report", SCANNER_SERVICE)
                self._unbatched = owner
                if subscription in self._subscriptions:
                    self._subscribe_remote(subscription)
                return
            _LOGGER.error("subscribing to %s failed: %s", SCANNER_SERVICE, error)

        self.bus.call_async(
            SCANNER_SERVICE,
            SCANNER_PATH,
            SCANNER_INTERFACE,
            "Subscribe",
            "a{sv}",
            (_dbus_filter(options),),
            subscribed,
            failed,
            timeout=CALL_TIMEOUT,
        )

    def _filter(self, bus: Any, msg: Any) -> Any:
        """Every message passes on: dbus-python takes a filter's None as "handled", which
        would keep them from the program's own objects and later filters."""
        if msg.get_type() == dbus.lowlevel.MESSAGE_TYPE_SIGNAL:
            self._on_signal(msg)
        return dbus.lowlevel.HANDLER_RESULT_NOT_YET_HANDLED

    def _on_signal(self, msg: Any) -> None:
        if self.owner is None or msg.get_sender() != self.owner:
            return
        subscription = self._by_path.get(msg.get_path())
        if subscription is None or msg.get_interface() != SCANNER_INTERFACE:
            return
        member = msg.get_member()
        args = msg.get_args_list(byte_arrays=True)
        signature = msg.get_signature()
        if member == "DevicesDiscovered" and signature == "a(sa{sv})":
            merger = subscription.merger
            for address, values in args[0]:
                try:
                    adv = merger.item(str(address), values)
                except ValueError as exc:
                    _LOGGER.warning("ignoring a malformed item: %s", exc)
                    continue
                subscription.discovered(adv)
        elif member == "DeviceDiscovered" and signature == "sa{sv}":
            try:
                subscription.discovered(Advertisement.from_record(args[1]))
            except ValueError as exc:
                _LOGGER.warning("ignoring a malformed record: %s", exc)
        elif member == "DeviceLost" and signature == "s":
            subscription.merger.lost(str(args[0]))
            subscription.lost(str(args[0]))
