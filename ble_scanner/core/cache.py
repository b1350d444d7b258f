"""The device cache: one entry per address, lost after its presence time, bounded in size.

Pure logic with an injected clock. Entries are kept in least-recently-heard
order (an OrderedDict moved on every report): eviction looks only at the
front, and expiry stops at the first device heard within ``INTERVAL_SLACK``,
the shortest time after which any device can be lost (presence.py).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from .presence import INTERVAL_SLACK, IntervalLearner, lost_after
from .record import Content


class Device:
    """A cached device: the latest report and what it advertised.

    ``version`` counts content changes, so listeners compare one integer to
    know whether the advertised content is news; ``interest`` caches which
    subscriptions want this content. ``wire`` is a slot for the
    D-Bus adapter's cached encoding of the record (all of it but LastSeen and
    Rssi); it is cleared whenever the content or the identity (address type,
    adapter, path) changes.
    """

    __slots__ = (
        "adapter",
        "address",
        "address_type",
        "content",
        "first_seen",
        "heard",
        "interest",
        "interest_generation",
        "last_seen",
        "learner",
        "path",
        "restored",
        "rssi",
        "version",
        "wire",
    )

    def __init__(self, address: str, first_seen: float, heard: float) -> None:
        self.address = address
        self.address_type = "public"
        self.adapter = ""
        self.path = ""
        self.rssi: int | None = None
        self.content: Content | None = None
        self.first_seen = first_seen  # wall clock, for the record
        self.last_seen = first_seen  # wall clock, for the record
        self.heard = heard  # monotonic, for expiry
        self.version = 0
        self.wire: bytes | None = None
        self.learner = IntervalLearner()
        self.restored = False
        # The subscriptions whose filter matches this content (``Hub``'s
        # cache, valid for one generation of the subscription set).
        self.interest: tuple[Any, ...] | None = None
        self.interest_generation = -1

    @property
    def interval(self) -> float | None:
        """The learned advertising interval in seconds; None until learned."""
        return self.learner.interval

    def __repr__(self) -> str:
        return f"Device({self.address} {self.adapter} rssi={self.rssi} v{self.version})"


class DeviceCache:
    """Devices currently present, keyed by address."""

    def __init__(self, lost_timeout: float, max_size: int) -> None:
        self.lost_timeout = lost_timeout
        self.max_size = max_size
        self._devices: OrderedDict[str, Device] = OrderedDict()

    def __len__(self) -> int:
        return len(self._devices)

    def __iter__(self) -> Iterator[Device]:
        return iter(self._devices.values())

    def __contains__(self, address: object) -> bool:
        return address in self._devices

    def get(self, address: str) -> Device | None:
        return self._devices.get(address)

    def report(
        self,
        address: str,
        address_type: str,
        adapter: str,
        path: str,
        rssi: int | None,
        content: Content,
        wall: float,
        now: float,
    ) -> tuple[Device, bool, bool]:
        """Record one report; returns (device, is_new, content_changed)."""
        devices = self._devices
        device = devices.get(address)
        is_new = device is None
        if device is None:
            device = Device(address, wall, now)
            devices[address] = device
        else:
            devices.move_to_end(address)
            if device.restored:
                # Heard again: no longer restored, and the time since the
                # restored report is no gap (it spans the restart).
                device.restored = False
                device.wire = None
            else:
                device.learner.gap(now - device.heard)
            device.heard = now
            device.last_seen = wall
        if device.path != path or device.address_type != address_type or device.adapter != adapter:
            # Heard by another adapter, or a new address type: the record changes.
            device.address_type = address_type
            device.adapter = adapter
            device.path = path
            device.wire = None
        if rssi is not None:
            device.rssi = rssi
        changed = content is not device.content and content != device.content
        if changed:
            device.content = content
            device.version += 1
            device.wire = None
            device.interest = None
        return device, is_new, changed

    def expire(self, now: float) -> list[Device]:
        """Remove and return devices not heard for their presence time (``lost_after``).

        Looks only at the devices not heard for ``INTERVAL_SLACK`` (or the lost
        timeout, if shorter): in a crowd most were heard in the last seconds.
        """
        lost: list[Device] = []
        devices = self._devices
        limit = now - self.lost_timeout
        lost_timeout = self.lost_timeout
        quiet = now - min(INTERVAL_SLACK, lost_timeout)
        for device in devices.values():
            heard = device.heard
            if heard > quiet:
                break
            if heard <= limit:
                lost.append(device)
                continue
            interval = device.learner.interval
            if interval is not None and now - heard >= lost_after(interval, lost_timeout):
                lost.append(device)
        for device in lost:
            del devices[device.address]
        return lost

    def restore(self, devices: list[Device]) -> list[Device]:
        """Put devices loaded from the state file into the cache, oldest heard first.

        Only into an empty cache (at start): addresses already here are
        skipped. Returns the devices added.
        """
        added = [
            d for d in sorted(devices, key=lambda d: d.heard) if d.address not in self._devices
        ]
        for device in added:
            device.restored = True
            device.wire = None
            self._devices[device.address] = device
        if len(self._devices) > len(added):
            # Reports came first (not at start): keep least-recently-heard order.
            ordered = sorted(self._devices.values(), key=lambda d: d.heard)
            self._devices = OrderedDict((d.address, d) for d in ordered)
        return added

    def evict_overflow(self) -> list[Device]:
        """Remove and return the least recently heard devices beyond ``max_size``."""
        evicted: list[Device] = []
        devices = self._devices
        while len(devices) > self.max_size:
            _, device = devices.popitem(last=False)
            evicted.append(device)
        return evicted

    def remove(self, address: str) -> Device | None:
        return self._devices.pop(address, None)

    def clear(self) -> list[Device]:
        devices = list(self._devices.values())
        self._devices.clear()
        return devices
