"""The device cache: one entry per address, lost after its presence time, bounded in size.

Pure logic with an injected clock. Entries are kept in order of ``since``,
the time from which a device's silence counts (its last report, or the moment
a source that heard it started listening again: sources.py): eviction looks
only at the front, and expiry stops at the first device whose silence began
within ``INTERVAL_SLACK``, the shortest time after which any device can be
lost (presence.py).

Each device keeps one ``Source`` per adapter that heard it within its lost
time; the record follows one of them (``sources.prefer``), and a report from
another changes the content at once but not the record's adapter, path or RSSI.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from ..const import RSSI_UNAVAILABLE
from .filters import same_verdicts
from .presence import INTERVAL_SLACK, IntervalLearner, lost_after
from .record import Content
from .sources import SMOOTHING, Listening, Source, prefer


class Device:
    """A cached device: the latest report and what it advertised.

    ``version`` counts content changes and changes of source, so listeners
    compare one integer to know whether the record is news; ``interest`` caches which
    subscriptions want this content (kept while filters would say the same:
    ``filters.same_verdicts``). ``content_wire`` and ``identity_wire``
    are slots for the D-Bus adapter's encoding of the record's content and of
    its identity (address type, adapter, path, first seen, restored:
    bus/records.py); each is cleared whenever what it encodes changes.
    ``sources``: each adapter that heard the device
    within its lost time; ``adapter`` names the one the record follows.
    ``since``: when its silence started to count (monotonic): ``heard``, or
    later if its sources were not listening meanwhile.
    """

    __slots__ = (
        "adapter",
        "address",
        "address_type",
        "content",
        "content_wire",
        "first_seen",
        "heard",
        "identity_wire",
        "interest",
        "interest_generation",
        "last_seen",
        "learner",
        "path",
        "restored",
        "rssi",
        "since",
        "sources",
        "version",
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
        self.heard = heard  # monotonic: the latest report from any source
        self.since = heard  # monotonic, for expiry
        self.sources: dict[str, Source] = {}
        self.version = 0
        self.content_wire: bytes | None = None
        self.identity_wire: bytes | None = None
        self.learner = IntervalLearner()
        self.restored = False
        # The subscriptions whose filter matches this content (``Hub``'s
        # cache, valid for one generation of the subscription set).
        self.interest: tuple[Any, ...] | None = None
        self.interest_generation = -1

    def heard_by(self) -> dict[str, int]:
        """Each source's latest RSSI, by adapter name (record key ``Sources``).

        An adapter that hears the device with no reading (virtual controllers,
        some dongles) is named too, with HCI's "no reading" value 127: it hears
        the device, which is what a client choosing where to connect needs.
        """
        return {
            adapter: RSSI_UNAVAILABLE if source.rssi is None else source.rssi
            for adapter, source in sorted(self.sources.items())
        }

    @property
    def interval(self) -> float | None:
        """The learned advertising interval in seconds; None until learned."""
        return self.learner.interval

    def __repr__(self) -> str:
        return f"Device({self.address} {self.adapter} rssi={self.rssi} v{self.version})"


class DeviceCache:
    """Devices currently present, keyed by address.

    ``listening``: which adapters listen now (sources.py); a device none of
    whose sources listens is not losing time, up to ``lost_timeout`` of that.
    """

    def __init__(
        self, lost_timeout: float, max_size: int, listening: Listening | None = None
    ) -> None:
        self.lost_timeout = lost_timeout
        self.max_size = max_size
        self.listening = listening if listening is not None else Listening()
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
    ) -> tuple[Device, bool, bool, bool]:
        """Record one report; returns (device, is_new, content_changed, followed).

        ``followed``: the report came from the source the record follows (it may
        have just become that), so the record's RSSI is the report's. A report
        from another source updates the content and that source only.
        """
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
                device.identity_wire = None
            elif device.since <= device.heard and self.listening.listens(adapter):
                device.learner.gap(now - device.heard)
            # else a source that heard it listened again since its last report, or
            # this adapter hears before we know it listens again (BlueZ reports
            # once its kernel scan runs, before a slow StartDiscovery's reply):
            # the gap spans time nobody listened, and teaches nothing.
            device.heard = now
            device.since = now
            device.last_seen = wall
        sources = device.sources
        source = sources.get(adapter)
        if source is None:
            source = sources[adapter] = Source(path, now)
        # Source.hear, inlined: this runs for every report.
        source.heard = now
        if rssi is not None:
            source.rssi = rssi
            smoothed = source.smoothed
            source.smoothed = rssi if smoothed is None else smoothed + SMOOTHING * (rssi - smoothed)
        current = device.adapter
        followed = current == adapter
        if len(sources) > 1:
            self._forget_old_sources(device, now)
        if not followed:
            chosen = sources.get(current)
            if chosen is None or prefer(
                chosen, source, self.listening.listens(current), device.learner.estimate, now
            ):
                if chosen is not None:
                    device.version += 1  # a change of source is news to every listener
                device.adapter = adapter
                device.identity_wire = None
                followed = True
        if device.address_type != address_type:
            device.address_type = address_type
            device.identity_wire = None
        if followed:
            if device.path != path:
                device.path = path
                device.identity_wire = None
            if rssi is not None:
                device.rssi = rssi
        before = device.content
        changed = content is not before and content != before
        if changed:
            device.content = content
            device.version += 1
            device.content_wire = None
            if before is None or not same_verdicts(before, content):
                device.interest = None  # filtered again at its next consideration
        return device, is_new, changed, followed

    def _forget_old_sources(self, device: Device, now: float) -> None:
        """Sources not heard within the device's lost time are no longer among them."""
        limit = now - lost_after(device.learner.interval, self.lost_timeout)
        sources = device.sources
        for adapter in [a for a, s in sources.items() if s.heard <= limit]:
            del sources[adapter]

    def expire(self, now: float) -> list[Device]:
        """Remove and return devices not heard for their presence time (``lost_after``).

        Silence counts from ``since``. A device none of whose sources listens now
        is kept until the last of them has not listened for the lost timeout.
        However often its sources stop and start, a device is lost once unheard
        for its presence time plus the lost timeout. Looks only at the devices
        whose silence began ``INTERVAL_SLACK`` (or the lost timeout, if shorter)
        ago: in a crowd most were heard in the last seconds.
        """
        lost: list[Device] = []
        devices = self._devices
        lost_timeout = self.lost_timeout
        quiet = now - min(INTERVAL_SLACK, lost_timeout)
        listening = self.listening
        someone_deaf = bool(listening.deaf)
        for device in devices.values():
            since = device.since
            if since > quiet:
                break
            presence = lost_after(device.learner.interval, lost_timeout)
            if now - device.heard >= presence + lost_timeout:
                lost.append(device)
                continue
            if someone_deaf:
                deaf = listening.deaf_for(device.sources or (device.adapter,), now)
                if deaf is not None:
                    if deaf >= lost_timeout:
                        lost.append(device)
                    continue
            if now - since >= presence:
                lost.append(device)
        for device in lost:
            del devices[device.address]
        return lost

    def resumed(self, adapter: str, now: float) -> None:
        """``adapter`` listens again: each device it heard that no other listening
        source heard gets its whole presence time again, from ``now``, but never
        from more than the lost timeout after its last report (pauses again and
        again keep a gone device no longer than that)."""
        listens = self.listening.listens
        again = [
            device
            for device in self._devices.values()
            if adapter in device.sources
            and device.since < now
            and not any(listens(a) for a in device.sources if a != adapter)
        ]
        devices = self._devices
        lost_timeout = self.lost_timeout
        for device in again:
            device.since = min(now, device.heard + lost_timeout)
            devices.move_to_end(device.address)

    def restore(self, devices: list[Device]) -> list[Device]:
        """Put devices loaded from the state file into the cache, in ``since`` order.

        Only into an empty cache (at start): addresses already here are
        skipped. Each gets its record's adapter as its one source. Returns the
        devices added.
        """
        added = [
            d for d in sorted(devices, key=lambda d: d.since) if d.address not in self._devices
        ]
        for device in added:
            device.restored = True
            device.identity_wire = None
            if not device.sources and device.adapter:
                source = device.sources[device.adapter] = Source(device.path, device.heard)
                source.hear(device.rssi, device.heard)
            self._devices[device.address] = device
        if len(self._devices) > len(added):
            # Reports came first (not at start): keep the order.
            ordered = sorted(self._devices.values(), key=lambda d: d.since)
            self._devices = OrderedDict((d.address, d) for d in ordered)
        return added

    def evict_overflow(self) -> list[Device]:
        """Remove and return the devices whose silence began longest ago, beyond ``max_size``."""
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
