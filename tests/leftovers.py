"""Processes the test run started and left running.

The test process makes itself a *child subreaper* (Linux ``PR_SET_CHILD_SUBREAPER``) as soon
as the test session is configured: a process it started, directly or through any number of
intermediate processes, is re-parented to it instead of to init when its parent dies, so
every process the run started stays in the test process's own tree for good. That tree is the
whole check: nothing outside it (the developer's own servers, another checkout's test run) can
be reported, and nothing the run started can escape it by orphaning itself.

:class:`Check` is the pytest plugin (tests/conftest.py registers it). In a pytest-xdist run each
worker checks its own tree once its session fixtures have stopped and hands what it found to
the controller, which also checks its own tree after its workers have exited (a crashed
worker's orphans are re-parented to it) and fails the run for both.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import time
from collections.abc import Generator
from typing import Any

import psutil
import pytest

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


def sweep(grace_s: float = 3.0) -> list[str]:
    """Describe the descendants still running after ``grace_s``, then kill them."""
    left = leftovers(grace_s)
    lines = [describe(p) for p in left]
    kill(left)
    return lines


#: The key of a worker's findings in pytest-xdist's ``workeroutput``.
WORKER_OUTPUT_KEY = "lectern_leftovers"


class Check:
    """pytest plugin: the run fails when a process it started is still running at its end,
    and those processes are ended by pid."""

    def __init__(self) -> None:
        self.from_workers: list[str] = []

    def pytest_configure(self, config: pytest.Config) -> None:
        # Before any test starts a process: every descendant stays in this process's tree.
        become_subreaper()

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        """pytest-xdist controller: a worker finished (or crashed); keep what it found."""
        output = getattr(node, "workeroutput", None) or {}
        self.from_workers.extend(output.get(WORKER_OUTPUT_KEY, []))

    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> Generator[None, None, None]:
        """After every other plugin's part (the session fixtures' teardown; in an xdist
        controller, its workers' exit), before the terminal summary is written."""
        yield
        found = sweep()
        config = session.config
        if hasattr(config, "workerinput"):  # an xdist worker: the controller reports
            config.workeroutput[WORKER_OUTPUT_KEY] = found  # type: ignore[attr-defined]
            return
        found = self.from_workers + found
        if not found:
            return
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line("")
            reporter.write_sep("=", "processes left running by the tests (run failed)", red=True)
            for line in found:
                reporter.write_line(line)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
