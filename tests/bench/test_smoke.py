"""The benchmark's smoke mode still runs and reports every scenario (so it cannot rot)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.bench.runner import INGESTS, REPO, SCENARIOS, SCENES, SMOKE, result_keys

# The smoke run takes ~2 minutes on the 2-vCPU development VM at a load average
# of 20 (both ingests, the programs and the batched modes once); this leaves room.
SMOKE_TIMEOUT = 240


def test_smoke_run_reports_every_scenario(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "tests.bench", "--smoke", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    scenarios = result["scenarios"]
    assert set(scenarios) == set(result_keys(SCENARIOS, INGESTS, SMOKE))
    for name, figures in scenarios.items():
        assert isinstance(figures["met"], bool), name
    for ingest in INGESTS:
        assert scenarios[f"ingest/{ingest}"]["service_rate"] > 0
        assert scenarios[f"burst/{ingest}"]["service"]["received"] > 0
        assert scenarios[f"latency/{ingest}"]["200"]["service"]["n"] > 0
        for scene in SCENES:
            fanout = scenarios[f"fanout/{scene}/{ingest}"]
            assert min(fanout["service"]["callbacks"]) > 0  # every client heard its slice
            assert fanout["service"]["daemon_cpu_s"] >= 0 and fanout["ratio"] > 0
            assert fanout["complete"]  # every subscriber got every reading of its slice
    # The batched modes (or the service's refusal of them) and the programs, in the
    # counter scene on the first ingest: every program got every reading it wants.
    counter = scenarios[f"fanout/counter/{INGESTS[0]}"]
    assert set(counter["modes"]) == {"batch", "batch_changed"}
    for mode in counter["modes"].values():
        assert "refused" in mode or (mode["complete"] and isinstance(mode["met"], bool))
    programs = scenarios[f"programs/counter/{INGESTS[0]}"]
    for kind in ("bleak", "scannerclient"):
        assert programs[kind]["complete"] and min(programs[kind]["service"]["callbacks"]) > 0
        assert isinstance(programs[kind]["met"], bool) and programs[kind]["ratio"] > 0
    for ingest in INGESTS:
        batch = scenarios[f"burst/{ingest}"]["batch"]
        assert "refused" in batch or batch["service"]["received"] > 0
    assert scenarios["snapshot"]["devices"] > 0 and scenarios["snapshot"]["ratio"] > 0
    assert scenarios["memory"]["bytes_per_device"]
    loadcap = scenarios["loadcap"]
    for rate in loadcap["rates"].values():
        assert rate["capped"]["step"] >= 1  # it shed ...
        assert rate["capped"]["specific_devices"] == loadcap["wanted_devices"]  # ... and served
    feed = scenarios["feed"]
    assert feed["on"]["received"] > 0 and feed["received_while_off"] == 0
    assert "| scenario |" in done.stdout
