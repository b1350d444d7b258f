"""The benchmark's smoke mode still runs and reports every scenario (so it cannot rot).

The scenarios run in four groups, one test each, so that pytest-xdist runs them
side by side: one smoke run of everything takes ~75 s alone on the 2-vCPU
development VM and over 120 s beside the rest of the suite.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.bench.runner import INGESTS, REPO, SCENARIOS, SCENES, SMOKE, result_keys

# One group takes 15-25 s alone; this leaves room for a machine at a load of 20.
SMOKE_TIMEOUT = 150


def check_per_ingest(scenarios: dict[str, Any]) -> None:
    for ingest in INGESTS:
        assert scenarios[f"ingest/{ingest}"]["service_rate"] > 0
        assert scenarios[f"burst/{ingest}"]["service"]["received"] > 0
        latency = scenarios[f"latency/{ingest}"]["200"]
        assert latency["service"]["n"] > 0
        assert min(latency["cpu_us_per_report"].values()) > 0  # both processes measured
        batch = scenarios[f"burst/{ingest}"]["batch"]
        assert "refused" in batch or batch["service"]["received"] > 0


def check_fanout(scenarios: dict[str, Any]) -> None:
    for ingest in INGESTS:
        for scene in SCENES:
            fanout = scenarios[f"fanout/{scene}/{ingest}"]
            assert min(fanout["service"]["callbacks"]) > 0  # every client heard its slice
            assert fanout["service"]["daemon_cpu_s"] >= 0 and fanout["ratio"] > 0
            assert fanout["complete"]  # every subscriber got every reading of its slice
    # The batched modes (or the service's refusal of them), in the counter scene on
    # the first ingest.
    counter = scenarios[f"fanout/counter/{INGESTS[0]}"]
    assert set(counter["modes"]) == {"batch", "batch_changed"}
    for mode in counter["modes"].values():
        assert "refused" in mode or (mode["complete"] and isinstance(mode["met"], bool))


def check_programs(scenarios: dict[str, Any]) -> None:
    programs = scenarios[f"programs/counter/{INGESTS[0]}"]
    for kind in ("bleak", "scannerclient"):  # every program got every reading it wants
        assert programs[kind]["complete"] and min(programs[kind]["service"]["callbacks"]) > 0
        assert isinstance(programs[kind]["met"], bool) and programs[kind]["ratio"] > 0


def check_service(scenarios: dict[str, Any]) -> None:
    assert scenarios["snapshot"]["devices"] > 0 and scenarios["snapshot"]["ratio"] > 0
    assert scenarios["memory"]["bytes_per_device"]
    assert scenarios["startup"]
    loadcap = scenarios["loadcap"]
    for rate in loadcap["rates"].values():
        assert rate["capped"]["step"] >= 1  # it shed ...
        assert rate["capped"]["specific_devices"] == loadcap["wanted_devices"]  # ... and served
    feed = scenarios["feed"]
    assert feed["on"]["received"] > 0 and feed["received_while_off"] == 0


GROUPS: dict[str, tuple[tuple[str, ...], Callable[[dict[str, Any]], None]]] = {
    "per-ingest": (("ingest", "burst", "latency"), check_per_ingest),
    "fanout": (("fanout",), check_fanout),
    "programs": (("programs",), check_programs),
    "service": (("memory", "snapshot", "startup", "loadcap", "feed"), check_service),
}


def test_the_groups_cover_every_scenario() -> None:
    covered = [name for names, _ in GROUPS.values() for name in names]
    assert sorted(covered) == sorted(SCENARIOS)


@pytest.mark.slow
@pytest.mark.timeout(SMOKE_TIMEOUT + 30)
@pytest.mark.parametrize("group", list(GROUPS))
def test_smoke_run_reports_every_scenario(group: str, tmp_path: Path) -> None:
    names, check = GROUPS[group]
    out = tmp_path / "bench.json"
    only = [arg for name in names for arg in ("--only", name)]
    # Its own session, so that a run out of time takes its bus and simulator with it.
    bench = subprocess.Popen(
        [sys.executable, "-m", "tests.bench", "--smoke", *only, "--json", str(out)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = bench.communicate(timeout=SMOKE_TIMEOUT)
    finally:
        if bench.poll() is None:
            os.killpg(bench.pid, signal.SIGKILL)
            bench.communicate()
    assert bench.returncode == 0, stderr[-2000:]
    result = json.loads(out.read_text())
    scenarios = result["scenarios"]
    assert set(scenarios) == set(result_keys(names, INGESTS, SMOKE))
    for name, figures in scenarios.items():
        assert isinstance(figures["met"], bool), name
    check(scenarios)
    assert "| scenario |" in stdout
