"""The end-of-run check for processes the tests left running (tests/leftovers.py)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests import leftovers


def _orphan(command: str) -> psutil.Process:
    """Run ``command`` in the background of a shell that exits at once: an orphan."""
    out = subprocess.run(
        ["sh", "-c", f"{command} >/dev/null 2>&1 & echo $!"],
        capture_output=True,
        text=True,
        check=True,
    )
    return psutil.Process(int(out.stdout))


def test_an_orphaned_grandchild_stays_in_the_tree_and_is_found() -> None:
    """Its parent exits; it is adopted by the test process (not init), so the check sees it,
    even when it started a session of its own."""
    orphans = [_orphan("sleep 60"), _orphan("setsid sleep 60")]
    try:
        # Re-parenting happens as the shell exits, before run() has reaped it.
        assert [p.ppid() for p in orphans] == [os.getpid(), os.getpid()]
        found = {p.pid for p in leftovers.living_descendants()}
        assert {p.pid for p in orphans} <= found
    finally:
        leftovers.kill(orphans)
    assert not {p.pid for p in orphans} & {p.pid for p in leftovers.living_descendants()}


def test_other_processes_are_not_ours() -> None:
    """Only descendants count: this process's parent (the shell or CI runner) and init never."""
    ours = {p.pid for p in leftovers.living_descendants()}
    assert os.getppid() not in ours and 1 not in ours


LEAKY_TEST = """
import pathlib
import subprocess


def test_leaves_a_process_behind():
    proc = subprocess.Popen(["sleep", "61.25"])
    pathlib.Path("leaked.pid").write_text(str(proc.pid))


def test_passes():
    pass
"""

CONFTEST = """
from tests import leftovers


def pytest_configure(config):
    config.pluginmanager.register(leftovers.Check(), "lectern-leftovers")
"""

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("workers", ["0", "2"], ids=["serial", "xdist"])
def test_a_run_that_leaves_a_process_running_fails_and_ends_it(
    tmp_path: Path, workers: str
) -> None:
    """Serially and under pytest-xdist (where a worker's finding travels to the controller):
    the run's exit status is 1 though every test passed, the process is named, and it is gone
    afterwards."""
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_leaky.py").write_text(LEAKY_TEST)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "CI"))}
    # Only the plugins needed: the installed ones (playwright, schemathesis...) cost seconds.
    env.update(PYTHONPATH=str(ROOT), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
    args = ["-q", "-p", "no:cacheprovider", "-p", "xdist.plugin", "-n", workers]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "2 passed" in out, out
    assert "processes left running by the tests (run failed)" in out, out
    assert "sleep 61.25" in out, out
    pid = int((tmp_path / "leaked.pid").read_text())
    with contextlib.suppress(psutil.NoSuchProcess):  # gone, or a zombie (no command line)
        assert psutil.Process(pid).cmdline() != ["sleep", "61.25"], "still running"
