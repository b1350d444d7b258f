"""tests/bench/record_cost.py runs against the service's encoders as they are."""

from __future__ import annotations

import math

from tests.bench.record_cost import measure


def test_each_case_is_a_time_per_report() -> None:
    figures = measure(rounds=2, repeats=1)
    assert set(figures) == {
        "record_entry, new reading",
        "record_entry, same content",
        "changed-keys item, new reading",
    }
    assert all(math.isfinite(us) for us in figures.values())
