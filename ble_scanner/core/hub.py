"""The hub: reports in, cache, listeners, and what to emit to whom.

Pure logic with an injected clock. The BlueZ side calls ``report``; the D-Bus
side implements ``Emitter`` and answers clients through ``snapshot``,
``subscribe`` and ``unsubscribe``. Data flows one way: nothing here calls
back into BlueZ.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields, replace
from typing import Protocol

from ..const import (
    DEFAULT_BROADCAST_INTERVAL,
    DEFAULT_BROADCAST_KEEP_ALIVE,
    DEFAULT_BROADCAST_RSSI_DELTA,
    DEFAULT_CACHE_SIZE,
    DEFAULT_LOST_TIMEOUT,
    DEFAULT_MAX_SUBSCRIPTIONS_PER_USER,
    DEFAULT_SUBSCRIPTIONS_RESERVED_FOR_ROOT,
)
from .access import ROOT
from .cache import Device, DeviceCache
from .emission import Broadcast, Listener
from .filters import Filter, SnapshotQuery, SubscriptionOptions
from .loadcap import (
    DEFAULT_SHED_CPU_PERCENT,
    DEFAULT_SHED_LOAD_AVERAGE,
    SHED_RSSI_DELTA,
    SheddingLoad,
    ShedStep,
)
from .record import DeviceView
from .sources import Listening
from .subscriptions import Subscription, SubscriptionRegistry

_LOGGER = logging.getLogger(__name__)


class Emitter(Protocol):
    """Where the hub's decisions go: the D-Bus service in production, a list in tests."""

    def device_discovered(
        self, device: Device, broadcast: bool, subscriptions: list[Subscription]
    ) -> None: ...

    def device_lost(
        self, address: str, broadcast: bool, subscriptions: list[Subscription]
    ) -> None: ...


@dataclass(slots=True, frozen=True)
class HubSettings:
    """The settings the hub and its timer follow: the fields of the service's
    ``ScannerConfig`` (config.py) of the same names, so that the core needs
    nothing of the settings table. ``tests/unit/test_hub.py`` holds the defaults equal."""

    adapters: frozenset[str] = frozenset()  # empty: every adapter
    lost_timeout: float = DEFAULT_LOST_TIMEOUT
    cache_size: int = DEFAULT_CACHE_SIZE
    broadcast_keep_alive: float = DEFAULT_BROADCAST_KEEP_ALIVE  # 0: never
    broadcast_rssi_delta: int = DEFAULT_BROADCAST_RSSI_DELTA
    broadcast_interval: float = DEFAULT_BROADCAST_INTERVAL  # 0: every change
    ignore_company_ids: frozenset[int] = frozenset()
    ignore_addresses: frozenset[str] = frozenset()
    min_rssi: int | None = None
    shed_load_average: float = DEFAULT_SHED_LOAD_AVERAGE  # 0: not a trigger
    shed_cpu_percent: int = DEFAULT_SHED_CPU_PERCENT  # 0: not a trigger
    max_subscriptions_per_user: int = DEFAULT_MAX_SUBSCRIPTIONS_PER_USER  # root: no such limit
    subscriptions_reserved_for_root: int = DEFAULT_SUBSCRIPTIONS_RESERVED_FOR_ROOT

    @classmethod
    def of(cls, config: object) -> HubSettings:
        """Ours of any settings object with attributes of the same names (ScannerConfig)."""
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})


@dataclass
class Stats:
    reports: int = 0
    ignored: int = 0
    malformed: int = 0
    per_adapter: dict[str, int] = field(default_factory=dict)


