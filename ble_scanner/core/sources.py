"""Sources: which adapter a device's record follows, and which adapters listen now.

Pure logic, no clock of its own. A device heard by several adapters (the GX's
built-in radio and a USB dongle) is served from one source at a time: the
record's ``Adapter``, ``Path`` and ``Rssi`` are that adapter's. Home
Assistant does the same between its scanners (habluetooth ``manager.py``
``_prefer_previous_adv_from_different_source``): keep the previous source
unless the new one is clearly stronger (``ADV_RSSI_SWITCH_THRESHOLD`` in
``const.py``, 16 dB on single readings) or the previous one is stale, and
only while the previous one's scanner is scanning. Here:

- the strength compared is each source's smoothed RSSI (an exponentially
  weighted mean), so one lucky packet moves nothing;
- the margin is ``SWITCH_MARGIN`` (10 dB), not 16: a source change needs the
  challenger that much stronger, and going back needs the old source that
  much stronger again, so the band between the two is hysteresis of twice the
  margin. HA's 16 dB keeps a device on an adapter hearing it at -65 dBm when
  another hears it at -50 dBm; on smoothed readings 10 dB flaps less than
  HA's 16 on single ones (measured: docs/behaviour.md "Presence");
- the current source is stale after ``STALE_FACTOR`` times the device's
  learned interval (presence.py) without hearing it, and a source that is not
  listening (``Listening``) yields at once.

``Listening`` is the other half: time during which no source that heard a
device was listening (a pause, a discovery restart, an adapter off or gone,
bluetoothd away, another process resetting the adapter) is not silence, and
the cache does not count it (cache.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

# Weight of a new reading in a source's smoothed RSSI: HA's RSSI_SMOOTHING_FACTOR
# (habluetooth manager.py). About the last five readings count; one outlier moves
# the mean by 0.3 of its excursion.
SMOOTHING: Final = 0.3
# dB by which a challenger's smoothed RSSI must beat the current source's. Two
# adapters hearing a 1 s advertiser equally, with 4 dB of per-packet noise, swap
# it about once in 8 hours (8 dB: 1.6 times an hour; HA's 16 dB on single
# readings: 11); with 6 dB of noise 7 times an hour, HA's rule 117
# (tests/unit/test_sources.py measures it; docs/behaviour.md "Presence").
SWITCH_MARGIN: Final = 10.0
# The current source is stale when it has not heard the device for this many of
# its learned intervals (the longest gap over the last 16 to 31 events), as a
# device is lost after presence.py's INTERVAL_FACTOR of them. Two adapters each
# missing 30 % of a 1 s advertiser's packets swap it 2.4 times an hour at 3,
# 14 times at 2 (tests/unit/test_sources.py).
STALE_FACTOR: Final = 3.0


class Source:
    """One adapter's view of one device: its object path, latest and smoothed RSSI, when heard."""

    __slots__ = ("heard", "path", "rssi", "smoothed")

    def __init__(self, path: str, heard: float) -> None:
        self.path = path
        self.heard = heard  # monotonic
        self.rssi: int | None = None
        self.smoothed: float | None = None

    def hear(self, rssi: int | None, now: float) -> None:
        self.heard = now
        if rssi is None:
            return
        self.rssi = rssi
        smoothed = self.smoothed
        if smoothed is None:
            self.smoothed = float(rssi)
        else:
            self.smoothed = smoothed + SMOOTHING * (rssi - smoothed)

    def __repr__(self) -> str:
        return f"Source({self.path} rssi={self.rssi} smoothed={self.smoothed})"


def prefer(
    current: Source,
    challenger: Source,
    current_listening: bool,
    interval: float | None,
    now: float,
    margin: float = SWITCH_MARGIN,
    stale_factor: float = STALE_FACTOR,
) -> bool:
    """True if the record should move from ``current`` to ``challenger``, which just heard it.

    ``interval``: the device's learned advertising interval so far (None: not
    known, so staleness cannot be judged and only strength counts). ``margin``
    and ``stale_factor`` are other than the constants only in their measurement.
    """
    if not current_listening:
        return True
    if interval is not None and now - current.heard > interval * stale_factor:
        return True
    theirs, ours = challenger.smoothed, current.smoothed
    if theirs is None:
        return False
    return ours is None or theirs - ours >= margin


class Listening:
    """Which adapters listen now, and since when each of the others has not.

    An adapter never mentioned counts as listening: a hub without a BlueZ side
    (tests, the benchmarks) judges presence as before, and the BlueZ side says
    "not listening" the moment it meets an adapter that does not listen yet.
    """

    __slots__ = ("_deaf",)

    def __init__(self) -> None:
        self._deaf: dict[str, float] = {}  # adapter -> monotonic time it stopped listening

    def set(self, adapter: str, listening: bool, now: float) -> bool:
        """The adapter listens now, or not; True if that is a change."""
        deaf = self._deaf
        if listening:
            return deaf.pop(adapter, None) is not None
        if adapter in deaf:
            return False
        deaf[adapter] = now
        return True

    def listens(self, adapter: str) -> bool:
        return adapter not in self._deaf

    @property
    def deaf(self) -> dict[str, float]:
        """The adapters not listening, each with the time it stopped (read only)."""
        return self._deaf

    def deaf_for(self, adapters: Iterable[str], now: float) -> float | None:
        """None if any of ``adapters`` listens; else how long the last of them has been deaf."""
        deaf = self._deaf
        if not deaf:
            return None
        latest = None
        for adapter in adapters:
            since = deaf.get(adapter)
            if since is None:
                return None
            if latest is None or since > latest:
                latest = since
        return None if latest is None else now - latest
