"""What the service pays per management frame before the hub: µs per Device Found.

    .venv/bin/python -m tests.bench.ingest_cost

In-process, no bus: the fan-out ``counter`` scene's 200 sensors
(``simproc.scene_report``) encoded as the simulator's kernel encodes them
(``ble_scanner/testing/simulator/mgmt.py`` ``device_found``), each frame read
as the channel reads it (``mgmt.parse_frame``, then what
``Bluez._on_mgmt_event`` does with a Found) and made into a view by
``Reports.found``, whose sink only counts. Two cases: every report carries a
new reading (the counter scene), and every report repeats its device's last
advertisement (a beacon, a sensor between readings). The hub's cost is not in
it: ``python -m tests.bench`` measures the whole service.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Final

from ble_scanner.bluez import mgmt
from ble_scanner.bluez.reports import RateLimitedLog, Reports
from ble_scanner.core.record import DeviceView
from ble_scanner.testing.simulator import mgmt as kernel
from tests.bench.simproc import scene_report

DEVICES: Final = 200
ROUNDS: Final = 25  # frames per timed pass: DEVICES * ROUNDS
INDEX: Final = 0


class CountingSink:
    """The hub's place: counts reports, keeps nothing."""

    def __init__(self) -> None:
        self.reports = 0

    def report(self, view: DeviceView) -> None:
        self.reports += 1

    def listening(self, adapter: str, listening: bool) -> None:
        pass


def frames(rounds: int, new_content: bool, start: int = 0) -> list[bytes]:
    """``rounds`` reports of every device: a new counter each round, or the same one."""
    out = []
    for r in range(start, start + rounds):
        for i in range(DEVICES):
            report = scene_report(i, r if new_content else 0, -60 - (r + i) % 30)
            out.append(kernel.device_found(INDEX, report))
    return out


def feed(reports: Reports, duplicate: bool) -> Callable[[list[bytes]], None]:
    """The channel's per-frame work up to the hub, as ``Bluez._on_mgmt_event`` does it."""
    adapters = {mgmt.adapter_path(INDEX): object()}
    parse_frame, found = mgmt.parse_frame, reports.found

    def run(batch: list[bytes]) -> None:
        for data in batch:
            event = parse_frame(data)
            if type(event) is mgmt.Found:
                adapter = adapters.get(mgmt.adapter_path(event.index))
                found(event, duplicate=adapter is not None and duplicate)

    return run


def per_frame(new_content: bool, duplicate: bool, repeat: int) -> float:
    """The best of ``repeat`` passes, in µs of this process's CPU per frame (the
    machine may be busy with others: their time is not ours)."""
    best = float("inf")
    warm = frames(1, new_content)
    for n in range(repeat):
        sink = CountingSink()
        reports = Reports(sink, RateLimitedLog())
        run = feed(reports, duplicate)
        run(warm)  # every device known, as in a running scene
        batch = frames(ROUNDS, new_content, start=1 + n * ROUNDS)
        t0 = time.process_time()
        run(batch)
        elapsed = time.process_time() - t0
        assert sink.reports == len(warm) + len(batch), sink.reports
        best = min(best, elapsed / len(batch))
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    for duplicate in (True, False):
        for new_content, label in ((True, "new reading every report"), (False, "identical repeat")):
            us = per_frame(new_content, duplicate, args.repeat)
            print(f"DuplicateData {'on ' if duplicate else 'off'}  {label:26} {us:6.2f} µs/frame")


if __name__ == "__main__":
    main()
