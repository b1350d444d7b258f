"""When a listener is told about a device (SPEC §4.1 "When DeviceDiscovered is sent").

Pure logic. A listener is the broadcast or one subscription; it remembers,
per address, what it was last told, and answers "is this report news to me?".
"""

from __future__ import annotations

from .cache import Device
from .filters import Filter


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
