"""tests/wire_cost.py measures what it says: every encoding carries the same reports."""

from __future__ import annotations

from tests.wire_cost import ITEMS, encodings, per_report, unmarshal


def test_every_encoding_carries_the_same_readings() -> None:
    bodies = [unmarshal(data).body for data, _ in encodings().values()]
    one, full, changed, plain = bodies
    readings = [(address, record["ManufacturerData"].value) for address, record in full[0]]
    assert len(readings) == ITEMS
    assert (one[0], one[1]["ManufacturerData"].value) == readings[0]
    assert [(a, keys["ManufacturerData"].value) for a, keys in changed[0]] == readings
    assert {k for _, keys in changed[0] for k in keys} == {"ManufacturerData", "LastSeen", "Rssi"}
    assert [(a, data) for a, data, _time, _rssi in plain[0]] == readings
    assert [(r["LastSeen"].value, r["Rssi"].value) for _, r in full[0]] == [
        (time, rssi) for _, _, time, rssi in plain[0]
    ]


def test_the_cost_is_a_time_per_report() -> None:
    data, reports = next(iter(encodings().values()))
    assert per_report(data, reports, seconds=0.01) > 0
