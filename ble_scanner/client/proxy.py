"""``ScannerClient``: the asyncio proxy for ``com.victronenergy.ble.scanner`` (dbus-fast).

One connection per client, one message handler, match rules added
explicitly (only NameOwnerChanged for our name: the service's signals to a
subscription are unicast and arrive without one). Signals are accepted only
from the unique name whose owner was checked. The client's source of events
is that service, or BlueZ's own signals while it is away (``fallback``); what
reaches each subscription is ``subscription``'s job, and calls are made in
the client's terms through ``calls``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Final, Literal

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

from ..bus.calls import (
    add_match,
    call_bus,
    call_reply,
    connection_lost,
    disconnect_reason,
    method_call,
    name_owner,
    name_owner_rule,
    raise_for_error,
)
from ..bus.owner import owner_change
from ..const import (
    DBUS_SERVICE,
    DEFAULT_LOST_TIMEOUT,
    PEER,
    SCANNER_INTERFACE,
    SCANNER_PATH,
    SCANNER_SERVICE,
)
from ..tasks import TaskSet
from .calls import client_terms, record_of, variants
from .errors import (
    BusLostError,
    BusUnreachableError,
    InvalidFilterError,
    ScannerError,
    ServiceNotRunningError,
    UntrustedServiceError,
)
from .records import BATCH_OPTIONS, Advertisement, Event, ScanFilter, make_filter, refuses_batch
from .status import ScannerStatus
from .subscription import AdvertisementStream, Subscription, Subscriptions

_LOGGER = logging.getLogger(__name__)

# The service answers every call from memory; no answer in 5 s means it is
# wedged. dbus-fast and the system bus have no timeout of their own.
CALL_TIMEOUT: Final = 5.0
# How long a client waits for a service that is not (yet) running: covers a
# boot where clients start first, and a daemontools restart (1 s pause).
DEFAULT_SERVICE_WAIT: Final = 10.0
# Retry of a re-subscription the new service did not accept (busy starting,
# or at its subscription limit): soon at first, doubling, then no more than
# every 30 s.
RESUBSCRIBE_BACKOFF_INITIAL: Final = 0.5
RESUBSCRIBE_BACKOFF_FACTOR: Final = 2
RESUBSCRIBE_BACKOFF_MAX: Final = 30.0

Callback = Callable[[Event], Awaitable[None] | None]
BusLostCallback = Callable[[BusLostError], None]
Fallback = Literal["bluez"] | None


class ScannerClient:
    """A connection to the scanner service.

    Use as ``async with ScannerClient() as client:``. Filters are keyword
    arguments (see :func:`ble_scanner.client.records.make_filter`):
    ``address(es)``, ``manufacturer_id(s)``, ``service_uuid(s)``,
    ``service_data_uuid(s)``, ``local_name(s)`` (glob), ``min_rssi``; for
    subscriptions also ``all_reports``, ``rssi_delta``, ``keep_alive``; for
    snapshots ``max_age``.

    Args:
        bus_address: a D-Bus address; default: the system bus
            (``DBUS_SYSTEM_BUS_ADDRESS`` is honoured).
        timeout: seconds every call may take.
        service_timeout: seconds to wait for the service when it is not
            running at start (``None``: forever, 0: fail at once).
        fallback: ``"bluez"`` to listen to BlueZ's own signals while the
            service is absent (never starting discovery), switching back
            when it appears.
        trusted_uids: users the service may run as; default root and us.
        lost_timeout: after the service restarts, a device it has not heard
            again this long after it was last seen is reported lost.
        on_bus_lost: called once with a :class:`BusLostError` if the
            connection to the bus ends under the client (the bus daemon
            stopped or restarted). Streams raise the same error, calls in
            flight and later fail with it at once; the client is finished.
        batch: subscribe with ``Batch`` and ``ChangedKeysOnly`` (several
            reports per signal, each only what changed; the client rebuilds
            the same full records), falling back to one signal per report
            with a service that refuses them. ``False``: one signal per
            report, full records, always.
    """

    def __init__(
        self,
        *,
        bus_address: str | None = None,
        timeout: float = CALL_TIMEOUT,
        service_timeout: float | None = DEFAULT_SERVICE_WAIT,
        fallback: Fallback = None,
        trusted_uids: Iterable[int] | None = None,
        lost_timeout: float = DEFAULT_LOST_TIMEOUT,
        on_bus_lost: BusLostCallback | None = None,
        batch: bool = True,
    ) -> None:
        if fallback not in (None, "bluez"):
            raise ValueError(f"fallback must be None or 'bluez', not {fallback!r}")
        self.bus_address = bus_address
        self.timeout = timeout
        self.service_timeout = service_timeout
        self.fallback = fallback
        self.trusted_uids = frozenset((0, os.getuid()) if trusted_uids is None else trusted_uids)
        self.lost_timeout = lost_timeout
        self.batch = batch
        self._unbatched: str | None = None  # the service owner that refused the batch options
        self._bus: MessageBus | None = None
        self._owner: str | None = None  # unique name of the checked service owner
        self._error: ScannerError | None = None
        self._changed = asyncio.Event()  # owner, fallback or error changed
        self._subscriptions = Subscriptions()
        self._owner_lock = asyncio.Lock()
        self._latest_owner: str | None = None
        self._tasks = TaskSet(_LOGGER, "scanner client task")
        self._fallback: Any = None  # a BluezListener while it stands in for the service
        self.on_bus_lost = on_bus_lost
        self._bus_lost: BusLostError | None = None
        self._bus_watch: asyncio.Task[None] | None = None

    # --- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> ScannerClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Connect, check the service's owner, or wait for it / fall back as configured."""
        try:
            self._bus = await asyncio.wait_for(
                MessageBus(bus_address=self.bus_address, bus_type=BusType.SYSTEM).connect(),
                self.timeout,
            )
        except Exception as exc:
            raise BusUnreachableError(f"cannot connect to the system bus: {exc}") from exc
        self._bus.add_message_handler(self._on_message)
        self._bus_watch = asyncio.get_running_loop().create_task(self._watch_bus(self._bus))
        try:
            bus = self._bus
            with client_terms():
                await add_match(bus, name_owner_rule(SCANNER_SERVICE), timeout=self.timeout)
                owner = await name_owner(bus, SCANNER_SERVICE, timeout=self.timeout)
            self._latest_owner = owner
            if owner is not None:
                async with self._owner_lock:
                    await self._adopt(owner)
                if self._error is not None:
                    raise self._error
            elif self.fallback == "bluez":
                await self._start_fallback()
            else:
                await self.wait_for_service(self.service_timeout)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Drop every subscription and disconnect (the service frees them with us)."""
        self._subscriptions.close()
        self._tasks.cancel()
        bus, self._bus = self._bus, None  # the bus watch ends with the connection, quietly
        if bus is None:
            return
        if self._fallback is not None:
            self._fallback = None
        bus.remove_message_handler(self._on_message)
        if bus.connected:
            bus.disconnect()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(bus.wait_for_disconnect(), self.timeout)  # type: ignore[no-untyped-call]

    @property
    def mode(self) -> Literal["service", "bluez", "waiting"]:
        """Where events come from now."""
        if self._owner is not None:
            return "service"
        return "bluez" if self._fallback is not None else "waiting"

    @property
    def bus_lost(self) -> BusLostError | None:
        """Why the connection to the bus ended under the client, or None while it stands."""
        return self._bus_lost

    @property
    def service_owner(self) -> str | None:
        """The unique bus name of the (checked) service, while it runs."""
        return self._owner

    async def wait_for_service(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Return once a trusted service owns the name; ServiceNotRunningError after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while self._owner is None:
            if self._error is not None:
                raise self._error
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                raise ServiceNotRunningError(
                    f"{SCANNER_SERVICE} is not running"
                    + (f" (waited {timeout:g} s)" if timeout else "")
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    # --- the API -------------------------------------------------------------------

    async def devices(self, **filters: Any) -> dict[str, Advertisement]:
        """Snapshot: address → latest advertisement, for present devices matching ``filters``."""
        flt = make_filter(**filters)
        if self._owner is None and self._fallback is not None:
            listener = self._fallback
            cutoff = None if flt.max_age is None else time.time() - flt.max_age
            return {
                adv.address: adv
                for adv in listener.snapshot()
                if flt.matches(adv) and (cutoff is None or adv.last_seen >= cutoff)
            }
        await self._need_service()
        reply = await self._call_service(
            "GetDiscoveredDevices", "a{sv}", [variants(flt.to_dbus(subscription=False))]
        )
        out: dict[str, Advertisement] = {}
        for address, raw in reply.body[0].items():
            try:
                out[address] = record_of(raw)
            except ValueError as exc:
                _LOGGER.warning("ignoring a malformed record for %s: %s", address, exc)
        return out

    async def status(self) -> ScannerStatus:
        """The service's own account of itself (adapters, counts, version)."""
        await self._need_service()
        reply = await self._call_service("GetStatus", "", [])
        return ScannerStatus.from_dbus({k: v.value for k, v in reply.body[0].items()})

    async def pause_scan(self, adapter: str, seconds: float) -> str:
        """Have the service stop its discovery on ``adapter`` for ``seconds`` (at most 60)
        while you connect; returns the lease's path (``release_lease`` ends it early; it
        also ends when this client closes). Needs root or the service's steer group:
        ``AccessDeniedError`` otherwise."""
        return await self._lease("PauseScan", adapter, seconds)

    async def request_active_scan(self, adapter: str, seconds: float) -> str:
        """An active-scan window on ``adapter`` (``""``: every adapter) for ``seconds``
        (at most 300); as ``pause_scan`` otherwise."""
        return await self._lease("RequestActiveScan", adapter, seconds)

    async def release_lease(self, path: str) -> None:
        await self._need_service()
        await self._call_service("ReleaseLease", "o", [path])

    async def _lease(self, member: str, adapter: str, seconds: float) -> str:
        await self._need_service()
        reply = await self._call_service(member, "sd", [adapter, float(seconds)])
        return str(reply.body[0])

    def subscribe(self, **filters: Any) -> AdvertisementStream:
        """Stream of Advertisement / DeviceLost; devices already present come first."""
        return AdvertisementStream(self, make_filter(**filters))

    async def on_advertisement(self, callback: Callback, **filters: Any) -> Subscription:
        """Call ``callback(event)`` for each Advertisement / DeviceLost matching ``filters``.

        Devices already present have been delivered when this returns.
        ``callback`` may be a plain function or a coroutine function.
        """
        if inspect.iscoroutinefunction(callback):
            coroutine_fn = callback

            def deliver(event: Event) -> None:
                self._tasks.spawn(coroutine_fn(event))

        else:

            def deliver(event: Event) -> None:
                try:
                    callback(event)
                except Exception:
                    _LOGGER.exception("advertisement callback failed")

        return await self._add(make_filter(**filters), deliver)

    # --- subscriptions -------------------------------------------------------------

    async def _add(self, flt: ScanFilter, deliver: Callable[[Event], None]) -> Subscription:
        subscription = Subscription(self, flt, deliver)
        if self._owner is None and self._fallback is None:
            await self._need_service()
        self._subscriptions.add(subscription)
        try:
            if self._owner is not None:
                await self._subscribe_remote(subscription)
            elif self._fallback is not None:
                subscription.ledger.begin_resync()
                for adv in self._fallback.snapshot():
                    if flt.matches(adv):
                        subscription._discovered(adv)
                subscription.ledger.end_resync()
        except BaseException:
            await self._remove(subscription)
            raise
        return subscription

    async def _remove(self, subscription: Subscription) -> None:
        path = self._subscriptions.discard(subscription)
        if path is None:
            return
        if self._owner is not None and self._bus is not None and self._bus.connected:
            with contextlib.suppress(ScannerError):
                await self._call_service("Unsubscribe", "o", [path])

    async def _subscribe_remote(self, subscription: Subscription) -> None:
        """Subscribe on the current service, swallowing what the user already has."""
        owner = self._owner
        subscription.ledger.begin_resync()
        self._subscriptions.subscribing()
        try:
            reply = await self._subscribe_call(subscription, owner)
            path = reply.body[0]
            if reply.sender != owner or not subscription.active:
                return  # the owner changed under us; adopting the new one re-subscribes
            self._subscriptions.subscribed(subscription, path)
        finally:
            self._subscriptions.subscribe_done()
        # The replay follows the reply on the service's socket, so once a Ping
        # sent after it is answered, the whole replay has been handled.
        await self._call(SCANNER_SERVICE, SCANNER_PATH, PEER, "Ping", "", [])
        subscription._expire_later(subscription.ledger.end_resync(), self.lost_timeout)

    async def _subscribe_call(self, subscription: Subscription, owner: str | None) -> Message:
        """Subscribe, batched unless asked not to or this service refused it before."""
        options = subscription.filter.to_dbus(subscription=True)
        if not self.batch or self._unbatched == owner:
            return await self._call_service("Subscribe", "a{sv}", [variants(options)])
        try:
            return await self._call_service(
                "Subscribe", "a{sv}", [variants({**options, **BATCH_OPTIONS})]
            )
        except InvalidFilterError as exc:
            if not refuses_batch(exc.name, exc.text):
                raise
            _LOGGER.info("%s does not batch (%s): one signal per report", SCANNER_SERVICE, exc)
            self._unbatched = owner
        return await self._call_service("Subscribe", "a{sv}", [variants(options)])

    # --- incoming ------------------------------------------------------------------

    def _on_message(self, msg: Message) -> None:
        if msg.message_type != MessageType.SIGNAL:
            return
        sender = msg.sender
        if sender == DBUS_SERVICE:
            change = owner_change(msg)
            if change is not None and change[0] == SCANNER_SERVICE:
                self._owner_changed(change[1])
            elif self._fallback is not None:
                # org.bluez's owner changes too: the fallback follows bluetoothd.
                self._fallback.on_message(msg)
            return
        if sender != self._owner or sender is None:
            if self._fallback is not None:
                self._fallback.on_message(msg)
            return
        self._subscriptions.on_service_signal(msg)

    def _from_bluez(self, event: Event) -> None:
        """An event from the BlueZ fallback; the service's own, once it is back, win."""
        if self._owner is None:
            self._subscriptions.from_bluez(event)

    # --- the service coming and going ----------------------------------------------

    def _owner_changed(self, new_owner: str) -> None:
        self._latest_owner = new_owner or None
        if self._owner is not None and new_owner != self._owner:
            _LOGGER.info("%s left the bus; waiting for it to return", SCANNER_SERVICE)
            self._owner = None
            self._subscriptions.source_lost(self.lost_timeout)
            self._changed.set()
        if new_owner:
            self._tasks.spawn(self._owner_appeared(new_owner))
        elif self.fallback == "bluez" and self._fallback is None:
            self._tasks.spawn(self._start_fallback())

    async def _owner_appeared(self, owner: str) -> None:
        async with self._owner_lock:
            if self._latest_owner != owner or self._owner == owner or self._bus is None:
                return
            await self._adopt(owner)

    async def _adopt(self, owner: str) -> None:
        """Check the new owner, then move every subscription over to it."""
        try:
            uid = await self._unix_user(owner)
        except ScannerError as exc:
            _LOGGER.warning("cannot check the owner of %s: %s", SCANNER_SERVICE, exc)
            return
        if uid not in self.trusted_uids:
            error = self._error = UntrustedServiceError(owner, uid)
            _LOGGER.error("%s", error)
            self._changed.set()
            self._subscriptions.untrusted(error)
            return
        self._error = None
        self._owner = owner
        if self._fallback is not None:
            self._fallback = None  # its signals are ignored from now on
            self._tasks.spawn(self._stop_fallback_rules())
        _LOGGER.debug("%s is %s (uid %d)", SCANNER_SERVICE, owner, uid)
        for subscription in list(self._subscriptions):
            try:
                await self._subscribe_remote(subscription)
            except ScannerError as exc:
                _LOGGER.warning("re-subscribing failed (%s); retrying", exc)
                self._tasks.spawn(self._resubscribe_later(subscription, owner))
        self._changed.set()

    async def _resubscribe_later(self, subscription: Subscription, owner: str) -> None:
        """Retry a failed re-subscription while the same service runs (it may be busy starting)."""
        delay = RESUBSCRIBE_BACKOFF_INITIAL
        while subscription.active and self._owner == owner and subscription.path is None:
            await asyncio.sleep(delay)
            if not (subscription.active and self._owner == owner):
                return
            try:
                await self._subscribe_remote(subscription)
            except ScannerError as exc:
                _LOGGER.warning("re-subscribing failed again: %s", exc)
                delay = min(delay * RESUBSCRIBE_BACKOFF_FACTOR, RESUBSCRIBE_BACKOFF_MAX)

    async def _start_fallback(self) -> None:
        from .fallback import BluezListener  # only clients that ask for it pay for it

        bus = self._bus
        if bus is None or self._fallback is not None or self._owner is not None:
            return
        listener = BluezListener(bus, self._from_bluez, self.timeout)
        self._fallback = listener
        self._subscriptions.begin_resync()
        try:
            with client_terms():
                await listener.start()
        except ScannerError as exc:
            _LOGGER.warning("BlueZ fallback: %s", exc)
        self._subscriptions.end_resync(self.lost_timeout)
        _LOGGER.info("%s is not running: listening to BlueZ directly", SCANNER_SERVICE)
        self._changed.set()

    async def _stop_fallback_rules(self) -> None:
        from .fallback import remove_rules

        if self._bus is not None:
            await remove_rules(self._bus, self.timeout)

    # --- the bus itself going away -------------------------------------------------

    async def _watch_bus(self, bus: MessageBus) -> None:
        reason = await connection_lost(bus)
        if self._bus is bus:  # not our own close()
            self._lost(bus, reason)

    def _lost(self, bus: MessageBus, reason: str) -> BusLostError:
        """Note the loss once: streams, waiters and ``on_bus_lost`` hear of it."""
        if self._bus_lost is not None:
            return self._bus_lost
        error = self._bus_lost = BusLostError(f"lost the system bus: {reason}")
        _LOGGER.info("%s", error)  # the user hears of it from the error, not the log
        self._error = error
        self._owner = None
        self._fallback = None
        self._tasks.cancel()
        self._subscriptions.bus_lost(error)
        self._changed.set()
        if self.on_bus_lost is not None:
            try:
                self.on_bus_lost(error)
            except Exception:
                _LOGGER.exception("on_bus_lost callback failed")
        return error

    # --- calls ---------------------------------------------------------------------

    async def _need_service(self) -> None:
        if self._owner is None:
            await self.wait_for_service(self.service_timeout)

    def _connected_bus(self) -> MessageBus:
        bus = self._bus
        if self._bus_lost is not None:
            raise self._bus_lost
        if bus is None or not bus.connected:
            raise BusUnreachableError("not connected to the system bus")
        return bus

    @contextlib.contextmanager
    def _call_terms(self, bus: MessageBus) -> Iterator[None]:
        """The client's errors; a call that ended with the connection is BusLostError."""
        try:
            with client_terms():
                yield
        except BusUnreachableError as exc:
            if self._bus is bus and not bus.connected:  # the watch may not have run yet
                raise self._lost(bus, disconnect_reason(exc.__cause__)) from exc
            raise

    async def _call(
        self,
        destination: str,
        path: str,
        interface: str,
        member: str,
        signature: str,
        body: list[Any],
    ) -> Message:
        """The reply (its sender matters to Subscribe), or one of the client's errors."""
        bus = self._connected_bus()
        with self._call_terms(bus):
            message = method_call(destination, path, interface, member, signature, body)
            reply = await call_reply(bus, message, timeout=self.timeout)
            return raise_for_error(reply, member)

    async def _call_service(self, member: str, signature: str, body: list[Any]) -> Message:
        return await self._call(
            SCANNER_SERVICE, SCANNER_PATH, SCANNER_INTERFACE, member, signature, body
        )

    async def _unix_user(self, owner: str) -> int:
        bus = self._connected_bus()
        with self._call_terms(bus):
            (uid,) = await call_bus(
                bus, "GetConnectionUnixUser", "s", [owner], timeout=self.timeout
            )
        return int(uid)
