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
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
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
from config.servers import RedisServer, free_port
from config.settings import load_settings
from gateway.auth import issue_access_token
from gateway.publish import Publisher

TOPIC = "cohort:bench"
USERS = 200


def _gateway_env(redis_url: str, metrics_port: int, extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "REDIS_URL": redis_url,
            "LECTERN_CONN_RATE_PER_IP_PER_S": "1000000",
            "LECTERN_CONN_BURST_PER_IP": "1000000",
            "LECTERN_MAX_CONNS_PER_USER": "1000000",
            "LECTERN_GATEWAY_METRICS_PORT": str(metrics_port),
            "LECTERN_LOG_LEVEL": "WARNING",
        }
    )
    env.update(extra)
    return env


def _scrape_fanout(metrics_port: int, processes: int) -> dict[str, float]:
    """Sum the gateways' fan-out histograms: total seconds, batches, mean ms per batch."""
    total = count = 0.0
    for i in range(processes):
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{metrics_port + i}/metrics", timeout=5
            ) as r:
                text = r.read().decode()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("lectern_gateway_fanout_seconds_sum"):
                total += float(line.split()[-1])
            elif line.startswith("lectern_gateway_fanout_seconds_count"):
                count += float(line.split()[-1])
    return {
        "total_ms": round(total * 1000, 2),
        "batches": count,
        "mean_ms_per_batch": round(total * 1000 / count, 3) if count else 0.0,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = load_settings({})
    redis_server = RedisServer().start()
    port = args.port or free_port()
    metrics_port = free_port() if args.processes == 1 else 19_700
    env = _gateway_env(redis_server.url, metrics_port, {})
    gateway = subprocess.Popen(  # noqa: ASYNC220 (start-up, before any measurement)
        [sys.executable, "-m", "gateway", "--processes", str(args.processes), "--port", str(port)],
        env=env,
        start_new_session=True,
    )
    result: dict[str, Any] = {
        "system": "lectern",
        "transport": args.transport,
        "connections": args.connections,
        "processes": args.processes,
        "events": args.events,
    }
    redis = aioredis.Redis.from_url(redis_server.url)
    try:
        await wait_for_port("127.0.0.1", port, 30)
        await asyncio.sleep(1.0)  # let every process bind and read its bus
        pids = process_tree([gateway.pid])
        rss_before = gateway_rss_kb([gateway.pid])
        tokens = tuple(
            issue_access_token(
                settings, sub=f"bench{i}", role="student", cohorts=["bench"], ttl_s=3600
            )
            for i in range(USERS)
        )
        path = f"/{args.transport}?token={{token}}&topics={TOPIC}"
        cfg = ClientConfig(
            port=port,
            connections=args.connections,
            transport=args.transport,
            path=path,
            tokens=tokens,
            ready="first_data",
            extract="sent",
            processes=args.client_processes,
            max_per_process=19_500,
        )
        async with ClientPool(cfg) as pool:
            connected = await pool.connect()
            result["connected"] = connected.connected
            result["connect_failures"] = connected.failed
            if connected.errors:
                result["connect_errors"] = connected.errors
            result["accepts_per_second"] = round(connected.rate_per_s, 1)
            await asyncio.sleep(args.settle)
            rss_after = gateway_rss_kb([gateway.pid])
            result["gateway_rss_mb"] = round(rss_after / 1024, 1)
            result["kb_per_idle_connection"] = round(
                (rss_after - rss_before) / max(connected.connected, 1), 2
            )
            await pool.reset()
            publisher = Publisher(redis, settings)
            pad = "x" * args.payload
            cpu_before = cpu_seconds(pids)
            for seq in range(args.events):
                await publisher.publish(
                    TOPIC, "bench", {"seq": seq, "sent": time.time(), "pad": pad}
                )
                await asyncio.sleep(args.interval_ms / 1000)
            delivery = await pool.expect(args.events, timeout_s=args.timeout)
            cpu_used = cpu_seconds(pids) - cpu_before
            result["delivered"] = delivery.delivered
            result["expected"] = args.events * connected.connected
            samples = sorted(delivery.samples_ms)
            result["latency_ms"] = {
                q: round(percentile(samples, float(q[1:])), 2) for q in ("p50", "p95", "p99")
            } | {"max": round(samples[-1], 2) if samples else None}
            result["gateway_cpu_s"] = round(cpu_used, 3)
            result["deliveries_per_cpu_second"] = (
                round(delivery.delivered / cpu_used) if cpu_used > 0 else None
            )
            result["client_cpu_s"] = round(delivery.client_cpu_s, 2)
            result["fanout"] = _scrape_fanout(metrics_port, args.processes)
            result["closes"] = delivery.closes
    finally:
        await redis.aclose()
        if gateway.poll() is None:
            os.killpg(gateway.pid, signal.SIGTERM)
            try:
                gateway.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(gateway.pid, signal.SIGKILL)
                gateway.wait()
        redis_server.stop()
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
