"""When a silent adapter gets a discovery restart or a power cycle: pure logic.

An adapter that was hearing advertisements and then hears nothing while we
scan is either stuck or in a place that went quiet (the one sensor's battery
died, the boat left the marina). Both look the same from here, so the ladder
is built to be cheap when it is wrong: a stop/start first (after
``restart_after`` seconds: the SilenceRestart setting), then at most one
power cycle per silence (``power_cycle_after`` seconds later: the
SilencePowerCycle setting; a second one would not find what the first did
not), then restarts at growing intervals. Any report ends the silence and
resets the ladder. Whether the power cycle may happen (other processes'
links) is the BlueZ side's question, not the ladder's: the ladder only says
it is due.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Final

HOUR: Final = 3600.0
# Further seconds of silence, after the restart, before the one power cycle:
# as long again as the first step waited (HA's 90 s), so the restart gets a
# fair chance before anything drops a link.
DEFAULT_SILENCE_POWER_CYCLE: Final = 90.0
# The shortest either step may be set to: an adapter whose one sensor
# advertises every couple of seconds must not look silent between reports.
MIN_SILENCE: Final = 5.0


class WatchdogAction(enum.Enum):
    RESTART = "restart"  # StopDiscovery (and monitors off), then arm again
    POWER_CYCLE = "power-cycle"  # Powered false, then true


@dataclass
class SilenceLadder:
    """One adapter's recovery ladder, fed its report count at each look."""

    restart_after: float  # no reports for this long while scanning is a silence: restart
    power_cycle_after: float  # still none this much longer: the one power cycle
    max_power_cycles_per_hour: int  # a power cycle drops every connection
    max_interval: float  # restarts back off to this
    heard_count: int = -1
    heard_at: float = 0.0
    step: int = 0  # actions taken in the current silence
    wait: float = 0.0  # until the next step
    power_cycled: bool = False  # in the current silence
    power_cycles: list[float] = field(default_factory=list)  # when, for the cap

    def __post_init__(self) -> None:
        self.wait = self.restart_after

    def configure(self, restart_after: float, power_cycle_after: float) -> None:
        """New timings (the settings changed); the step under way waits by them at once."""
        self.restart_after, self.power_cycle_after = restart_after, power_cycle_after
        if self.step == 0:
            self.wait = restart_after
        elif self.step == 1:
            self.wait = power_cycle_after

    @property
    def armed(self) -> bool:
        """Only an adapter that has heard something can be judged silent."""
        return self.heard_count > 0

    def look(self, count: int, now: float, scanning: bool) -> WatchdogAction | None:
        """One look at the adapter's cumulative report count; returns the action due."""
        if count != self.heard_count:
            self._reset(count, now)  # a report ends the silence
            return None
        if not scanning:
            # Off, blocked or re-arming (also after our own power cycle) is not
            # silence: the clock stops, the ladder stays where it was.
            self.heard_at = now
            return None
        if not self.armed or now - self.heard_at < self.wait:
            return None
        self.heard_at = now  # the next step gets a full period
        self.step += 1
        if self.step == 1:
            self.wait = self.power_cycle_after
            return WatchdogAction.RESTART
        self.wait = min(self.wait * 2, self.max_interval)
        if not self.power_cycled and self._may_power_cycle(now):
            self.power_cycled = True
            self.power_cycles.append(now)
            return WatchdogAction.POWER_CYCLE
        return WatchdogAction.RESTART

    def _may_power_cycle(self, now: float) -> bool:
        self.power_cycles = [t for t in self.power_cycles if t > now - HOUR]
        return len(self.power_cycles) < self.max_power_cycles_per_hour

    def _reset(self, count: int, now: float) -> None:
        self.heard_count, self.heard_at = count, now
        self.step, self.wait, self.power_cycled = 0, self.restart_after, False
