"""When a listener is told about a device (docs/dbus-api.md "When DeviceDiscovered is sent").

Pure logic. A listener is the broadcast or one subscription; it remembers,
per address, what it was last told, and answers "is this report news to me?".
The broadcast (``Broadcast``) also tells each device at most once per interval
(docs/dbus-api.md, Scanner1): a subscription is how a program gets every change.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

from .cache import Device
from .filters import EVERYTHING, Filter


class Listener:
    """Per-listener emission state: filter, rules, and what was last sent per address."""

    __slots__ = ("all_reports", "filter", "keep_alive", "match_all", "rssi_delta", "sent")

    def __init__(
        self, flt: Filter, rssi_delta: int, keep_alive: float, all_reports: bool = False
    ) -> None:
        self.filter = flt
        self.match_all = flt.is_everything
        self.rssi_delta = rssi_delta
        self.keep_alive = keep_alive
        self.all_reports = all_reports
        # address -> (content version, rssi, monotonic time) of the last emission
        self.sent: dict[str, tuple[int, int | None, float]] = {}

    def wants(self, device: Device) -> bool:
        return self.match_all or self.filter.matches(device)

    def consider(self, device: Device, now: float) -> bool:
        """True if this report of ``device`` must be sent to this listener (and note it)."""
        if not (self.match_all or self.filter.matches(device)):
            return False
        return self._news(device, now)

    def consider_matching(self, device: Device, now: float) -> bool:
        """``consider`` for a device whose content is known to match (see ``Hub``)."""
        if not self.filter.rssi_ok(device):
            return False
        return self._news(device, now)

    def _news(self, device: Device, now: float) -> bool:
        previous = self.sent.get(device.address)
        if not (
            previous is None
            or self.all_reports
            or previous[0] != device.version
            or self._rssi_moved(previous[1], device.rssi)
            or (self.keep_alive > 0 and now - previous[2] >= self.keep_alive)
        ):
            return False
        self.sent[device.address] = (device.version, device.rssi, now)
        return True

    def _rssi_moved(self, before: int | None, now: int | None) -> bool:
        if now is None or now == before:
            return False
        return before is None or abs(now - before) >= self.rssi_delta

    def mark_sent(self, device: Device, now: float) -> None:
        """Note a replayed device as sent, so the next report is judged against it."""
        self.sent[device.address] = (device.version, device.rssi, now)

    def forget(self, address: str) -> bool:
        """The device is lost; True if this listener had been told about it."""
        return self.sent.pop(address, None) is not None


class Broadcast(Listener):
    """The broadcast's listener: each device at most once per ``interval`` seconds.

    News is judged by the rules every listener has (new content, RSSI moved by
    the delta, keep-alive due). News within ``interval`` of the device's last
    broadcast is held, and ``due`` hands the device back when the interval
    ends; ``release`` then judges its latest state against what was last sent,
    so a change is never lost and a reading is never older than the interval
    (plus the tick that calls ``due``), while a held RSSI move that has gone back
    within the delta sends nothing. A device is held once however often it
    changes meanwhile. The first sighting is never held; ``forget`` (the device
    is lost) drops a held change. A keep-alive shorter than the interval is in
    effect the interval. ``interval`` 0 holds nothing.
    """

    __slots__ = ("_deadlines", "held", "interval", "wake")

    def __init__(
        self,
        rssi_delta: int,
        keep_alive: float,
        interval: float,
        wake: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(EVERYTHING, rssi_delta, keep_alive)
        self.interval = interval
        # address -> monotonic time its held news is due; the heap orders the same
        # pairs (entries whose address is no longer held at that time are stale).
        self.held: dict[str, float] = {}
        self._deadlines: list[tuple[float, str]] = []
        # Called when a hold makes a new earliest deadline: the I/O side's timer
        # sleeps until ``next_due`` and must then wake sooner (timer.py).
        self.wake = wake

    def consider(self, device: Device, now: float) -> bool:
        address = device.address
        if address in self.held:
            return False  # its latest state goes out when due
        previous = self.sent.get(address)
        if not self._news(device, now):
            return False
        if previous is not None and now - previous[2] < self.interval:
            self.sent[address] = previous  # not sent: held until the interval ends
            self._hold(address, previous[2] + self.interval)
            return False
        return True

    def _hold(self, address: str, due: float) -> None:
        self.held[address] = due
        deadlines = self._deadlines
        heapq.heappush(deadlines, (due, address))
        if deadlines[0][1] == address and deadlines[0][0] == due and self.wake is not None:
            self.wake()

    def due(self, now: float) -> list[str]:
        """The held addresses whose interval has ended by ``now``; they are held no more."""
        deadlines, held = self._deadlines, self.held
        ready: list[str] = []
        while deadlines and deadlines[0][0] <= now:
            due, address = heapq.heappop(deadlines)
            if held.get(address) == due:
                del held[address]
                ready.append(address)
        return ready

    def release(self, device: Device, now: float) -> bool:
        """True if the latest state of a device ``due`` returned is still news (and note it)."""
        return self._news(device, now)

    def next_due(self) -> float | None:
        """When the earliest held device is due; None if none is held."""
        deadlines, held = self._deadlines, self.held
        while deadlines and held.get(deadlines[0][1]) != deadlines[0][0]:
            heapq.heappop(deadlines)  # stale: released, forgotten or re-timed
        return deadlines[0][0] if deadlines else None

    def set_interval(self, interval: float) -> None:
        """A new interval, live: each held device is due at its last broadcast plus the new one."""
        self.interval = interval
        self.held = {address: self.sent[address][2] + interval for address in self.held}
        self._deadlines = [(due, address) for address, due in self.held.items()]
        heapq.heapify(self._deadlines)
        if self.held and self.wake is not None:
            self.wake()

    def forget(self, address: str) -> bool:
        self.held.pop(address, None)
        return super().forget(address)
