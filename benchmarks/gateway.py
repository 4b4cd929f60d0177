"""``python -m benchmarks.gateway``: idle memory and broadcast figures of Lectern's gateway.

Starts a private Redis and the gateway (``python -m gateway --processes P``), opens N idle
connections from several client processes (benchmarks.loadclient), and measures:

* ``kb_per_idle_connection``: growth of the gateway processes' RSS from before the connections
  to after they settled, divided by N;
* a broadcast phase: M events published to one topic every connection subscribes to, one every
  ``--interval-ms``: ``delivered`` vs ``expected``, end-to-end ``latency_ms`` (publish call to
  frame parsed by the client), the gateway's own fan-out time (from its metrics), and
  ``deliveries_per_cpu_second`` = delivered frames / gateway CPU seconds (user+system) spent in
  that phase alone.

Prints one JSON object. Everything it starts is stopped before it returns.

The pieces are reusable: ``LecternStack`` (Redis + gateway processes, started and stopped as
one), ``bench_tokens`` / ``bench_client_config`` (clients that subscribe to ``cohort:bench``),
``publish_paced``, ``scrape_metrics`` and ``latency_ms``; ``benchmarks.compare`` and
``benchmarks.scale`` are built on them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

import redis.asyncio as aioredis

from benchmarks.loadclient import (
    ClientConfig,
    ClientPool,
    cpu_seconds,
    gateway_rss_kb,
    percentile,
    process_tree,
    wait_for_port,
)
from benchmarks.loadworker import Transport
from config.servers import RedisServer, die_with_parent, free_port
from config.settings import Settings, load_settings
from gateway.auth import issue_access_token
from gateway.publish import Publisher

TOPIC = "cohort:bench"
USERS = 200
#: Connection limits lifted for load runs: every client comes from a handful of loopback IPs.
UNLIMITED = {
    "LECTERN_CONN_RATE_PER_IP_PER_S": "1000000",
    "LECTERN_CONN_BURST_PER_IP": "1000000",
    "LECTERN_MAX_CONNS_PER_USER": "1000000",
}


def gateway_env(redis_url: str, metrics_port: int, extra: Mapping[str, str]) -> dict[str, str]:
    """The environment of a benchmark gateway: our Redis, limits lifted, quiet logs."""
    env = dict(os.environ)
    env.update(UNLIMITED)
    env.update(
        {
            "REDIS_URL": redis_url,
            "LECTERN_GATEWAY_METRICS_PORT": str(metrics_port),
            "LECTERN_GATEWAY_SUPERVISOR_METRICS_PORT": "0",
            "LECTERN_LOG_LEVEL": "WARNING",
            "LECTERN_DEV_MODE": "1",  # a private local stack with the shipped JWT secret
        }
    )
    env.update(extra)
    return env


def free_port_range(count: int, attempts: int = 50) -> int:
    """A base port such that ``base .. base + count - 1`` are all free on 127.0.0.1 now."""
    if count == 1:
        return free_port()
    for _ in range(attempts):
        base = free_port()
        if base + count > 65_535:
            continue
        ok = True
        for port in range(base + 1, base + count):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError(f"no {count} consecutive free ports found")


def parse_metrics(text: str, names: Iterable[str]) -> dict[str, float]:
    """Sum every sample of each metric in ``names`` (any labels) in a Prometheus text page."""
    wanted = set(names)
    out = dict.fromkeys(wanted, 0.0)
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in wanted:
            with contextlib.suppress(ValueError):
                out[name] += float(line.rsplit(" ", 1)[-1])
    return out


#: A gateway process's metrics port on 127.0.0.1, or (address, port).
MetricsTarget = int | tuple[str, int]


def scrape_each(
    ports: Iterable[MetricsTarget], names: Sequence[str]
) -> list[dict[str, float] | None]:
    """``parse_metrics`` of each gateway process's metrics port; None where it did not answer."""
    out: list[dict[str, float] | None] = []
    for target in ports:
        host, port = target if isinstance(target, tuple) else ("127.0.0.1", target)
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            out.append(None)
            continue
        out.append(parse_metrics(text, names))
    return out


