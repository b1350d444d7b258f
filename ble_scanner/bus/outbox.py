"""Messages we marshal ourselves, written to the bus socket once per loop iteration.

dbus-fast reads every message buffered on its socket in one go, so a burst of
BlueZ reports becomes a burst of our signals within one loop iteration.
``bus.send`` would marshal each, make a Future for each and write each with a
``send()`` of its own; the outbox takes ``marshal`` bytes, joins what one
iteration produced and hands it to dbus-fast's writer as one buffer: one
system call instead of one per signal (tests/bench: ~15 µs each on the dev VM).

The bytes go through dbus-fast's own writer queue, so whatever that writer
does about a full socket (and its EAGAIN bug: ``writer.py``) applies unchanged,
and the order with messages sent by ``bus.send`` is kept as long as
``flush()`` runs before them: the service flushes before answering a call.
This reaches into the writer (``_writer``, as the simulator's
``wire.harden_writer`` does); the layout is the same in dbus-fast 2.21 to 5.x.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from dbus_fast.aio import MessageBus

from . import marshal


class Outbox:
    """Collects marshalled messages; ``flush`` runs at the end of the loop iteration."""

    __slots__ = ("_held", "_loop", "_parts", "_scheduled", "before_flush", "bus")

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self._parts: list[bytes] = []
        self._scheduled = False
        # Between ``hold`` and ``release``: the ingest is handing on one wake-up's
        # reports, and ``release`` writes what they made.
        self._held = False
        self._loop: asyncio.AbstractEventLoop | None = None
        # Called at each flush before the write, to send what waits for the end of
        # the wake-up (bus/batches.py): it joins the same write.
        self.before_flush: Callable[[], None] | None = None

    def __len__(self) -> int:
        return len(self._parts)

    def send(self, message_type: int, fields: bytes, body: bytes) -> None:
        """Queue one message (``marshal.header_fields`` + body); it gets the next serial.

        The first message of a loop iteration is written at once, as dbus-fast
        does, so a lone report costs no latency; the rest of a burst waits for
        the end of the iteration and goes out in one write. While held, all of
        them wait for ``release``.
        """
        self._parts.append(marshal.message(message_type, self.bus.next_serial(), fields, body))
        if not self._scheduled:
            self.schedule()
            if not self._held:
                self._write()

    def schedule(self) -> None:
        """Flush at the end of this loop iteration (``before_flush`` has something to send)."""
        if not self._scheduled:
            self._scheduled = True
            if self._held:
                return  # release() flushes
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._loop.call_soon(self.flush)

    def hold(self) -> None:
        """The management channel starts handing on one wake-up's frames: queue
        what they make until ``release``. The end of the wake-up is then known,
        and its messages go out in one write without waiting a loop iteration
        (which, at one report per wake-up, cost a second pass of the loop)."""
        self._held = True

    def release(self) -> None:
        """The wake-up's frames are handed on: write what they made, now."""
        self._held = False
        if self._scheduled:
            self.flush()

    def flush(self) -> None:
        """Hand everything queued to the socket now (it keeps order with later sends)."""
        before = self.before_flush
        if before is not None:
            self._scheduled = True  # what it sends is queued for the write below
            before()
        self._scheduled = False
        self._write()

    def _write(self) -> None:
        parts = self._parts
        if not parts:
            return
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        parts.clear()
        bus = self.bus
        if not bus.connected:
            return
        writer: Any = bus._writer  # private: see the module docstring
        idle = not writer.messages and writer.buf is None
        writer.messages.append((data, None, None))
        if idle:
            # What dbus-fast's schedule_write does: try the socket at once ...
            writer._write_without_remove_writer()
        if writer.buf is not None or writer.messages:
            # ... and let the loop finish what the socket did not take.
            writer.loop.add_writer(writer.fd, writer.write_callback)
