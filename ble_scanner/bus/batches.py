"""Batched subscriptions' DevicesDiscovered: one signal per wake-up or window, held under
back-pressure instead of shed (docs/dbus-api.md "Batched subscriptions").

A subscription with ``Batch`` gathers its items (``core/subscriptions.py``
``Batch``) while one wake-up of the service handles its reports (the
management channel reads up to 256 datagrams a wake-up, bluez/mgmtchannel.py;
dbus-fast reads every message buffered on its socket in one go), and each
gathered batch goes out as one signal when the event loop turns: the outbox's
end-of-iteration flush (bus/outbox.py, scheduled with ``call_soon``) sends it,
in the same write as the wake-up's other signals, so a lone report goes out
one loop turn later, with no timer. With ``BatchWindow`` the first item
starts a timer instead and the batch goes when it fires.

Back-pressure: when our connection's write queue is over its budget
(bus/writer.py), a batch is not handed to it; it is held, keeps gathering, and
is sent when the writer has drained to the broadcast's share of the budget
(``WriterGuard.on_drain``). A held batch grows up to ``HOLD_SHARE`` of the
write budget, and all held batches together up to ``HOLD_TOTAL_SHARE``; an
item past either is shed and counted on its subscription (``Batch.shed``),
and for ChangedKeysOnly the device's next item is its full record, so the
client's merged record never misses a change silently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

from ..core.subscriptions import Batch, Subscription
from .marshal import MESSAGE_SIGNAL, snapshot_body
from .outbox import Outbox
from .writer import WriterGuard

MEMBER: Final = "DevicesDiscovered"
# Items per signal: a batch gathered over a window, held under back-pressure or
# replayed is split into signals of at most this many (~256 KiB of full records
# of ~250 bytes): a client's read and unmarshal stay short, far below the bus
# daemon's largest message (32 MiB, dbus bus/config-parser.c). A window's batch
# that reaches it is sent at the end of the wake-up without waiting.
MAX_ITEMS_PER_SIGNAL: Final = 1024
# How far held batches may grow, as shares of the write budget (``WriterGuard.
# max_backlog``, 4 MiB: over a second of what the bus daemon takes from us at
# full rate, bus/writer.py). One subscription's batch may hold as much again as
# the queue (~16 000 full records, ~40 000 changed-keys items: seconds of a busy
# site's reports while the daemon is behind), and all held batches together
# the same, so that back-pressure at most doubles the memory the writer may
# take, however many subscribers there are (items shared between
# subscriptions are counted for each, so this counts high).
HOLD_SHARE: Final = 1.0
HOLD_TOTAL_SHARE: Final = 1.0


class Batches:
    """The pending DevicesDiscovered of every batched subscription on one connection."""

    def __init__(
        self,
        outbox: Outbox,
        fields: Callable[[str, str, str | None], bytes],
        guard: WriterGuard | None,
    ) -> None:
        """``fields``: a signal's header fields by (path, member, destination), cached by
        the caller; ``guard``: our connection's write budget (None: never held)."""
        self.outbox = outbox
        self._fields = fields
        self.guard = guard
        self._due: dict[Subscription, None] = {}  # to send at the end of this wake-up
        # The outbox's end-of-iteration flush sends them, in its one write.
        outbox.before_flush = self._send_due
        self._windows: dict[Subscription, asyncio.TimerHandle] = {}
        self._held: dict[Subscription, None] = {}  # waiting for the writer to drain
        self.held_bytes = 0
        self.peak_held_bytes = 0  # the most ever held at once (tests, the bench)
        self.shed = 0  # items shed, over every subscription there ever was
        self._loop: asyncio.AbstractEventLoop | None = None

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def add(self, subscription: Subscription, batch: Batch, address: str, item: bytes) -> None:
        """One item for ``subscription`` (whose ``batch`` it is), about ``address``."""
        if subscription in self._held:
            size = len(item)
            budget = self.guard.max_backlog if self.guard is not None else 0
            if (
                batch.nbytes + size > budget * HOLD_SHARE
                or self.held_bytes + size > budget * HOLD_TOTAL_SHARE
            ):
                batch.shed += 1
                self.shed += 1
                batch.forget(address)
                return
            batch.add(item)
            self.held_bytes += size
            if self.held_bytes > self.peak_held_bytes:
                self.peak_held_bytes = self.held_bytes
            return
        batch.add(item)
        if batch.window > 0 and len(batch.items) < MAX_ITEMS_PER_SIGNAL:
            if subscription not in self._windows:
                self._windows[subscription] = self._event_loop().call_later(
                    batch.window, self._window_ends, subscription
                )
            return
        self._due[subscription] = None
        self.outbox.schedule()

    def _send_due(self) -> None:
        """Send every batch this wake-up gathered (the outbox's flush: the end of the wake-up)."""
        if self._due:
            due, self._due = self._due, {}
            for subscription in due:
                self._send(subscription)

    def send_now(self, subscription: Subscription) -> None:
        """Send what ``subscription`` gathered, held or not, before something that must
        follow it (its DeviceLost, the reply to its Unsubscribe)."""
        self._due.pop(subscription, None)
        self._send(subscription, force=True)

    def ended(self, subscription: Subscription, send: bool) -> None:
        """The subscription ended: send what it gathered (Unsubscribe) or drop it (its
        owner left the bus)."""
        if send:
            self.send_now(subscription)
            self.outbox.flush()
        self._due.pop(subscription, None)
        timer = self._windows.pop(subscription, None)
        if timer is not None:
            timer.cancel()
        if subscription in self._held:
            del self._held[subscription]
            assert subscription.batch is not None
            self.held_bytes -= subscription.batch.nbytes

    def _window_ends(self, subscription: Subscription) -> None:
        self._windows.pop(subscription, None)
        self._send(subscription)
        self.outbox.flush()

    def _send(self, subscription: Subscription, force: bool = False) -> None:
        """The batch as DevicesDiscovered signals, unless the writer is over budget (then
        it is held; ``force``: sent anyway)."""
        batch = subscription.batch
        assert batch is not None
        timer = self._windows.pop(subscription, None)
        if timer is not None:
            timer.cancel()
        if not batch.items:
            return
        held = subscription in self._held
        guard = self.guard
        if not force and guard is not None:
            backlog = guard.backlog_bytes
            # An empty queue takes any batch: a held one may be as large as the budget.
            if backlog and backlog + batch.nbytes > guard.max_backlog:
                if not held:
                    self._held[subscription] = None
                    self.held_bytes += batch.nbytes
                    self.peak_held_bytes = max(self.peak_held_bytes, self.held_bytes)
                guard.on_drain = self._drained
                return
        if held:
            del self._held[subscription]
            self.held_bytes -= batch.nbytes
        items = batch.take()
        fields = self._fields(subscription.path, MEMBER, subscription.owner)
        send = self.outbox.send
        for start in range(0, len(items), MAX_ITEMS_PER_SIGNAL):
            send(MESSAGE_SIGNAL, fields, snapshot_body(items[start : start + MAX_ITEMS_PER_SIGNAL]))

    def _drained(self) -> None:
        """From inside the writer: the backlog fell; send what was held once the loop turns."""
        self._event_loop().call_soon(self._release)

    def _release(self) -> None:
        for subscription in list(self._held):
            self._send(subscription)
        self.outbox.flush()
