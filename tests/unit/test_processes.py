"""The supervisor (config/processes.py): its pure rules (restart backoff, exit statuses) and its
restart loop on children that crash at once."""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import time
from pathlib import Path

from config.processes import MAX_BACKOFF_S, exit_status, restart_delay

ROOT = Path(__file__).resolve().parents[2]


def test_first_restart_is_immediate_then_backoff_doubles_to_a_cap() -> None:
    assert [restart_delay(n) for n in range(1, 8)] == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0]
    assert restart_delay(8) == MAX_BACKOFF_S
    assert restart_delay(1000) == MAX_BACKOFF_S


def test_exit_status_counts_a_signal_death_as_a_failure() -> None:
    """A child killed by SIGKILL (-9) must not read as success in the worst-status fold."""
    assert exit_status(0) == 0
    assert exit_status(None) == 0
    assert exit_status(3) == 3
    assert exit_status(-9) == 137
    assert max(exit_status(c) for c in (0, -9)) == 137


CRASHER = """
import os, signal, sys, time
from config.processes import run_processes

def crash_four_times(path, ready):
    with open(path, "a") as f:
        f.write(f"{time.monotonic()}\\n")
    with open(path) as f:
        if len(f.read().split()) <= 4:
            sys.exit(3)
    ready()
    signal.pause()  # the fifth run serves until SIGTERM (default action: it ends)

sys.exit(run_processes("test", crash_four_times, [(sys.argv[1] + ".0",), (sys.argv[1] + ".1",)]))
"""


def test_a_crash_looping_child_is_restarted_with_backoff(tmp_path: Path) -> None:
    """Children that exit at once are started again at once, then after 0.5, 1, 2 s: the
    recorded start times never come sooner than the backoff. SIGTERM ends it all, and a child
    that the forwarded SIGTERM itself ended counts as stopped cleanly (exit 0)."""
    base = tmp_path / "starts"
    proc = subprocess.Popen([sys.executable, "-c", CRASHER, str(base)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while _starts(base, 0) < 5 or _starts(base, 1) < 5:
            assert time.monotonic() < deadline, "the children were not restarted"
            assert proc.poll() is None
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for slot in (0, 1):
        starts = [float(t) for t in Path(f"{base}.{slot}").read_text().split()]
        assert len(starts) == 5
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        for n, gap in enumerate(gaps, start=1):
            assert gap >= restart_delay(n), (slot, gaps)


def _starts(base: Path, slot: int) -> int:
    path = Path(f"{base}.{slot}")
    return len(path.read_text().split()) if path.exists() else 0
