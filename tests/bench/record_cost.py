"""What the service pays to encode a report for its subscribers: µs per report.

    .venv/bin/python -m tests.bench.record_cost

In-process, no bus: the fan-out ``counter`` scene's sensors
(``simproc.scene_report``: one company's payload, BTHome service data and a
name, a name with a service UUID), each report put into a ``DeviceCache`` as
the hub does, then encoded as ``signals.py`` encodes it: the full record
(``records.record_entry``, for DeviceDiscovered and the first item of a
batch) and a changed-keys item (``sent_of``, ``changes``, ``changed_entry``).
Three cases: every report carries a new reading (the counter scene), every
report repeats its device's content, and changed-keys items of new readings.
The cache's own cost is timed alone and taken off. ``python -m tests.bench``
measures the whole service.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Final

from ble_scanner.bus.records import changed_entry, record_entry
from ble_scanner.core.cache import Device, DeviceCache
from ble_scanner.core.delta import Sent, changes, sent_of
from ble_scanner.core.record import Content
from tests.bench.simproc import scene_report

DEVICES: Final = 200
ROUNDS: Final = 10  # reports per timed pass: DEVICES * ROUNDS
REPEATS: Final = 15  # passes; the fastest counts (the machine is shared)


def _reports(rounds: int, new_content: bool) -> list[tuple[str, str, int, Content]]:
    out = []
    for r in range(rounds):
        for i in range(DEVICES):
            report = scene_report(i, r if new_content else 0, -60 - (r & 7))
            content = Content(
                report.name,
                report.tx_power,
                report.manufacturer_data,
                report.service_data,
                report.service_uuids,
            )
            out.append((report.address, report.address_type, report.rssi, content))
    return out


def _pass(
    reports: list[tuple[str, str, int, Content]], encode: Callable[[Device], object]
) -> float:
    """Seconds for one pass of ``reports`` through a warm cache, each then ``encode``d."""
    cache = DeviceCache(lost_timeout=60.0, max_size=2 * DEVICES)
    for address, address_type, rssi, content in reports[:DEVICES]:
        path = "/org/bluez/hci0/dev_" + address.replace(":", "_")
        device, *_ = cache.report(address, address_type, "hci0", path, rssi, content, 0.0, 0.0)
        device.learner.interval = 1.0  # learned, as in a running scene
        encode(device)
    wall = now = 1.0
    start = time.perf_counter()
    for address, address_type, rssi, content in reports:
        wall += 0.005
        now += 0.005
        path = "/org/bluez/hci0/dev_" + address.replace(":", "_")
        device, *_ = cache.report(address, address_type, "hci0", path, rssi, content, wall, now)
        encode(device)
    return time.perf_counter() - start


def _changed_items() -> Callable[[Device], object]:
    """``signals.py``'s changed-keys path for one subscriber: each report against the
    last one it got of the device."""
    held: dict[str, Sent] = {}

    def encode(device: Device) -> object:
        now = sent_of(device)
        before = held.get(device.address)
        held[device.address] = now
        return None if before is None else changed_entry(device, changes(before, now))

    return encode


def measure(rounds: int = ROUNDS, repeats: int = REPEATS) -> dict[str, float]:
    """µs per report of each case, the cache's own cost taken off."""
    new, same = _reports(rounds, new_content=True), _reports(rounds, new_content=False)
    cases: dict[
        str, tuple[list[tuple[str, str, int, Content]], Callable[[], Callable[..., object]]]
    ]
    cases = {
        "cache alone (new readings)": (new, lambda: lambda d: None),
        "cache alone (same content)": (same, lambda: lambda d: None),
        "record_entry, new reading": (new, lambda: record_entry),
        "record_entry, same content": (same, lambda: record_entry),
        "changed-keys item, new reading": (new, _changed_items),
    }
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(repeats):  # interleaved, so that a busy moment hits every case alike
        for name, (reports, encoder) in cases.items():
            best[name] = min(best[name], _pass(reports, encoder()))
    per = {name: seconds / len(cases[name][0]) * 1e6 for name, seconds in best.items()}
    alone = {
        True: per.pop("cache alone (new readings)"),
        False: per.pop("cache alone (same content)"),
    }
    return {name: us - alone["same content" not in name] for name, us in per.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    args = parser.parse_args()
    for name, us in measure(args.rounds, args.repeats).items():
        print(f"{us:6.2f} µs  {name}")


if __name__ == "__main__":
    main()
