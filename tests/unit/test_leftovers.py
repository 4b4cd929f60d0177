"""The end-of-run check for processes the tests left running (tests/leftovers.py)."""

from __future__ import annotations

import os
import subprocess

import psutil

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