def scrape_metrics(ports: Iterable[MetricsTarget], names: Sequence[str]) -> dict[str, float]:
    """``parse_metrics`` summed over the metrics ports of every gateway process; a port that
    does not answer counts as zero and is counted under ``"unreachable"``."""
    total = dict.fromkeys(names, 0.0)
    unreachable = 0
    for values in scrape_each(ports, names):
        if values is None:
            unreachable += 1
            continue
        for name, value in values.items():
            total[name] += value
    total["unreachable"] = unreachable
    return total


def _scrape_fanout(ports: Iterable[int]) -> dict[str, float]:
    """Sum the gateways' fan-out histograms: total seconds, batches, mean ms per batch."""
    m = scrape_metrics(
        ports, ("lectern_gateway_fanout_seconds_sum", "lectern_gateway_fanout_seconds_count")
    )
    total = m["lectern_gateway_fanout_seconds_sum"]
    count = m["lectern_gateway_fanout_seconds_count"]
    return {
        "total_ms": round(total * 1000, 2),
        "batches": count,
        "mean_ms_per_batch": round(total * 1000 / count, 3) if count else 0.0,
    }


class LecternStack:
    """A private Redis and ``python -m gateway --processes P`` in its own process group.

    ``async with LecternStack(processes=2) as stack:`` starts both and waits until the gateway
    port answers; leaving the block sends SIGTERM to the gateway's group (SIGKILL after 20 s)
    and stops Redis. ``env`` adds to :func:`gateway_env`; ``settings`` are parsed from the same
    environment, so tokens from :meth:`token` verify in the gateway.
    """

    def __init__(
        self, processes: int = 1, port: int = 0, env: Mapping[str, str] | None = None
    ) -> None:
        self.processes = processes
        self.port = port
        self.extra_env = dict(env or {})
        self.metrics_base = 0
        self.settings: Settings = load_settings({})
        self.redis_server: RedisServer | None = None
        self.redis: aioredis.Redis | None = None
        self.publisher: Publisher | None = None
        self.gateway: subprocess.Popen[bytes] | None = None

    async def __aenter__(self) -> LecternStack:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def metrics_ports(self) -> list[int]:
        return [self.metrics_base + i for i in range(self.processes)]

    @property
    def gateway_pids(self) -> list[int]:
        """The gateway's supervisor and every process under it."""
        return process_tree([self.gateway.pid]) if self.gateway is not None else []

    @property
    def redis_pids(self) -> list[int]:
        proc = self.redis_server.proc if self.redis_server is not None else None
        return [proc.pid] if proc is not None and proc.poll() is None else []

    async def start(self, timeout_s: float = 60.0) -> None:
        try:
            self.redis_server = await asyncio.to_thread(RedisServer().start)
            self.port = self.port or free_port()
            self.metrics_base = free_port_range(self.processes)
            env = gateway_env(self.redis_server.url, self.metrics_base, self.extra_env)
            self.settings = load_settings(env)
            self.gateway = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gateway",
                    "--processes",
                    str(self.processes),
                    "--port",
                    str(self.port),
                ],
                env=env,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
            await wait_for_port("127.0.0.1", self.port, timeout_s)
            await self._wait_metrics(timeout_s)
            await asyncio.sleep(0.5)  # let every process read its bus
            self.redis = aioredis.Redis.from_url(self.redis_server.url)
            self.publisher = Publisher(self.redis, self.settings)
        except BaseException:
            await self.stop()
            raise

    async def _wait_metrics(self, timeout_s: float) -> None:
        """Every process is up once each metrics port answers (they bind after the app)."""
        for port in self.metrics_ports:
            await wait_for_port("127.0.0.1", port, timeout_s)

    def token(self, sub: str, cohorts: Sequence[str], ttl_s: int = 6 * 3600) -> str:
        return issue_access_token(
            self.settings, sub=sub, role="student", cohorts=list(cohorts), ttl_s=ttl_s
        )

    async def stop(self) -> None:
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.aclose()
            self.redis = None
        if self.gateway is not None:
            await asyncio.to_thread(stop_group, self.gateway, 20.0)
            self.gateway = None
        if self.redis_server is not None:
            await asyncio.to_thread(self.redis_server.stop)
            self.redis_server = None


