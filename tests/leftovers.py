"""Processes the test run started and left running.

The test process makes itself a *child subreaper* (Linux ``PR_SET_CHILD_SUBREAPER``) as soon
as the test session is configured: a process it started, directly or through any number of
intermediate processes, is re-parented to it instead of to init when its parent dies, so
every process the run started stays in the test process's own tree for good. That tree is the
whole check: nothing outside it (the developer's own servers, another checkout's test run) can
be reported, and nothing the run started can escape it by orphaning itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import time

import psutil

PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Adopt this process's orphaned descendants; False where the platform cannot."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0


def _reap_zombies(me: psutil.Process) -> None:
    """Collect exited children nobody waited for (adopted orphans end up here)."""
    for child in me.children():
        with contextlib.suppress(psutil.Error, ChildProcessError):
            if child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, os.WNOHANG)


def living_descendants() -> list[psutil.Process]:
    """This process's descendants still running (zombies are reaped, not counted)."""
    me = psutil.Process()
    _reap_zombies(me)
    alive = []
    for proc in me.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
    return alive


def leftovers(grace_s: float = 3.0) -> list[psutil.Process]:
    """Descendants still running after ``grace_s`` (time for ones already stopping)."""
    deadline = time.monotonic() + grace_s
    while True:
        alive = living_descendants()
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.1)


def describe(proc: psutil.Process) -> str:
    try:
        return f"pid {proc.pid}: {' '.join(proc.cmdline())[:200]}"
    except psutil.Error:
        return f"pid {proc.pid}"


def kill(procs: list[psutil.Process]) -> None:
    """SIGKILL each by pid, then reap: a failed run must not leave them behind either."""
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(procs, timeout=5)
    _reap_zombies(psutil.Process())
