"""Running N copies of a process role (gateway, workers) under one supervising parent.

Guarantees when N > 1 (a single copy runs in the calling process, supervised by whatever
started it: systemd, Kubernetes, ``make run``):

* **Restart.** A child that exits while the parent is not stopping, whatever its exit status,
  is started again after :func:`restart_delay` (at once the first time; a child that keeps
  dying within ``STABLE_S`` of its start waits 0.5 s, then 1, 2, ... up to 30 s). Each restart
  is logged as an error and counted in ``lectern_<component>_process_restarts_total``.
  Children are forked from the parent, which has already imported the role's code, so a
  replacement serves in well under a second instead of paying a fresh interpreter's imports.
* **No orphans.** A child dies with its parent on Linux: PR_SET_PDEATHSIG delivers SIGKILL, and
  a child whose parent died before that took effect (its parent pid is no longer the
  supervisor's) exits at once. SIGKILL, not a drain: a parent that dies without forwarding a
  stop was itself killed hard and a replacement may already be starting; clients resume
  elsewhere by cursor and unacknowledged jobs are reclaimed, so nothing is lost, and the
  children are gone at once rather than after a drain of unknown length. Draining is what
  SIGTERM to the parent is for.
* **Drain.** SIGTERM/SIGINT are forwarded to every child (each shuts down gracefully) and no
  child starts after that; :func:`run_processes` returns once all children have exited, with
  the worst status of their last runs (a child killed by signal ``s`` counts as ``128 + s``,
  except one ended by the forwarded signal itself, before it set up its own handling: it had
  nothing to drain and counts as stopped cleanly).
* **Observable.** With a metrics port, the parent serves ``/metrics``: the restart counter,
  ``lectern_<component>_processes`` (the copies it runs) and
  ``lectern_<component>_processes_ready`` (children that reported serving since their start).

The parent runs no thread (its ``/metrics`` is answered from the supervision loop), so forking
it never copies a lock that another thread holds.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import HTTPServer
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.exposition import MetricsHandler

from config.servers import die_with_parent

log = logging.getLogger("lectern.processes")

#: A child that ran this long before exiting is restarted at once (its backoff starts over).
STABLE_S = 30.0
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
#: The supervisor's longest sleep: how stale the readiness gauge may get.
POLL_S = 0.2
#: The loop answers one scrape at a time: one that sends nothing is dropped after this long.
SCRAPE_TIMEOUT_S = 1.0


def restart_delay(quick_exits: int) -> float:
    """Seconds to wait before restarting a child that has now exited ``quick_exits`` times in
    a row, each within ``STABLE_S`` of its start (a longer run resets the count to 1)."""
    if quick_exits <= 1:
        return 0.0
    return float(min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (quick_exits - 2)))


def exit_status(exitcode: int | None) -> int:
    """A process's exit code as a shell reports it: death by signal ``s`` is ``128 + s``."""
    if exitcode is None:
        return 0
    return 128 - exitcode if exitcode < 0 else exitcode


class Ready:
    """Handed to each copy as its last argument: call it once the copy serves (it writes one
    byte to a pipe the supervisor watches)."""

    def __init__(self, conn: Connection | None = None) -> None:
        self._conn = conn

    def __call__(self) -> None:
        if self._conn is not None:
            self._conn.send_bytes(b"1")
            self._conn.close()
            self._conn = None


class _ScrapeHandler(MetricsHandler):
    timeout = SCRAPE_TIMEOUT_S  # a scrape that sends nothing is dropped after this long


@dataclass
class _Slot:
    index: int
    args: tuple[Any, ...]
    proc: BaseProcess | None = None
    ready: Connection | None = None  # the read end of the running child's Ready pipe
    is_ready: bool = False
    started: float = 0.0
    quick_exits: int = 0
    restart_at: float | None = None
    last_status: int = 0


class _Metrics:
    def __init__(self, component: str, count: int) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.restarts = Counter(
            f"lectern_{component}_process_restarts_total",
            "Child processes the supervisor started again after an unexpected exit, by slot.",
            ["index"],
            registry=self.registry,
        )
        self.processes = Gauge(
            f"lectern_{component}_processes",
            "Child processes the supervisor runs.",
            registry=self.registry,
        )
        self.ready = Gauge(
            f"lectern_{component}_processes_ready",
            "Child processes alive that reported serving since their start.",
            registry=self.registry,
        )
        self.processes.set(count)
        for index in range(count):
            self.restarts.labels(str(index))


