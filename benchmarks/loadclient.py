"""A multi-process raw load client for WebSocket, SSE and Socket.IO servers on loopback.

The client must not be the bottleneck of the benchmark it drives, so it uses no client
library: each connection is an ``asyncio.Protocol`` on uvloop (``benchmarks.loadworker``) over
the pure parsers of ``benchmarks.loadproto``. Connections are spread over several spawned worker
processes (at most ``max_per_process`` each, under the 20,000 open-file limit) and over several
source addresses 127.0.0.2, 127.0.0.3, ... so that one ephemeral port range (~28k ports per
source address) is not a ceiling.

The parent drives the workers in phases over pipes::

    cfg = ClientConfig(port=8080, connections=20_000, path="/ws?token={token}", tokens=(jwt,))
    async with ClientPool(cfg) as pool:               # spawns the workers
        connected = await pool.connect()              # ConnectReport: connected, failed, rate
        await pool.hold(10)                           # idle; PoolStats counts closes, if any
        await pool.reset()                            # zero counters and latency samples
        await trigger_broadcast(events=20)            # however the server under test does it
        delivery = await pool.expect(20, timeout_s=60)  # DeliveryReport: delivered, latency
    # leaving the block closes every socket and joins the workers

Workers are started with the ``spawn`` method, so a script that uses the pool must guard its
entry point with ``if __name__ == "__main__":`` (or run as ``python -m``).

Latency is the receive time minus the ``"sent": <unix time>`` found in each event payload
(``extract="sent"``; ``"msgpack"`` for MessagePack binary frames; ``"count"`` counts every
message and measures nothing). ``gateway_rss_kb`` and ``cpu_seconds`` measure the server
processes under test from ``/proc``. Load may only target 127.0.0.0/8.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import multiprocessing
import os
import random
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any

from benchmarks.loadproto import LatencySummary, percentile, summarize
from benchmarks.loadworker import ClientConfig, worker_main

__all__ = [
    "ClientConfig",
    "ClientPool",
    "ConnectReport",
    "DeliveryReport",
    "LatencySummary",
    "LoadClientError",
    "PoolStats",
    "cpu_seconds",
    "gateway_rss_kb",
    "percentile",
    "process_tree",
    "run_clients",
    "summarize",
    "wait_for_port",
]


class LoadClientError(Exception):
    """A worker process died, answered an error or did not answer in time."""


@dataclass(frozen=True)
class ConnectReport:
    """The connect phase: how many connected, how fast, and why the others failed."""

    requested: int
    connected: int
    failed: int
    errors: dict[str, int]
    duration_s: float
    rate_per_s: float
    connect_ms: LatencySummary
    client_cpu_s: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "requested": self.requested,
            "connected": self.connected,
            "failed": self.failed,
            "errors": self.errors,
            "duration_s": self.duration_s,
            "rate_per_s": self.rate_per_s,
            "connect_ms": self.connect_ms.as_dict(),
            "client_cpu_s": self.client_cpu_s,
        }


@dataclass(frozen=True)
class DeliveryReport:
    """Events received since the last ``reset``, measured when every open connection had
    ``per_connection`` of them or the timeout passed (``timed_out``)."""

    per_connection: int
    connections: int
    complete: int
    delivered: int
    timed_out: bool
    reset_at: float
    first_at: float
    last_at: float
    latency: LatencySummary
    client_cpu_s: float
    client_cpu_by_process: list[float]
    closes: dict[str, int]
    open_after: int
    samples_ms: list[float] = field(repr=False)

    @property
    def expected(self) -> int:
        return self.per_connection * self.connections

    @property
    def duration_s(self) -> float:
        """From the first event received to the last, over all connections."""
        return max(0.0, self.last_at - self.first_at) if self.first_at else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "per_connection": self.per_connection,
            "connections": self.connections,
            "complete": self.complete,
            "expected": self.expected,
            "delivered": self.delivered,
            "timed_out": self.timed_out,
            "duration_s": self.duration_s,
            "latency_ms": self.latency.as_dict(),
            "client_cpu_s": self.client_cpu_s,
            "client_cpu_by_process": self.client_cpu_by_process,
            "closes": self.closes,
            "open_after": self.open_after,
        }


@dataclass(frozen=True)
class PoolStats:
    """Totals since the workers started; ``client_cpu_s`` is the workers' user+sys time."""

    open: int
    connected_total: int
    failed_total: int
    errors: dict[str, int]
    closes: dict[str, int]
    messages: int
    bytes_in: int
    client_cpu_s: float
    client_cpu_by_process: list[float]
    pids: list[int]


