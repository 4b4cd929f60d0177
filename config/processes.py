"""Running N copies of a process role (gateway, workers) under one parent."""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable
from typing import Any

from config.servers import die_with_parent


def _child(target: Callable[..., None], args: tuple[Any, ...]) -> None:
    # A parent killed with SIGKILL must not leave its children serving on.
    die_with_parent()
    target(*args)


def run_processes(name: str, target: Callable[..., None], args: list[tuple[Any, ...]]) -> int:
    """Run ``target(*a)`` for each ``a`` in ``args``: in this process when there is one, else
    in spawned children. SIGTERM/SIGINT are forwarded to every child (each shuts down
    gracefully); returns the worst exit code once all have exited.

    ``target`` must live in a regular module, not a package's ``__main__``: ``spawn`` finds it
    again in the child by module and name.
    """
    if len(args) == 1:
        target(*args[0])
        return 0
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=target, args=a, name=f"{name}-{i}") for i, a in enumerate(args)]
    for proc in procs:
        proc.start()

    def forward(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.pid and proc.is_alive():
                os.kill(proc.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for proc in procs:
        proc.join()
    return max((proc.exitcode or 0) for proc in procs)
