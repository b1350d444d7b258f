"""One connection's outgoing side, fixed: a full socket waits, an overload sheds news.

dbus-fast's asyncio ``_MessageWriter`` (2.x to 5.x) catches ``BlockingIOError``
from ``sock.send`` with every other exception and closes the bus
(python-dbus-next#153; ``write_callback`` in dbus_fast/aio/message_bus.py): a
burst that fills the kernel's socket buffer kills the connection.
``harden_writer`` replaces the writer's callback on one connection so that
EAGAIN means "wait until writable", as it should.

``guard_writer`` adds a budget: once more than ``max_backlog`` bytes wait for
the socket (the daemon is not keeping up), DeviceDiscovered signals are shed
instead of queued, so the service's memory stays bounded; the broadcast's
(no destination) already past ``BROADCAST_BACKLOG_SHARE`` of the budget, so
that subscribers, who asked for their devices, are shed last (docs/behaviour.md
"Under load"). Method replies, errors and every other message are always queued: they
are bounded by what clients ask. A shed DeviceDiscovered is news a later report
repeats; the count is kept. A batched subscription's DevicesDiscovered is never
shed here: bus/batches.py holds it back while the queue is over the budget
(``on_drain`` says when to try again) and bounds what it holds itself.

Both reach into dbus-fast's private writer (``bus._writer``: ``messages``,
``buf``, ``offset``, ``fut``, ``sock``, ``loop``, ``fd``), whose layout is the
same in 2.21.1 and 5.x; they change nothing and return None/False otherwise.
"""

from __future__ import annotations

import logging
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from dbus_fast.aio import MessageBus

from .marshal import (
    ALIGN_STRUCT,
    ALIGN_U32,
    FIELD_DESTINATION,
    FIELD_MEMBER,
    FIELD_PATH,
    FIELDS_START,
    LITTLE_ENDIAN,
    MESSAGE_SIGNAL,
)

_LOGGER = logging.getLogger(__name__)

# Bytes waiting for the socket above which DeviceDiscovered is shed. A signal is
# ~250 bytes, so this is ~16 000 signals: over a second of what the daemon takes
# from us at full rate on the dev VM (tests/bench), and 4 MB of a GX's memory.
MAX_WRITE_BACKLOG: Final = 4 * 1024 * 1024
# Members shed under overload: news that the next report of the device repeats.
SHED_MEMBERS: Final = frozenset({b"DeviceDiscovered"})
# Share of the budget past which the broadcast's DeviceDiscovered is shed: half
# leaves the other half (~8 000 signals) for subscribers before theirs go too.
BROADCAST_BACKLOG_SHARE: Final = 0.5
# At most one "shedding" log line per this many seconds.
SHED_LOG_INTERVAL: Final = 60.0
# Paths whose shed signals are counted (``WriterGuard.shed_by_path``): the service's
# subscriptions (MAX_SUBSCRIPTIONS_TOTAL, 256) with room for ones that ended while
# their signals were still queued; past this the counts start over.
MAX_SHED_PATHS: Final = 1024

_WRITER_LAYOUT: Final = ("messages", "sock", "loop", "fd", "buf", "offset", "fut", "bus")
# Reading a message's header: four 1-byte fields (endianness, type, flags,
# version) come before the lengths; a signature is a length byte, its
# characters and a NUL; a string ends in a NUL its length does not count.
_FIXED_BYTES: Final = 4
_SIGNATURE_OVERHEAD: Final = 2
_NUL: Final = 1


def _writer_of(bus: MessageBus) -> Any:
    writer = getattr(bus, "_writer", None)
    if writer is None or not all(hasattr(writer, name) for name in _WRITER_LAYOUT):
        return None
    return writer


