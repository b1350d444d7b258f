"""Presence: each device's advertising interval, learned from its reports, and when it is lost.

Pure logic, no clock of its own: the cache passes the gap between two reports
(monotonic seconds). Home Assistant learns an interval once, as the longest
gap over a device's first 16 advertisements, and calls the device gone after
that interval plus 5 s (habluetooth ``advertisement_tracker.py``,
``TRACKER_BUFFERING_WOBBLE_SECONDS``). Here:

- the interval keeps being learned: it is the longest gap over the last one
  to two blocks of ``INTERVAL_HISTORY`` gaps, so it follows a device that
  changes its rate (a longer gap counts at once, a shorter rate once a block
  of it is complete); HA keeps its first answer until the source changes;
- reports closer than ``SAME_EVENT`` are one advertising event (three
  channels, or two adapters) and are not gaps, so a block spans 16 events,
  not 16 packets;
- a device is lost after ``INTERVAL_FACTOR`` times its interval plus
  ``INTERVAL_SLACK``, never later than the lost timeout: one missed
  advertisement of a slow advertiser does not make it lost, as it does
  with HA's interval + 5 s.

Two blocks of running maxima instead of a ring of 16 gaps: three numbers per
device, not sixteen, for a cache of 10 000 devices on a 1 GB GX.
"""

from __future__ import annotations

from typing import Final

# Gaps per block: HA's ADVERTISING_TIMES_NEEDED (16 advertisements), enough for
# the longest gap to include the usual missed packets of a busy channel.
INTERVAL_HISTORY: Final = 16
# Lost after this many of its longest gaps in a row: a present device that
# misses one or two advertisements more than its worst recent run stays present.
INTERVAL_FACTOR: Final = 3.0
# Added to every learned lost time: BlueZ's pause between discovery rounds
# (IDLE_DISCOV_TIMEOUT, 5 s) and HA's own wobble allowance are both 5 s.
INTERVAL_SLACK: Final = 5.0
# The Core spec's shortest advertising interval is 20 ms (Vol 6 Part B 4.4.2.2):
# reports closer than that are one event heard on several channels or adapters.
SAME_EVENT: Final = 0.02


class IntervalLearner:
    """The longest gap over the last one to two blocks of ``INTERVAL_HISTORY`` gaps.

    ``interval`` is None until the first block is complete.
    """

    __slots__ = ("_block_max", "_count", "interval")

    def __init__(self, interval: float | None = None) -> None:
        # A learned interval (from the state file) stands until a block replaces it.
        self.interval = interval
        self._block_max = 0.0  # the longest gap of the block being filled
        self._count = 0  # gaps in the block being filled

    @property
    def estimate(self) -> float | None:
        """The interval, or before it is learned the longest gap so far (None: no gap yet)."""
        if self.interval is not None:
            return self.interval
        return self._block_max if self._count else None

    def gap(self, seconds: float) -> None:
        """The device was heard ``seconds`` after its previous report."""
        if seconds < SAME_EVENT:
            return
        if seconds > self._block_max:
            self._block_max = seconds
        count = self._count + 1
        interval = self.interval
        if count == INTERVAL_HISTORY:
            # A complete block: it alone is the interval from now on, so that
            # a faster rate shows within one to two blocks.
            self.interval = self._block_max
            self._block_max = 0.0
            self._count = 0
            return
        self._count = count
        if interval is not None and seconds > interval:
            self.interval = seconds  # a longer gap counts at once


def lost_after(interval: float | None, lost_timeout: float) -> float:
    """Seconds without a report after which a device is lost."""
    if interval is None:
        return lost_timeout
    return min(lost_timeout, interval * INTERVAL_FACTOR + INTERVAL_SLACK)
