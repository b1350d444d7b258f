"""The skip guard (tests/allowed_skips.py): a skip not on the allow-list fails the run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

LISTED = "listed for this test only"
PYTEST = ["-m", "pytest", "-p", "tests.allowed_skips", "-p", "no:cacheprovider", "-q", "-rs"]
FILES = {
    "pytest.ini": (
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
        "markers =\n    bluez: the real-BlueZ tier\n"
    ),
    # The real list may be empty; this run adds one entry to it.
    "conftest.py": (
        "from tests import allowed_skips\n"
        f"allowed_skips.ALLOWED_SKIPS[{LISTED!r}] = 'the guard checks its own allow-list'\n"
    ),
    "test_listed.py": (
        "import pytest\n"
        f"@pytest.mark.skipif(True, reason={LISTED!r})\n"
        "def test_listed_skip():\n    pass\n"
        "def test_passes():\n    assert True\n"
    ),
    # The real-BlueZ tier is held to the list too.
    "test_bluez_tier.py": (
        "import pytest\n"
        "@pytest.mark.bluez\n"
        "def test_real_bluez_tier_skips():\n"
        "    pytest.skip('the guest cannot do it')\n"
    ),
    "test_in_body.py": (
        "import pytest\ndef test_skips_in_its_body():\n    pytest.skip('tool not installed')\n"
    ),
    "test_whole_module.py": (
        "import pytest\npytest.skip('no interpreter here', allow_module_level=True)\n"
    ),
}


def run_pytest(where: Path, *files: str) -> subprocess.CompletedProcess[str]:
    for name, text in FILES.items():
        (where / name).write_text(text)
    return subprocess.run(
        [sys.executable, *PYTEST, *files],
        cwd=where,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_listed_skip_passes(tmp_path: Path) -> None:
    out = run_pytest(tmp_path, "test_listed.py")
    assert out.returncode == 0, out.stdout
    assert "1 passed, 1 skipped" in out.stdout
    assert "allow-list" not in out.stdout


def test_skips_not_on_the_allow_list_fail_the_run_and_are_named(tmp_path: Path) -> None:
    out = run_pytest(
        tmp_path, "test_listed.py", "test_in_body.py", "test_whole_module.py", "test_bluez_tier.py"
    )
    assert out.returncode == 1, out.stdout
    start = out.stdout.index("skips not on the allow-list")
    summary = out.stdout[start : out.stdout.index("short test summary info")]
    assert "test_in_body.py::test_skips_in_its_body: tool not installed" in summary
    assert "test_whole_module.py: no interpreter here" in summary
    assert "test_bluez_tier.py::test_real_bluez_tier_skips: the guest cannot do it" in summary
    assert LISTED not in summary
    assert "3 test(s) skipped for a reason not on the allow-list" in summary