class Hub:
    """Cache, listeners and emission decisions for every report."""

    def __init__(
        self,
        emitter: Emitter,
        settings: HubSettings | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        tap: Callable[[DeviceView], None] | None = None,
        wake: Callable[[], None] | None = None,
    ) -> None:
        """``tap`` sees every report the settings keep, before any emission decision
        (the dbus-ble-sensors feed, venus/feed.py): it must be cheap and never raise.
        ``wake`` is called when a held broadcast makes an earlier deadline for the
        hub's timer (timer.py), which sleeps until ``next_due``."""
        self.settings = settings or HubSettings()
        self.emitter = emitter
        self.monotonic = monotonic
        self.wall = wall
        # Which adapters listen now (sources.py): the BlueZ side tells ``listening``.
        self.listen = Listening()
        # Adapters whose devices were lost for their deafness: one log line per silence.
        self._deaf_told: set[str] = set()
        self.cache = DeviceCache(self.settings.lost_timeout, self.settings.cache_size, self.listen)
        self.broadcast = Broadcast(
            self.settings.broadcast_rssi_delta,
            self.settings.broadcast_keep_alive,
            self.settings.broadcast_interval,
            wake,
        )
        self.subscriptions = SubscriptionRegistry(
            per_user=self.settings.max_subscriptions_per_user,
            reserved_for_root=self.settings.subscriptions_reserved_for_root,
        )
        # Bumped whenever a subscription starts or ends: it invalidates Device.interest.
        self._generation = 0
        self._interest_sets: dict[tuple[Subscription, ...], tuple[Subscription, ...]] = {}
        self.stats = Stats()
        # Load shedding (loadcap.py): the step, and while coalescing the devices
        # reported since the last flush, each considered once at the flush.
        self.shedding = ShedStep.NONE
        self._pending: dict[str, Device] | None = None
        self.tap = tap

    # --- configuration ---------------------------------------------------------

    def configure(self, settings: HubSettings) -> None:
        """Apply new settings at once; devices now ignored are reported lost."""
        self.settings = settings
        self.cache.lost_timeout = settings.lost_timeout
        self.cache.max_size = settings.cache_size
        # New limits bound new subscriptions; those held past them stay.
        self.subscriptions.per_user = settings.max_subscriptions_per_user
        self.subscriptions.reserved_for_root = settings.subscriptions_reserved_for_root
        if settings.broadcast_interval != self.broadcast.interval:
            self.broadcast.set_interval(settings.broadcast_interval)
        self._apply_shedding()
        for device in [d for d in self.cache if self._ignored(d.address, d)]:
            self.cache.remove(device.address)
            self._announce_lost(device)
        self._evict_overflow()

    def _ignored(self, address: str, device: Device | DeviceView) -> bool:
        config = self.settings
        if config.adapters and device.adapter not in config.adapters:
            return True
        if address in config.ignore_addresses:
            return True
        if config.min_rssi is not None and (device.rssi is None or device.rssi < config.min_rssi):
            return True
        ignore = config.ignore_company_ids
        content = device.content
        if ignore and content is not None and content.manufacturer_data:
            return ignore.issuperset(content.manufacturer_data)
        return False

    # --- reports in ------------------------------------------------------------

    def report(self, view: DeviceView) -> Device | None:
        """One advertisement heard by an adapter; returns the cached device, or None if ignored."""
        stats = self.stats
        stats.reports += 1
        per_adapter = stats.per_adapter
        per_adapter[view.adapter] = per_adapter.get(view.adapter, 0) + 1
        address = view.address
        if not address:
            stats.malformed += 1
            return None
        if self._ignored(address, view):
            stats.ignored += 1
            return None
        tap = self.tap
        if tap is not None:
            tap(view)
        now = self.monotonic()
        device, is_new, changed, followed = self.cache.report(
            address,
            view.address_type,
            view.adapter,
            view.path,
            view.rssi,
            view.content,
            self.wall(),
            now,
        )
        if not (followed or changed or is_new):
            # Another adapter heard it, saying nothing new: the record follows one
            # source (sources.py), so a second adapter adds no signals.
            return device
        pending = self._pending
        if pending is None:
            self._consider(device, now)
        else:
            pending[address] = device
        if len(self.cache) > self.settings.cache_size:
            self._evict_overflow()
        return device

    def listening(self, adapter: str, listening: bool) -> None:
        """The BlueZ side: ``adapter`` listens now, or has stopped (paused, restarting,
        off, gone, bluetoothd away). Its devices lose no time while it does not; when
        it listens again, each it alone heard gets its whole lost time again."""
        now = self.monotonic()
        if self.listen.set(adapter, listening, now) and listening:
            self._deaf_told.discard(adapter)
            self.cache.resumed(adapter, now)

    def _consider(self, device: Device, now: float) -> None:
        """Tell every listener for whom this state of ``device`` is news."""
        broadcast = self.broadcast.consider(device, now)
        interest = device.interest
        if interest is None or device.interest_generation != self._generation:
            interest = self._interest(device)
        targets = [s for s in interest if s.listener.consider_matching(device, now)]
        if broadcast or targets:
            self.emitter.device_discovered(device, broadcast, targets)

    # --- load shedding ------------------------------------------------------------

    def shed(self, step: ShedStep) -> None:
        """Shed work up to ``step`` (loadcap.ShedStep); lower steps are undone at once."""
        self.shedding = step
        if step >= ShedStep.COALESCE:
            if self._pending is None:
                self._pending = {}
        else:
            self.flush()
            self._pending = None
        self._apply_shedding()

    def flush(self) -> None:
        """Send what is due: what the coalescing window gathered (each device once, in
        its latest state), then the broadcast's held devices whose interval has ended."""
        now = self.monotonic()
        get = self.cache.get
        pending = self._pending
        if pending:
            self._pending = {}
            for address, device in pending.items():
                if get(address) is device:  # not lost or evicted since
                    self._consider(device, now)
        broadcast = self.broadcast
        if not broadcast.held:
            return
        for address in broadcast.due(now):
            held = get(address)
            if held is not None and broadcast.release(held, now):
                self.emitter.device_discovered(held, True, [])

    def next_due(self) -> float | None:
        """When ``flush`` next has a held broadcast to send (monotonic); None: nothing held."""
        return self.broadcast.next_due()

    def _apply_shedding(self) -> None:
        """Set every listener's RssiDelta and KeepAlive from the settings and the step."""
        step, config = self.shedding, self.settings
        rssi_delta = config.broadcast_rssi_delta
        if step >= ShedStep.RSSI_DELTA:
            rssi_delta = max(rssi_delta, SHED_RSSI_DELTA)
        keep_alives = step < ShedStep.NO_KEEP_ALIVE
        self.broadcast.rssi_delta = rssi_delta
        self.broadcast.keep_alive = config.broadcast_keep_alive if keep_alives else 0.0
        for subscription in self.subscriptions:
            keep_alive = subscription.options.keep_alive
            assert keep_alive is not None  # resolved at subscribe
            subscription.listener.keep_alive = keep_alive if keep_alives else 0.0

    def _interest(self, device: Device) -> tuple[Subscription, ...]:
        """The subscriptions whose filter matches this device's content; kept on the device.

        Filtering runs once per change of what filters read (name, company and
        service ids; ``filters.same_verdicts``) instead of once per report: most
        reports repeat what a device said before or only a new reading, and most
        subscriptions want few devices.
        """
        interest = tuple(
            [
                s
                for s in self.subscriptions
                if s.listener.match_all or s.listener.filter.matches_content(device)
            ]
        )
        # Devices share the tuple (there are few distinct sets), so the cache costs a pointer.
        interest = self._interest_sets.setdefault(interest, interest)
        device.interest = interest
        device.interest_generation = self._generation
        return interest

    def _subscriptions_changed(self) -> None:
        self._generation += 1
        self._interest_sets.clear()

    def restore(self, devices: list[Device]) -> list[Device]:
        """Devices from the state file, at start: present at once, and not news.

        They are in snapshots and replays (marked ``restored`` until heard
        again); the broadcast counts them as already told, so hearing them
        again sends nothing unless something changed (no DeviceDiscovered
        storm after a restart). At most ``cache_size``, the most recently
        heard, and none the settings now ignore. Returns the devices added.
        """
        kept = [d for d in devices if not self._ignored(d.address, d)]
        newest = sorted(kept, key=lambda d: d.heard)[-self.settings.cache_size :]
        added = self.cache.restore(newest)
        for device in added:
            self.broadcast.mark_sent(device, device.heard)
        self._evict_overflow()
        return added

    def sweep(self) -> list[Device]:
        """Report devices not heard for their presence time as lost; call about once a second."""
        now = self.monotonic()
        lost = self.cache.expire(now)
        if lost and self.listen.deaf:
            self._tell_deaf_losses(lost, now)
        for device in lost:
            self._announce_lost(device)
        return lost

    def _tell_deaf_losses(self, lost: list[Device], now: float) -> None:
        """One log line per adapter whose silence outlasted the lost timeout and lost devices."""
        listen, timeout = self.listen, self.settings.lost_timeout
        counts: dict[str, int] = {}
        for device in lost:
            deaf = listen.deaf_for(device.sources or (device.adapter,), now)
            if deaf is not None and deaf >= timeout and device.adapter not in self._deaf_told:
                counts[device.adapter] = counts.get(device.adapter, 0) + 1
        for adapter, count in sorted(counts.items()):
            self._deaf_told.add(adapter)
            _LOGGER.warning(
                "%s has not listened for %.0f s (LostTimeout): %d device(s) it heard are lost",
                adapter,
                timeout,
                count,
            )

    def _evict_overflow(self) -> None:
        for device in self.cache.evict_overflow():
            self._announce_lost(device)

    def _announce_lost(self, device: Device) -> None:
        broadcast = self.broadcast.forget(device.address)
        targets = [s for s in self.subscriptions if s.listener.forget(device.address)]
        if broadcast or targets:
            self.emitter.device_lost(device.address, broadcast, targets)

    # --- clients -----------------------------------------------------------------

    def snapshot(self, query: SnapshotQuery) -> list[Device]:
        devices: Iterable[Device] = self.cache
        if query.max_age is not None:
            limit = self.monotonic() - query.max_age
            devices = (d for d in devices if d.heard >= limit)
        flt = query.filter
        if flt.is_everything:
            return list(devices)
        return [d for d in devices if flt.matches(d)]

    def subscribe(
        self, owner: str, flt: Filter, options: SubscriptionOptions, uid: int = ROOT
    ) -> tuple[Subscription, list[Device]]:
        """Create a subscription for ``owner``, a connection of Unix user ``uid``; returns
        it and the devices to replay (already marked sent).

        Raises ``SheddingLoad`` for ``AllReports`` while the service sheds that much.
        """
        if options.all_reports and self.shedding >= ShedStep.REFUSE_ALL_REPORTS:
            raise SheddingLoad(
                "the service is shedding load (step 4 of 4): new AllReports subscriptions "
                "are refused until the load falls; subscribe without AllReports"
            )
        resolved = replace(
            options,
            rssi_delta=(
                self.settings.broadcast_rssi_delta
                if options.rssi_delta is None
                else options.rssi_delta
            ),
            keep_alive=(
                self.settings.broadcast_keep_alive
                if options.keep_alive is None
                else options.keep_alive
            ),
        )
        assert resolved.rssi_delta is not None and resolved.keep_alive is not None
        keep_alive = resolved.keep_alive if self.shedding < ShedStep.NO_KEEP_ALIVE else 0.0
        listener = Listener(flt, resolved.rssi_delta, keep_alive, resolved.all_reports)
        subscription = self.subscriptions.add(owner, listener, resolved, uid)
        self._subscriptions_changed()
        replay: list[Device] = []
        if resolved.replay:
            now = self.monotonic()
            for device in self.cache:
                if listener.wants(device):
                    listener.mark_sent(device, now)
                    replay.append(device)
        return subscription, replay

    def unsubscribe(self, path: str, caller: str) -> Subscription:
        subscription = self.subscriptions.remove(path, caller)
        self._subscriptions_changed()
        return subscription

    def owner_left(self, owner: str) -> list[Subscription]:
        dropped = self.subscriptions.drop_owner(owner)
        if dropped:
            self._subscriptions_changed()
        return dropped
