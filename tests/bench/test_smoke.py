"""The benchmark's smoke mode still runs and reports every scenario (so it cannot rot)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.bench.runner import REPO, SCENARIOS

# The smoke run takes ~27 s on the 2-vCPU development VM; this leaves room for load.
SMOKE_TIMEOUT = 90


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
    assert set(result["scenarios"]) == set(SCENARIOS)
    for name, figures in result["scenarios"].items():
        assert isinstance(figures["met"], bool), name
    assert result["scenarios"]["ingest"]["service_rate"] > 0
    assert result["scenarios"]["memory"]["bytes_per_device"]
    loadcap = result["scenarios"]["loadcap"]
    for rate in loadcap["rates"].values():
        assert rate["capped"]["step"] >= 1  # it shed ...
        assert rate["capped"]["specific_devices"] == loadcap["wanted_devices"]  # ... and served
    feed = result["scenarios"]["feed"]
    assert feed["on"]["received"] > 0 and feed["received_while_off"] == 0
    assert "| scenario |" in done.stdout
