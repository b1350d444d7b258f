"""The leftover-process check (tests/leftovers.py) sees what a test leaves behind."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from tests.helpers import wait_until
from tests.leftovers import project_processes

pytest_plugins = ["pytester"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


async def test_a_child_and_an_orphan_carrying_the_mark_are_the_projects() -> None:
    child = subprocess.Popen(["sleep", "60"])
    # An orphan: its parent shell exits at once, init adopts it; it keeps the mark.
    out = subprocess.run(
        ["sh", "-c", "sleep 61 >/dev/null 2>&1 & echo $!"], capture_output=True, text=True
    )
    orphan = int(out.stdout)
    try:
        found = project_processes()
        assert child.pid in found and found[child.pid] == "sleep 60"
        assert orphan in found and found[orphan] == "sleep 61"
        assert os.getpid() not in found
    finally:
        child.kill()
        child.wait()
        os.kill(orphan, signal.SIGKILL)
    await wait_until(lambda: orphan not in project_processes(), what="the orphan gone")
    assert child.pid not in project_processes()


def test_the_fixture_fails_a_test_that_leaves_a_process(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", ROOT)
    pytester.makeconftest("from tests.leftovers import no_leftover_processes  # noqa: F401\n")
    pytester.makepyfile(
        """
        import subprocess

        def test_clean():
            subprocess.run(["true"], check=True)

        def test_leaves_one():
            subprocess.Popen(["sleep", "60"])
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        ["*ERROR at teardown of test_leaves_one*", "*left 1 process(es) running*", "*: sleep 60"]
    )
