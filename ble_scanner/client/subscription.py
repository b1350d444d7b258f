"""What the client hands its user: subscriptions and streams, and which service path each has.

A :class:`Subscription` outlives service restarts and switches of source (its
``DeliveryLedger`` swallows what the user already has); :class:`Subscriptions`
is the client's set of them, routing the service's signals and BlueZ's
events to each. No calls are made here: ``proxy.ScannerClient`` subscribes
and unsubscribes on the service.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Final

from dbus_fast import Message

from ..const import SCANNER_INTERFACE, SUBSCRIPTION_PATH_PREFIX
from .calls import record_of
from .errors import ScannerError
from .merge import RecordMerger
from .records import Advertisement, DeliveryLedger, DeviceLost, Event, ScanFilter

if TYPE_CHECKING:
    from .proxy import ScannerClient

_LOGGER = logging.getLogger(__name__)

# Events held for a stream whose reader is slower than the air; past this the
# oldest go (counted in ``dropped``). A replay of a full 10 000-device cache fits.
STREAM_BUFFER: Final = 10_000


class Subscription:
    """A standing request for advertisements; it outlives service restarts.

    Returned by :meth:`ScannerClient.on_advertisement`; end it with
    :meth:`remove`.
    """

    def __init__(self, client: ScannerClient, flt: ScanFilter, deliver: Callable[[Event], None]):
        self.filter = flt
        self.path: str | None = None  # on the current service; None while it is away
        self.ledger = DeliveryLedger()
        self.merger = RecordMerger()  # the full records behind changed-keys items
        self._client = client
        self._deliver = deliver
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.active = True
        self.on_error: Callable[[ScannerError], None] | None = None

    def _discovered(self, adv: Advertisement) -> None:
        if self._timers:  # only after a change of source
            timer = self._timers.pop(adv.address, None)
            if timer is not None:
                timer.cancel()
        if self.ledger.discovered(adv):
            self._deliver(adv)

    def _lost(self, address: str) -> None:
        timer = self._timers.pop(address, None)
        if timer is not None:
            timer.cancel()
        if self.ledger.lost(address):
            self._deliver(DeviceLost(address))

    def _expire_later(self, adverts: Iterable[Advertisement], lost_timeout: float) -> None:
        """Deliver DeviceLost for each unless it is heard again before its lost time."""
        loop = asyncio.get_running_loop()
        now = time.time()
        for adv in adverts:
            old = self._timers.pop(adv.address, None)
            if old is not None:
                old.cancel()
            delay = adv.last_seen + lost_timeout - now
            if delay <= 0:
                self._expire(adv)
            else:
                self._timers[adv.address] = loop.call_later(delay, self._expire, adv)

    def _expire(self, adv: Advertisement) -> None:
        self._timers.pop(adv.address, None)
        if self.active and self.ledger.expire(adv):
            self._deliver(DeviceLost(adv.address))

    def _cancel_timers(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    async def remove(self) -> None:
        """End the subscription; nothing more is delivered after this returns."""
        await self._client._remove(self)


class AdvertisementStream:
    """``async for event in client.subscribe(...)``: Advertisement and DeviceLost events.

    Subscribes on first use (or on ``async with``) and unsubscribes on
    ``aclose()``/leaving the ``async with``. Raises UntrustedServiceError if
    the service is taken over by an untrusted process.
    """

    def __init__(self, client: ScannerClient, flt: ScanFilter) -> None:
        self._client = client
        self._filter = flt
        self._queue: deque[Event] = deque()
        self._ready = asyncio.Event()
        self._subscription: Subscription | None = None
        self._closed = False
        self.dropped = 0

    def _put(self, event: Event) -> None:
        if len(self._queue) >= STREAM_BUFFER:
            self._queue.popleft()
            self.dropped += 1
            if self.dropped == 1:
                _LOGGER.warning("stream reader too slow: dropping the oldest events")
        self._queue.append(event)
        self._ready.set()

    async def start(self) -> AdvertisementStream:
        if self._subscription is None and not self._closed:
            self._subscription = await self._client._add(self._filter, self._put)
            self._subscription.on_error = lambda error: self._ready.set()
        return self

    async def aclose(self) -> None:
        self._closed = True
        self._ready.set()
        if self._subscription is not None:
            await self._subscription.remove()

    async def __aenter__(self) -> AdvertisementStream:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        await self.start()
        while not self._queue:
            if self._closed:
                raise StopAsyncIteration
            error = self._client._error
            if error is not None:
                raise error
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()


class Subscriptions:
    """The client's subscriptions, in order, and the service path each has now."""

    def __init__(self) -> None:
        self._all: list[Subscription] = []
        self._by_path: dict[str, Subscription] = {}
        # Signals to a path not yet known: a Subscribe reply still in flight.
        self._subscribing = 0
        self._unclaimed: dict[str, list[Message]] = {}

    def __iter__(self) -> Iterator[Subscription]:
        return iter(self._all)

    def __contains__(self, subscription: object) -> bool:
        return subscription in self._all

    def add(self, subscription: Subscription) -> None:
        self._all.append(subscription)

    def discard(self, subscription: Subscription) -> str | None:
        """Stop delivering to ``subscription``; the service path it had, to unsubscribe."""
        subscription.active = False
        subscription._cancel_timers()
        if subscription in self._all:
            self._all.remove(subscription)
        path, subscription.path = subscription.path, None
        if path is not None:
            self._by_path.pop(path, None)
        return path

    def close(self) -> None:
        for subscription in self._all:
            subscription.active = False
            subscription._cancel_timers()
        self._all.clear()
        self._by_path.clear()

    # --- on the service ------------------------------------------------------------

    def subscribing(self) -> None:
        """A Subscribe call starts: hold signals to paths not known yet."""
        self._subscribing += 1

    def subscribed(self, subscription: Subscription, path: str) -> None:
        """The service gave ``subscription`` its ``path``: deliver what came before the reply."""
        subscription.path = path
        subscription.merger.clear()  # a new subscription: every device's first item is full
        self._by_path[path] = subscription
        for msg in self._unclaimed.pop(path, ()):
            dispatch(subscription, msg)

    def subscribe_done(self) -> None:
        self._subscribing -= 1
        if not self._subscribing:
            self._unclaimed.clear()

    def on_service_signal(self, msg: Message) -> None:
        """A signal from the (checked) service."""
        if msg.interface != SCANNER_INTERFACE:
            return
        path = msg.path or ""
        subscription = self._by_path.get(path)
        if subscription is not None:
            dispatch(subscription, msg)
        elif self._subscribing and path.startswith(SUBSCRIPTION_PATH_PREFIX):
            self._unclaimed.setdefault(path, []).append(msg)

    def source_lost(self, lost_timeout: float) -> None:
        """The service left: no paths; what the user knows is lost unless heard again in time."""
        self._by_path.clear()
        for subscription in self._all:
            subscription.path = None
            subscription._expire_later(subscription.ledger.source_lost(), lost_timeout)

    def untrusted(self, error: ScannerError) -> None:
        """The name's new owner is not trusted: each stream raises ``error``."""
        for subscription in self._all:
            if subscription.on_error is not None:
                subscription.on_error(error)

    def bus_lost(self, error: ScannerError) -> None:
        """The bus is gone: nothing is pending any more, and each stream raises ``error``."""
        self._by_path.clear()
        for subscription in self._all:
            subscription.path = None
            subscription._cancel_timers()
            if subscription.on_error is not None:
                subscription.on_error(error)

    # --- from BlueZ ----------------------------------------------------------------

    def begin_resync(self) -> None:
        for subscription in self._all:
            subscription.ledger.begin_resync()

    def end_resync(self, lost_timeout: float) -> None:
        for subscription in self._all:
            subscription._expire_later(subscription.ledger.end_resync(), lost_timeout)

    def from_bluez(self, event: Event) -> None:
        """An event from the BlueZ fallback, filtered here as the service would."""
        for subscription in list(self._all):
            if isinstance(event, DeviceLost):
                subscription._lost(event.address)
            elif subscription.filter.matches(event):
                subscription._discovered(event)


def dispatch(subscription: Subscription, msg: Message) -> None:
    """A Scanner1 signal to ``subscription``'s path, delivered."""
    member, signature = msg.member, msg.signature
    if member == "DevicesDiscovered" and signature == "a(sa{sv})":
        merger, discovered = subscription.merger, subscription._discovered
        for address, raw in msg.body[0]:
            try:
                adv = merger.item(address, {key: v.value for key, v in raw.items()})
            except ValueError as exc:
                _LOGGER.warning("ignoring a malformed item from the service: %s", exc)
                continue
            discovered(adv)
    elif member == "DeviceDiscovered" and signature == "sa{sv}":
        try:
            adv = record_of(msg.body[1])
        except ValueError as exc:
            _LOGGER.warning("ignoring a malformed record from the service: %s", exc)
            return
        subscription._discovered(adv)
    elif member == "DeviceLost" and signature == "s":
        subscription.merger.lost(msg.body[0])
        subscription._lost(msg.body[0])
