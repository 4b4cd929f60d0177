"""``python -m benchmarks.resume``: a reconnect storm, every client resuming by cursor at once.

Starts a private Redis and one gateway process, publishes ``--events`` events to one topic,
then opens ``--connections`` WebSocket (or SSE) connections at once, each subscribing to that
topic from the same cursor (the first event), as a room does after a gateway restart. Reports:

* ``delivered`` / ``expected``: replayed events received (``events - 1`` per connection);
* ``all_resumed_s``: from the first connect to the last replayed event received;
* ``redis_xrange_calls``, ``redis_commands``: what the storm cost Redis (``INFO``, deltas);
* ``redis_cpu_s``, ``gateway_cpu_s``: CPU seconds of each over the storm;
* ``history_reads``: the gateway's own count of reads that went to Redis and of reads that
  joined an identical read in flight (``lectern_gateway_history_reads_total``).

Prints one JSON object (the last stdout line with ``--json``). Everything it starts is stopped
before it returns.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.request
from typing import Any

import redis.asyncio as aioredis

from benchmarks.gateway import (
    TOPIC,
    LecternStack,
    bench_client_config,
    bench_tokens,
)
from benchmarks.loadclient import ClientPool, cpu_seconds


async def _redis_counts(redis: aioredis.Redis) -> tuple[int, int]:
    stats: Any = await redis.info("commandstats")
    totals: Any = await redis.info("stats")
    xrange = stats.get("cmdstat_xrange", {}).get("calls", 0)
    return int(xrange), int(totals["total_commands_processed"])


def _history_reads(ports: list[int]) -> dict[str, float]:
    out = {"redis": 0.0, "shared": 0.0}
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
        for line in text.splitlines():
            if line.startswith("lectern_gateway_history_reads_total{"):
                source = line.split('source="', 1)[1].split('"', 1)[0]
                out[source] = out.get(source, 0.0) + float(line.rsplit(" ", 1)[-1])
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    async with LecternStack(processes=1) as stack:
        assert stack.publisher is not None and stack.redis is not None
        ids = await stack.publisher.publish_many(
            (TOPIC, "bench", {"seq": i, "sent": time.time(), "pad": "x" * args.payload})
            for i in range(args.events)
        )
        per_connection = len(ids) - 1
        cfg = bench_client_config(
            stack,
            args.transport,
            args.connections,
            bench_tokens(stack),
            path=f"/{args.transport}?token={{token}}&topics={TOPIC}&cursor={ids[0]}",
            ready="handshake",
            connect_concurrency=args.concurrency,
            processes=1,
        )
        async with ClientPool(cfg) as pool:
            xrange0, commands0 = await _redis_counts(stack.redis)
            redis_cpu0 = cpu_seconds(stack.redis_pids)
            gateway_cpu0 = cpu_seconds(stack.gateway_pids)
            started = time.time()
            connected = await pool.connect()
            delivery = await pool.expect(per_connection, timeout_s=args.timeout)
            xrange1, commands1 = await _redis_counts(stack.redis)
            result: dict[str, Any] = {
                "connections": args.connections,
                "connected": connected.connected,
                "transport": args.transport,
                "events": per_connection,
                "expected": delivery.expected,
                "delivered": delivery.delivered,
                "timed_out": delivery.timed_out,
                "all_resumed_s": round(delivery.last_at - started, 3),
                "connect_rate_per_s": round(connected.rate_per_s),
                "redis_xrange_calls": xrange1 - xrange0,
                "redis_commands": commands1 - commands0,
                "redis_cpu_s": round(cpu_seconds(stack.redis_pids) - redis_cpu0, 3),
                "gateway_cpu_s": round(cpu_seconds(stack.gateway_pids) - gateway_cpu0, 3),
            }
        result["history_reads"] = _history_reads(stack.metrics_ports)
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.resume", description=__doc__)
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--transport", choices=("ws", "sse"), default="ws")
    parser.add_argument("--payload", type=int, default=64, help="padding bytes per event")
    parser.add_argument("--concurrency", type=int, default=500, help="connects in flight")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--json", action="store_true", help="print only the JSON object")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=None if args.json else 2))
    return 0 if result["delivered"] == result["expected"] else 1


if __name__ == "__main__":
    sys.exit(main())
