"""The load budget: when the service sheds work, and how much (pure logic).

A Venus GX reboots itself when its load average reaches 6: ``/etc/watchdog.conf``
in victronenergy/meta-victronenergy (``meta-venus/recipes-extended/watchdog``)
sets ``max-load-15 = 6`` (and ``max-load-5``: 6 in older releases, 10 in newer
ones), and the watchdog's repair script logs "load average too high" before it
resets the device. A crowded campsite (hundreds of phones, thousands of reports
a second) must not make this service the reason. So the service watches the
5-minute load average and its own CPU share, and above either threshold sheds
work one step at a time; it undoes the steps one at a time once both have
stayed under a lower mark for a while (hysteresis), so it does not flap.

Steps are cumulative: step 3 means steps 1, 2 and 3. Subscriptions for specific
devices (address, manufacturer or any other filter) keep getting their devices
at every step: coalescing delays them by at most a window, nothing drops them.

The broadcast is shed first or together with subscriptions, never after: they
asked for their devices, the broadcast is for watching (docs/dbus-api.md, "The
broadcast is rate-limited"). Step 1 coalesces both (the broadcast, told at most once per
``BroadcastInterval``, 1 s by default, is coalesced more than that already);
step 2 is the broadcast's alone; step 3 stops the keep-alives of both; step 4
refuses only new ``AllReports`` subscriptions, after three steps that shed the
broadcast. Below these steps, when the bus daemon does not keep up, the write
budget (bus/writer.py) drops the broadcast's DeviceDiscovered at half the
budget and subscriptions' only at all of it. tests/unit/test_emission.py holds
the broadcast to at most what a subscription with its settings gets, at every step.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

# The 5-minute average leads the 15-minute one the watchdog checks by minutes;
# 4.5 starts shedding well before either can reach 6 and leaves 1.5 for the
# rest of the GX (a Cerbo GX idles at a load of 1.5 to 3 with its usual services).
DEFAULT_SHED_LOAD_AVERAGE: Final = 4.5
# Percent of one core: a Cerbo GX is a dual Cortex-A7 shared by a dozen services;
# more than 40 % of one core (a fifth of the machine) for BLE reports is a crowd,
# not a normal site (30 devices cost a few percent).
DEFAULT_SHED_CPU_PERCENT: Final = 40
# Under this share of a threshold a reading is calm; between it and the
# threshold the step holds, so a load hovering near the threshold does not flap.
RELEASE_SHARE: Final = 0.75
# One step up per this many seconds while over a threshold: long enough for the
# previous step to show in the next CPU share sample, short enough to be fully
# shed within seconds of a crowd arriving.
STEP_UP_INTERVAL: Final = 2.0
# One step down after this long calm: the 5-minute load average moves little
# faster, and stepping down too soon would bring the load straight back.
STEP_DOWN_HOLD: Final = 30.0
# Step 1: emissions are sent once per device per window with its latest state.
# Half the Venus GUI's one-second refresh: a reading is at most that late, and a
# phone advertising every 100 ms costs two signals a second instead of ten.
COALESCE_WINDOW: Final = 0.5
# Step 2: the broadcast's RssiDelta is at least this. A device standing still
# fades by up to ~10 dB; 20 dB is someone walking away, and it is news.
SHED_RSSI_DELTA: Final = 20


class ShedStep(enum.IntEnum):
    """How much work the service sheds; each step includes the ones below it."""

    NONE = 0
    COALESCE = 1  # emissions coalesced into COALESCE_WINDOW
    RSSI_DELTA = 2  # the broadcast's RssiDelta raised to SHED_RSSI_DELTA
    NO_KEEP_ALIVE = 3  # keep-alives not sent (broadcast and subscriptions)
    REFUSE_ALL_REPORTS = 4  # new AllReports subscriptions refused (LimitsExceeded)

    @property
    def text(self) -> str:
        """The step in words, as /Stats/LoadShedding shows it."""
        return STEP_TEXT[self]


STEP_TEXT: Final = {
    ShedStep.NONE: "off",
    ShedStep.COALESCE: "1: coalescing emissions",
    ShedStep.RSSI_DELTA: "2: coalescing, broadcast RssiDelta raised",
    ShedStep.NO_KEEP_ALIVE: "3: coalescing, RssiDelta raised, no keep-alives",
    ShedStep.REFUSE_ALL_REPORTS: "4: coalescing, RssiDelta raised, no keep-alives, "
    "AllReports refused",
}
TOP_STEP: Final = max(ShedStep)


class SheddingLoad(Exception):
    """A request the service refuses while it sheds load (a new AllReports subscription)."""


@dataclass(slots=True, frozen=True)
class LoadSample:
    """One reading: the system's 5-minute load average and our CPU share since the last one."""

    load5: float | None  # None: unreadable
    cpu_percent: float | None  # percent of one core; None: no earlier reading to compare


class LoadPolicy:
    """Decides the shedding step from samples; a threshold of 0 turns that trigger off."""

    def __init__(
        self,
        load_average: float = DEFAULT_SHED_LOAD_AVERAGE,
        cpu_percent: float = DEFAULT_SHED_CPU_PERCENT,
        step_up_interval: float = STEP_UP_INTERVAL,
        step_down_hold: float = STEP_DOWN_HOLD,
    ) -> None:
        self.load_average = load_average
        self.cpu_percent = cpu_percent
        self.step_up_interval = step_up_interval
        self.step_down_hold = step_down_hold
        self.step = ShedStep.NONE
        self._changed_at: float | None = None
        self._calm_since: float | None = None

    def configure(self, load_average: float, cpu_percent: float) -> None:
        """New thresholds; the step moves from the next sample on."""
        self.load_average = load_average
        self.cpu_percent = cpu_percent

    def _over(self, value: float | None, threshold: float, share: float = 1.0) -> bool:
        return threshold > 0 and value is not None and value >= threshold * share

    def update(self, sample: LoadSample, now: float) -> ShedStep:
        """The step after ``sample``, taken at monotonic time ``now``."""
        over = self._over(sample.load5, self.load_average) or self._over(
            sample.cpu_percent, self.cpu_percent
        )
        calm = not (
            self._over(sample.load5, self.load_average, RELEASE_SHARE)
            or self._over(sample.cpu_percent, self.cpu_percent, RELEASE_SHARE)
        )
        since_change = now - self._changed_at if self._changed_at is not None else None
        if over:
            self._calm_since = None
            if self.step < TOP_STEP and (
                since_change is None or since_change >= self.step_up_interval
            ):
                self._move(ShedStep(self.step + 1), now)
        elif calm:
            if self._calm_since is None:
                self._calm_since = now
            if (
                self.step > ShedStep.NONE
                and now - self._calm_since >= self.step_down_hold
                and (since_change is None or since_change >= self.step_down_hold)
            ):
                self._move(ShedStep(self.step - 1), now)
        else:
            self._calm_since = None  # between the marks: hold the step
        return self.step

    def _move(self, step: ShedStep, now: float) -> None:
        self.step = step
        self._changed_at = now