def harden_writer(bus: MessageBus) -> bool:
    """Make this connection's writer wait on EAGAIN instead of closing the bus.

    The writer is changed on this one instance only; returns False (and changes
    nothing) if dbus-fast's private layout is not the expected one.
    """
    writer = _writer_of(bus)
    if writer is None:
        return False

    def write_callback(remove_writer: bool = True) -> None:
        sock = writer.sock
        try:
            while True:
                if writer.buf is None:
                    if not writer.messages:
                        if remove_writer:
                            writer.loop.remove_writer(writer.fd)
                        return
                    buf, _fds, fut = writer.messages.popleft()
                    writer.buf = memoryview(buf)
                    writer.offset = 0
                    writer.fut = fut
                try:
                    writer.offset += sock.send(writer.buf[writer.offset :])
                except BlockingIOError:
                    writer.loop.add_writer(writer.fd, write_callback)
                    return
                if writer.offset < len(writer.buf):
                    writer.loop.add_writer(writer.fd, write_callback)
                    return
                writer.buf = None
                fut = writer.fut
                if fut is not None and not fut.done():
                    fut.set_result(None)
        except Exception as exc:
            fut = writer.fut
            if fut is not None and not fut.done():
                if writer.bus._user_disconnect:
                    fut.set_result(None)
                else:
                    fut.set_exception(exc)
            writer.bus._finalize(exc)

    writer.write_callback = write_callback
    writer._write_without_remove_writer = lambda: write_callback(False)
    return True


def writer_backlog(bus: MessageBus) -> int:
    """Messages queued in dbus-fast's writer, not yet on the socket."""
    writer = getattr(bus, "_writer", None)
    messages = getattr(writer, "messages", None)
    return len(messages) if messages is not None else 0


@dataclass
class WriterGuard:
    """What the guard did on one connection; ``backlog_bytes`` is live."""

    max_backlog: int
    shed: int = 0
    peak_backlog: int = 0
    # Unicast DeviceDiscovered shed, per path they were sent from (a subscription's):
    # GetStatus SubscriptionsShed. The service forgets a path when its subscription ends.
    shed_by_path: dict[str, int] = field(default_factory=dict, repr=False)
    # Called once, from the writer, when the backlog falls to the broadcast's share
    # of the budget (bus/batches.py waits on it to send what it held); then None.
    on_drain: Callable[[], None] | None = field(default=None, repr=False)
    _queue: _BudgetQueue | None = field(default=None, repr=False)
    _logged_at: float = field(default=-SHED_LOG_INTERVAL, repr=False)

    @property
    def backlog_bytes(self) -> int:
        return self._queue.nbytes if self._queue is not None else 0

    def _note_shed(self, count: int) -> None:
        self.shed += count
        now = time.monotonic()
        if now - self._logged_at >= SHED_LOG_INTERVAL:
            self._logged_at = now
            _LOGGER.warning(
                "the bus is not keeping up (%d bytes queued): shedding DeviceDiscovered "
                "signals (%d so far)",
                self.backlog_bytes,
                self.shed,
            )


class _BudgetQueue(deque[tuple[Any, Any, Any]]):
    """dbus-fast's writer queue with a byte count, shedding news over the budget."""

    def __init__(self, items: Iterable[tuple[Any, Any, Any]], guard: WriterGuard) -> None:
        super().__init__(items)
        self.guard = guard
        self.nbytes = sum(len(item[0]) for item in self)

    def append(self, item: tuple[Any, Any, Any]) -> None:
        guard = self.guard
        buf, fds, fut = item
        if self.nbytes + len(buf) > guard.max_backlog * BROADCAST_BACKLOG_SHARE and fds is None:
            item = self._shed(item)
            buf, _fds, fut = item
            if not buf and fut is None:
                return
        self.nbytes += len(buf)
        if self.nbytes > guard.peak_backlog:
            guard.peak_backlog = self.nbytes
        super().append(item)

    def popleft(self) -> tuple[Any, Any, Any]:
        item = super().popleft()
        self.nbytes -= len(item[0])
        guard = self.guard
        if (
            guard.on_drain is not None
            and self.nbytes <= guard.max_backlog * BROADCAST_BACKLOG_SHARE
        ):
            on_drain, guard.on_drain = guard.on_drain, None
            on_drain()
        return item

    def clear(self) -> None:
        super().clear()
        self.nbytes = 0

    def _shed(self, item: tuple[Any, Any, Any]) -> tuple[Any, Any, Any]:
        """Drop, message by message, the DeviceDiscovered that would take the queue past
        its limit: all of the budget for unicast ones, its broadcast share for the rest.

        One buffer may hold a whole loop iteration's signals (bus/outbox.py), so the
        limits are applied to each message, not to the buffer as a whole.
        """
        buf, fds, fut = item
        full = self.guard.max_backlog
        share = full * BROADCAST_BACKLOG_SHARE
        queued = self.nbytes
        kept: list[bytes] = []
        dropped = 0
        data = bytes(buf)
        by_path = self.guard.shed_by_path
        for start, end, sheddable, unicast in split_messages(data):
            size = end - start
            if sheddable and queued + size > (full if unicast else share):
                dropped += 1
                path = message_path(data, start) if unicast else None
                if path is not None:
                    if path not in by_path and len(by_path) >= MAX_SHED_PATHS:
                        by_path.clear()
                    by_path[path] = by_path.get(path, 0) + 1
            else:
                kept.append(data[start:end])
                queued += size
        if dropped:
            self.guard._note_shed(dropped)
            buf = b"".join(kept)
        # An emptied buffer with a future is still queued: the future resolves when reached.
        return (buf, fds, fut)