def stop_group(proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """SIGTERM the process group led by ``proc``; SIGKILL it if it is not gone in time."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):  # stragglers in the group, if any
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def bench_tokens(stack: LecternStack, users: int = USERS) -> tuple[str, ...]:
    """Tokens of ``users`` students of cohort ``bench`` (they may subscribe to TOPIC)."""
    return tuple(stack.token(f"bench{i}", ["bench"]) for i in range(users))


def bench_client_config(
    stack: LecternStack,
    transport: Transport,
    connections: int,
    tokens: tuple[str, ...],
    **overrides: Any,
) -> ClientConfig:
    """Clients of ``stack`` that subscribe to TOPIC at connect and count as connected on the
    hello frame (so the subscription is in place)."""
    fields: dict[str, Any] = {
        "port": stack.port,
        "connections": connections,
        "transport": transport,
        "path": f"/{transport}?token={{token}}&topics={TOPIC}",
        "tokens": tokens,
        "ready": "first_data",
        "extract": "sent",
        "max_per_process": 19_500,
    }
    fields.update(overrides)
    return ClientConfig(**fields)


async def publish_paced(
    publisher: Publisher, topic: str, events: int, interval_ms: float, payload: int
) -> None:
    """``events`` events to ``topic``, one every ``interval_ms`` on a fixed schedule; each
    carries ``"sent"`` (the time of its publish call) for the clients' latency."""
    pad = "x" * payload
    start = time.monotonic()
    for seq in range(events):
        delay = start + seq * interval_ms / 1000 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await publisher.publish(topic, "bench", {"seq": seq, "sent": time.time(), "pad": pad})


def latency_ms(samples: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99/max in ms, rounded; ``samples`` need not be sorted."""
    values = sorted(samples)
    out: dict[str, float | None] = {
        q: round(percentile(values, float(q[1:])), 2) if values else None
        for q in ("p50", "p95", "p99")
    }
    out["max"] = round(values[-1], 2) if values else None
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "system": "lectern",
        "transport": args.transport,
        "connections": args.connections,
        "processes": args.processes,
        "events": args.events,
    }
    async with LecternStack(args.processes, args.port) as stack:
        assert stack.publisher is not None
        pids = stack.gateway_pids
        rss_before = gateway_rss_kb(pids)
        cfg = bench_client_config(
            stack,
            args.transport,
            args.connections,
            bench_tokens(stack),
            processes=args.client_processes,
        )
        async with ClientPool(cfg) as pool:
            connected = await pool.connect()
            result["connected"] = connected.connected
            result["connect_failures"] = connected.failed
            if connected.errors:
                result["connect_errors"] = connected.errors
            result["accepts_per_second"] = round(connected.rate_per_s, 1)
            await asyncio.sleep(args.settle)
            rss_after = gateway_rss_kb(pids)
            result["gateway_rss_mb"] = round(rss_after / 1024, 1)
            result["kb_per_idle_connection"] = round(
                (rss_after - rss_before) / max(connected.connected, 1), 2
            )
            await pool.reset()
            cpu_before = cpu_seconds(pids)
            await publish_paced(stack.publisher, TOPIC, args.events, args.interval_ms, args.payload)
            delivery = await pool.expect(args.events, timeout_s=args.timeout)
            cpu_used = cpu_seconds(pids) - cpu_before
            result["delivered"] = delivery.delivered
            result["expected"] = args.events * connected.connected
            result["latency_ms"] = latency_ms(delivery.samples_ms)
            result["gateway_cpu_s"] = round(cpu_used, 3)
            result["deliveries_per_cpu_second"] = (
                round(delivery.delivered / cpu_used) if cpu_used > 0 else None
            )
            result["client_cpu_s"] = round(delivery.client_cpu_s, 2)
            result["fanout"] = _scrape_fanout(stack.metrics_ports)
            result["closes"] = delivery.closes
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gateway", description=__doc__)
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--transport", choices=("ws", "sse"), default="ws")
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--interval-ms", type=float, default=250.0)
    parser.add_argument("--payload", type=int, default=64, help="padding bytes per event")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before measuring RSS")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--client-processes",
        type=int,
        default=1,
        help="client processes (each holds at most 19,500 connections); on 2 cores, one "
        "client process leaves the other core to the gateway",
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=None if args.json else 2))
    return 0 if result.get("delivered") == result.get("expected") else 1


if __name__ == "__main__":
    sys.exit(main())