def _merge_counts(dicts: Iterable[dict[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for d in dicts:
        total.update(d)
    return dict(total)


def _merge_samples(replies: list[dict[str, Any]], cap: int) -> list[float]:
    """One sample of at most about ``cap`` latencies, each worker weighted by what it saw."""
    arrays = []
    for reply in replies:
        values = array.array("d")
        values.frombytes(reply["samples"])
        arrays.append((values, reply["seen"]))
    if sum(len(values) for values, _ in arrays) <= cap:
        return [v for values, _ in arrays for v in values]
    seen_total = sum(seen for _, seen in arrays) or 1
    out: list[float] = []
    for values, seen in arrays:
        k = min(len(values), round(cap * seen / seen_total))
        out.extend(random.sample(list(values), k))
    return out


class ClientPool:
    """The worker processes of one load run and the phases the parent drives them through.

    Every method is bounded in time; a worker that dies or does not answer raises
    ``LoadClientError``. ``close`` (or leaving ``async with``) always reaps the workers.
    """

    def __init__(self, cfg: ClientConfig) -> None:
        cfg.validate()
        self.cfg = cfg
        self.connect_report: ConnectReport | None = None
        self._procs: list[BaseProcess] = []
        self._pipes: list[Connection] = []
        self._queues: list[asyncio.Queue[tuple[str, Any]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]

    async def __aenter__(self) -> ClientPool:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self, timeout_s: float = 60.0) -> None:
        """Spawn the worker processes and wait until each is listening for commands."""
        ctx = multiprocessing.get_context("spawn")
        self._loop = asyncio.get_running_loop()
        try:
            for k, indices in enumerate(self.cfg.slices()):
                parent, child = ctx.Pipe()
                proc = ctx.Process(
                    target=worker_main,
                    args=(self.cfg, indices, child),
                    name=f"loadclient-{k}",
                    daemon=True,
                )
                proc.start()
                child.close()
                self._procs.append(proc)
                self._pipes.append(parent)
                queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
                self._queues.append(queue)
                threading.Thread(
                    target=self._read_replies, args=(parent, queue), daemon=True
                ).start()
            await self._gather("ready", timeout_s)
        except BaseException:
            await self.close()
            raise

    def _read_replies(self, pipe: Connection, queue: asyncio.Queue[tuple[str, Any]]) -> None:
        """A thread per worker: blocking reads, so large replies need no event loop reader."""
        assert self._loop is not None
        loop = self._loop
        while True:
            try:
                message = pipe.recv()
            except (EOFError, OSError):
                with contextlib.suppress(RuntimeError):  # RuntimeError: the loop is closed
                    loop.call_soon_threadsafe(queue.put_nowait, ("error", "the worker exited"))
                return
            try:
                loop.call_soon_threadsafe(queue.put_nowait, message)
            except RuntimeError:
                return

    async def _gather(self, name: str, timeout_s: float) -> list[dict[str, Any]]:
        try:
            async with asyncio.timeout(timeout_s):
                replies = [await q.get() for q in self._queues]
        except TimeoutError:
            raise LoadClientError(f"workers did not answer {name!r} in {timeout_s}s") from None
        errors = [str(body) for kind, body in replies if kind != name]
        if errors:
            raise LoadClientError(f"{name}: {'; '.join(errors)}")
        return [body for _, body in replies]

    async def _call(self, cmd: tuple[Any, ...], timeout_s: float) -> list[dict[str, Any]]:
        if not self._pipes:
            raise LoadClientError("the pool is not started")
        for q in self._queues:  # drop late answers to an earlier call that timed out
            while not q.empty():
                q.get_nowait()
        for pipe in self._pipes:
            try:
                pipe.send(cmd)
            except OSError as exc:
                raise LoadClientError(f"a worker is gone: {exc}") from None
        return await self._gather(cmd[0], timeout_s)

    async def connect(self, timeout_s: float = 600.0) -> ConnectReport:
        """Open every connection (``connect_concurrency`` at a time over all workers)."""
        replies = await self._call(("connect",), timeout_s)
        connected = sum(r["connected"] for r in replies)
        duration = max(r["end"] for r in replies) - min(r["start"] for r in replies)
        times = array.array("d")
        for r in replies:
            times.frombytes(r["connect_ms"])
        report = ConnectReport(
            requested=self.cfg.connections,
            connected=connected,
            failed=sum(r["failed"] for r in replies),
            errors=_merge_counts(r["errors"] for r in replies),
            duration_s=duration,
            rate_per_s=connected / duration if duration > 0 else 0.0,
            connect_ms=summarize(times),
            client_cpu_s=sum(r["cpu_s"] for r in replies),
        )
        self.connect_report = report
        return report

    async def stats(self, timeout_s: float = 30.0) -> PoolStats:
        replies = await self._call(("stats",), timeout_s)
        return PoolStats(
            open=sum(r["open"] for r in replies),
            connected_total=sum(r["connected_total"] for r in replies),
            failed_total=sum(r["failed_total"] for r in replies),
            errors=_merge_counts(r["errors"] for r in replies),
            closes=_merge_counts(r["closes"] for r in replies),
            messages=sum(r["messages"] for r in replies),
            bytes_in=sum(r["bytes_in"] for r in replies),
            client_cpu_s=sum(r["cpu_s"] for r in replies),
            client_cpu_by_process=[r["cpu_s"] for r in replies],
            pids=[r["pid"] for r in replies],
        )

    async def hold(self, seconds: float) -> PoolStats:
        """Keep the connections idle for ``seconds``, then report (closes show drops)."""
        await asyncio.sleep(seconds)
        return await self.stats()

    async def reset(self, timeout_s: float = 30.0) -> None:
        """Zero the event counters, latency samples, closes and CPU baseline of every worker."""
        await self._call(("reset",), timeout_s)

    async def expect(self, per_connection: int, timeout_s: float) -> DeliveryReport:
        """Wait until every open connection has ``per_connection`` events since ``reset``
        (counting those already received), or ``timeout_s`` passes; then report."""
        replies = await self._call(("expect", per_connection, timeout_s), timeout_s + 30.0)
        samples = _merge_samples(replies, self.cfg.reservoir)
        firsts = [r["first_at"] for r in replies if r["first_at"]]
        return DeliveryReport(
            per_connection=per_connection,
            connections=sum(r["connections"] for r in replies),
            complete=sum(r["complete"] for r in replies),
            delivered=sum(r["delivered"] for r in replies),
            timed_out=any(r["timed_out"] for r in replies),
            reset_at=min(r["reset_at"] for r in replies),
            first_at=min(firsts) if firsts else 0.0,
            last_at=max(r["last_at"] for r in replies),
            latency=summarize(samples),
            client_cpu_s=sum(r["cpu_s"] for r in replies),
            client_cpu_by_process=[r["cpu_s"] for r in replies],
            closes=_merge_counts(r["closes"] for r in replies),
            open_after=sum(r["open"] for r in replies),
            samples_ms=samples,
        )

    async def close(self, timeout_s: float = 20.0) -> None:
        """Close every socket (WebSocket close 1000 first), then join the workers."""
        if self._pipes:
            with contextlib.suppress(LoadClientError):
                await self._call(("close", timeout_s / 2), timeout_s)
        for proc in self._procs:
            await asyncio.to_thread(proc.join, 5.0)
            if proc.is_alive():
                proc.terminate()
                await asyncio.to_thread(proc.join, 2.0)
            if proc.is_alive():
                proc.kill()
                await asyncio.to_thread(proc.join, 2.0)
        for pipe in self._pipes:
            pipe.close()
        self._procs, self._pipes, self._queues = [], [], []


async def run_clients(cfg: ClientConfig, connect_timeout_s: float = 600.0) -> ClientPool:
    """Start a pool and connect it; the connect report is ``pool.connect_report``."""
    pool = ClientPool(cfg)
    await pool.start()
    try:
        await pool.connect(connect_timeout_s)
    except BaseException:
        await pool.close()
        raise
    return pool


async def wait_for_port(host: str, port: int, timeout_s: float = 30.0) -> None:
    """Return once a TCP connect to ``host:port`` succeeds; ``TimeoutError`` otherwise."""
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                _, writer = await asyncio.open_connection(host, port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return


# --- server processes from /proc ----------------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2 :].decode().split()


def process_tree(pids: Iterable[int]) -> list[int]:
    """``pids`` that still exist and all their descendants."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat(int(name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(name))
    out: list[int] = []
    todo = [pid for pid in pids if os.path.exists(f"/proc/{pid}")]
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.append(pid)
            todo.extend(children.get(pid, ()))
    return out


def gateway_rss_kb(pids: Iterable[int]) -> int:
    """Resident memory (VmRSS, KiB) of ``pids`` and their descendants, summed."""
    total = 0
    for pid in process_tree(pids):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


def cpu_seconds(pids: Iterable[int]) -> float:
    """User+system CPU seconds of ``pids`` and their live descendants, summed."""
    ticks = 0
    for pid in process_tree(pids):
        fields = _stat(pid)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / _CLK_TCK