def split_messages(
    data: bytes, shed_members: frozenset[bytes] = SHED_MEMBERS
) -> Iterable[tuple[int, int, bool, bool]]:
    """(start, end, sheddable, unicast) of each marshalled D-Bus message in ``data``,
    back to back; unicast: it has a destination (a subscription's signal, a reply)."""
    offset, size = 0, len(data)
    while offset < size:
        endianness, message_type, _flags, _version = data[offset : offset + _FIXED_BYTES]
        fmt = "<" if endianness == LITTLE_ENDIAN else ">"
        body_length, _serial, fields_length = struct.unpack_from(
            fmt + "III", data, offset + _FIXED_BYTES
        )
        header_end = offset + FIELDS_START + fields_length
        header_end += -(header_end - offset) % ALIGN_STRUCT
        end = header_end + body_length
        member, unicast, _path = _header(data, offset, fields_length, fmt)
        sheddable = message_type == MESSAGE_SIGNAL and member in shed_members
        yield offset, end, sheddable, unicast
        offset = end


def message_path(data: bytes, start: int) -> str | None:
    """The PATH header field of the message at ``start`` in ``data``; None if it has none."""
    fmt = "<" if data[start] == LITTLE_ENDIAN else ">"
    _body, _serial, fields_length = struct.unpack_from(fmt + "III", data, start + _FIXED_BYTES)
    path = _header(data, start, fields_length, fmt)[2]
    return path.decode() if path is not None else None


def _header(
    data: bytes, start: int, fields_length: int, fmt: str
) -> tuple[bytes | None, bool, bytes | None]:
    """The MEMBER header field of the message at ``start`` (None: none, or a header
    this cannot read, never shed), whether it has a DESTINATION, and its PATH."""
    u32 = struct.Struct(fmt + "I")
    pos = start + FIELDS_START
    stop = pos + fields_length
    member: bytes | None = None
    path: bytes | None = None
    destination = False
    while pos < stop:
        # A field is a struct: its code (a byte), then a variant: signature, value.
        pos += -(pos - start) % ALIGN_STRUCT
        code = data[pos]
        pos += 1
        sig_length = data[pos]
        signature = data[pos + 1 : pos + 1 + sig_length]
        pos += sig_length + _SIGNATURE_OVERHEAD
        if signature in (b"s", b"o"):
            pos += -(pos - start) % ALIGN_U32
            (length,) = u32.unpack_from(data, pos)
            pos += u32.size
            if code == FIELD_MEMBER:
                member = data[pos : pos + length]
            elif code == FIELD_DESTINATION:
                destination = True
            elif code == FIELD_PATH:
                path = data[pos : pos + length]
            pos += length + _NUL
        elif signature == b"g":
            pos += data[pos] + _SIGNATURE_OVERHEAD
        elif signature == b"u":
            pos += -(pos - start) % ALIGN_U32 + u32.size
        else:
            return None, True, None
    return member, destination, path


def guard_writer(bus: MessageBus, max_backlog: int = MAX_WRITE_BACKLOG) -> WriterGuard | None:
    """Harden this connection's writer and give its queue a budget; None if dbus-fast differs."""
    writer = _writer_of(bus)
    if writer is None or not harden_writer(bus):
        _LOGGER.warning("dbus-fast's writer is not the expected one; running without the guard")
        return None
    guard = WriterGuard(max_backlog)
    guard._queue = _BudgetQueue(writer.messages, guard)
    writer.messages = guard._queue
    return guard
