"""`make demo` as a user runs it: a live stream appears, and it cleans up after itself."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_demo_streams_the_scene_and_cleans_up() -> None:
    env = dict(os.environ)
    env.pop("DBUS_SYSTEM_BUS_ADDRESS", None)
    out = subprocess.run(
        [sys.executable, "-m", "ble_scanner.testing.demo", "--duration", "6", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert out.returncode == 0, out.stderr
    bus_dir = re.search(r"unix:path=(/tmp/blebus-[^/]+)/bus", out.stdout)
    assert bus_dir is not None, out.stdout
    assert not os.path.exists(bus_dir.group(1)), "the private bus was left behind"
    events = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    companies = {
        company
        for event in events
        if event.get("event") == "discovered"
        for company in event.get("manufacturer_data", {})
    }
    # Victron instant readout (0x02E1 = 737) and Ruuvi (0x0499 = 1177) are in the scene.
    assert {"737", "1177"} <= companies, companies
    assert "stopped and cleaned up" in out.stdout
