"""The load budget at work: reads /proc, asks ``loadcap.LoadPolicy``, tells the hub.

The thin I/O part of the load budget (docs/behaviour.md "Under load"): ``ProcSampler``
reads the 5-minute load average and this process's CPU time; ``LoadGuard``
samples (once a second, on the hub's timer, timer.py) and moves the hub's
shedding step. An in-process service in tests has none, so that the test
process's CPU and the machine's load do not make it shed.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Final

from .hub import Hub, HubSettings
from .loadcap import LoadPolicy, LoadSample, ShedStep

_LOGGER = logging.getLogger(__name__)

LOADAVG_PATH: Final = "/proc/loadavg"
SELF_STAT_PATH: Final = "/proc/self/stat"
# The kernel recomputes the load average every 5 s; a CPU share over one second
# has 1 % resolution at the usual 100 clock ticks a second, and two small reads
# a second cost nothing.
SAMPLE_INTERVAL: Final = 1.0
CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


class ProcSampler:
    """Reads the load average and our CPU share; the paths are arguments so tests can fake them."""

    def __init__(
        self,
        loadavg_path: str = LOADAVG_PATH,
        stat_path: str = SELF_STAT_PATH,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.loadavg_path = loadavg_path
        self.stat_path = stat_path
        self.monotonic = monotonic
        self._last_cpu: tuple[float, float] | None = None  # (monotonic, CPU seconds)
        self._complained: set[str] = set()

    def sample(self) -> LoadSample:
        """The 5-minute load average, and percent of one core used since the last sample."""
        load5 = self._read(self.loadavg_path, _load5)
        cpu = self._read(self.stat_path, _cpu_seconds)
        now = self.monotonic()
        percent = None
        if cpu is not None:
            last, self._last_cpu = self._last_cpu, (now, cpu)
            if last is not None and now > last[0]:
                percent = 100.0 * (cpu - last[1]) / (now - last[0])
        return LoadSample(load5, percent)

    def _read(self, path: str, parse: Callable[[str], float]) -> float | None:
        try:
            with open(path, encoding="ascii", errors="replace") as f:
                return parse(f.read())
        except (OSError, ValueError, IndexError) as exc:
            if path not in self._complained:  # once, not every second
                self._complained.add(path)
                _LOGGER.warning("load budget: cannot read %s (%s); that trigger is off", path, exc)
            return None


def _load5(text: str) -> float:
    """``/proc/loadavg``: "0.52 0.58 0.59 1/389 12345" -> 0.58."""
    return float(text.split()[1])


def _cpu_seconds(text: str) -> float:
    """``/proc/<pid>/stat``: utime + stime (fields 14 and 15), in seconds.

    The command name (field 2) may hold spaces and parentheses, so the fields
    are counted from its last ``)``.
    """
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class LoadGuard:
    """Samples, and moves the hub's shedding step as the policy decides; the hub's
    timer (timer.py) calls ``tick`` every ``sample_interval``."""

    def __init__(
        self,
        hub: Hub,
        sampler: ProcSampler,
        policy: LoadPolicy | None = None,
        sample_interval: float = SAMPLE_INTERVAL,
    ) -> None:
        self.hub = hub
        self.sampler = sampler
        self.policy = policy or LoadPolicy()
        self.sample_interval = sample_interval
        self.configure(hub.settings)

    @property
    def step(self) -> ShedStep:
        return self.policy.step

    def configure(self, settings: HubSettings) -> None:
        self.policy.configure(settings.shed_load_average, settings.shed_cpu_percent)

    def tick(self) -> None:
        """One sample and its decision."""
        sampler = self.sampler
        sample = sampler.sample()
        before = self.policy.step
        step = self.policy.update(sample, sampler.monotonic())
        if step != before:
            self.hub.shed(step)
            load = f"{sample.load5:.2f}" if sample.load5 is not None else "unknown"
            cpu = f"{sample.cpu_percent:.0f} %" if sample.cpu_percent is not None else "unknown"
            log = _LOGGER.warning if step > before else _LOGGER.info
            log(
                "load shedding %s -> %s (load average %s, our CPU %s of a core)",
                before.text,
                step.text,
                load,
                cpu,
            )