class _Supervisor:
    def __init__(
        self, component: str, target: Callable[..., None], args: list[tuple[Any, ...]]
    ) -> None:
        self.component = component
        self.target = target
        self.ctx = multiprocessing.get_context("fork")
        self.pid = os.getpid()
        self.slots = [_Slot(i, a) for i, a in enumerate(args)]
        self.metrics = _Metrics(component, len(args))
        self.http: HTTPServer | None = None
        self.stopping = False
        self.stop_signal = 0

    def serve_metrics(self, host: str, port: int) -> None:
        handler = _ScrapeHandler.factory(self.metrics.registry)
        try:
            self.http = HTTPServer((host, port), handler)
        except OSError as exc:
            # Supervision matters more than its metrics: keep running without them.
            log.error("supervisor metrics port %s unavailable: %s", port, exc)
            return
        # Accept only when the loop saw a connection waiting, and never block on it.
        self.http.socket.setblocking(False)
        self.http.timeout = 0

    # -- in the child -------------------------------------------------------------------------

    def _child(self, slot: _Slot, ready: Ready) -> None:
        die_with_parent(signal.SIGKILL)
        if os.getppid() != self.pid:
            os._exit(1)  # the parent died before the death signal was armed
        # Inherited from the parent: its signal handlers and its metrics socket.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if self.http is not None:
            self.http.socket.close()
        for other in self.slots:
            if other.ready is not None:
                other.ready.close()
        self.target(*slot.args, ready)

    # -- in the parent ------------------------------------------------------------------------

    def _start(self, slot: _Slot) -> None:
        reader, writer = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(
            target=self._child, args=(slot, Ready(writer)), name=f"{self.component}-{slot.index}"
        )
        proc.start()
        writer.close()  # the child holds its own copy
        slot.proc, slot.ready, slot.is_ready = proc, reader, False
        slot.started, slot.restart_at = time.monotonic(), None
        if self.stopping and proc.pid:  # the stop arrived while it was starting
            os.kill(proc.pid, self.stop_signal)

    def _forward(self, signum: int, _frame: object) -> None:
        self.stopping, self.stop_signal = True, signum
        for slot in self.slots:
            if slot.proc is not None and slot.proc.pid and slot.proc.exitcode is None:
                os.kill(slot.proc.pid, signum)

    def _reap(self, slot: _Slot, now: float) -> None:
        assert slot.proc is not None
        code = slot.proc.exitcode
        stopped = self.stopping and code == -self.stop_signal
        slot.last_status = 0 if stopped else exit_status(code)
        slot.proc, slot.is_ready = None, False
        if slot.ready is not None:
            slot.ready.close()
            slot.ready = None
        if self.stopping:
            return
        slot.quick_exits = slot.quick_exits + 1 if now - slot.started < STABLE_S else 1
        delay = restart_delay(slot.quick_exits)
        slot.restart_at = now + delay
        log.error(
            "%s process %d exited unexpectedly (exit code %s); restarting in %.1fs",
            self.component,
            slot.index,
            code,
            delay,
        )

    def _check_ready(self, slot: _Slot) -> None:
        if slot.ready is None or not slot.ready.poll():
            return
        with contextlib.suppress(EOFError):  # exited without reporting: reaped next turn
            slot.is_ready = slot.ready.recv_bytes() == b"1"
        slot.ready.close()
        slot.ready = None

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._forward)
        signal.signal(signal.SIGINT, self._forward)
        for slot in self.slots:
            self._start(slot)
        try:
            return self._loop()
        finally:
            if self.http is not None:
                self.http.server_close()

    def _loop(self) -> int:
        while True:
            now = time.monotonic()
            for slot in self.slots:
                if slot.proc is not None and slot.proc.exitcode is not None:
                    self._reap(slot, now)
                if slot.restart_at is not None and self.stopping:
                    slot.restart_at = None
                elif slot.restart_at is not None and slot.restart_at <= now:
                    self._start(slot)
                    self.metrics.restarts.labels(str(slot.index)).inc()
                self._check_ready(slot)
            alive = [s for s in self.slots if s.proc is not None]
            self.metrics.ready.set(sum(1 for s in alive if s.is_ready))
            if self.stopping and not alive:
                return max(s.last_status for s in self.slots)
            due = [s.restart_at for s in self.slots if s.restart_at is not None]
            waitables: list[Any] = [s.proc.sentinel for s in alive if s.proc is not None]
            waitables += [s.ready for s in alive if s.ready is not None]
            if self.http is not None:
                waitables.append(self.http.socket)
            woken = multiprocessing.connection.wait(
                waitables, min([POLL_S, *(max(0.0, t - now) for t in due)])
            )
            if self.http is not None and self.http.socket in woken:
                self.http.handle_request()


def run_processes(
    component: str,
    target: Callable[..., None],
    args: list[tuple[Any, ...]],
    *,
    metrics_host: str = "127.0.0.1",
    metrics_port: int = 0,
) -> int:
    """Run ``target(*a, ready)`` for each ``a`` in ``args``: in this process when there is one
    (``ready`` does nothing), else in supervised children (see the module docstring), with the
    supervisor's ``/metrics`` on ``metrics_port`` unless it is 0.
    """
    if len(args) == 1:
        target(*args[0], Ready())
        return 0
    supervisor = _Supervisor(component, target, args)
    if metrics_port:
        supervisor.serve_metrics(metrics_host, metrics_port)
    return supervisor.run()
