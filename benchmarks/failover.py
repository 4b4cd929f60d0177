"""``python -m benchmarks.failover``: what a Redis Cluster failover costs Lectern's publishes.

Starts a private cluster (3 masters, 1 replica each, ``--node-timeout-ms``), publishes events
with :class:`gateway.publish.Publisher` from ``--publishers`` concurrent tasks over
``--topics`` topics (spread over every bus shard), SIGKILLs the master that owns the most
shards after ``--kill-after-s``, keeps publishing (retrying refused publishes, as callers
do) until ``--duration-s``, then checks every acknowledged event against the topics' history
streams on the promoted masters.

Redis replicates asynchronously, so events a master acknowledged but had not yet sent to its
replica are lost with it: ``lost`` counts them (all on the killed master's slots).
``unavailable_s`` is the longest gap between successful publishes to the killed master's
slots (the failover), ``first_publish_after_kill_s`` when they succeeded again.

It runs twice in one invocation, each time on a fresh cluster: ``async`` (Redis's asynchronous
replication, the default) and ``durable`` (``publish_wait_replicas=1``: each publish waits with
``WAIT`` for the replica, at most ``--wait-timeout-ms``), and reports for each the events lost,
publish latency p50/p99 and publishes per second before the kill. Prints one JSON object and
writes it to ``benchmarks/results/failover-latest.json``; everything it starts is stopped
before it returns.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks import sysinfo
from config import keys, redisconn
from config.servers import RedisClusterServer
from config.settings import Settings, load_settings
from gateway.publish import Publisher

#: What a publish may raise during the failover. AttributeError: redis-py's async cluster
#: client, when a failover makes one task disconnect a connection another task is writing to
#: (counted and reported, not hidden).
REFUSED: tuple[type[Exception], ...] = (*redisconn.ERRORS, AttributeError)


RESULT = Path(__file__).resolve().parent / "results" / "failover-latest.json"


async def _publisher(
    publisher: Publisher, topics: list[str], start: int, stop_at: float, acked: list[Any]
) -> Counter[str]:
    """Publish until ``stop_at``; ``acked`` gets (topic, event ID, done at, latency in s)."""
    errors: Counter[str] = Counter()
    n = start
    while time.monotonic() < stop_at:
        topic = topics[n % len(topics)]
        began = time.monotonic()
        try:
            event_id = await publisher.publish(topic, "bench.n", {"n": n})
        except REFUSED as exc:
            errors[type(exc).__name__] += 1
            await asyncio.sleep(0.05)
            continue
        done = time.monotonic()
        acked.append((topic, event_id, done, done - began))
        n += 1
    return errors


def _ms(sorted_s: list[float], q: float) -> float | None:
    if not sorted_s:
        return None
    return round(sorted_s[min(len(sorted_s) - 1, int(q * len(sorted_s)))] * 1000, 2)


async def measure(args: argparse.Namespace, wait_replicas: int = 0) -> dict[str, Any]:
    """One run on a fresh cluster; ``wait_replicas`` > 0: durable mode.

    Long because it is one sequential script: set up, publish, kill, check every event."""
    cluster = RedisClusterServer(node_timeout_ms=args.node_timeout_ms).start()
    client = None
    try:
        settings: Settings = load_settings(
            {},
            redis_url=cluster.url,
            redis_cluster=True,
            publish_wait_replicas=wait_replicas,
            publish_wait_timeout_ms=args.wait_timeout_ms,
        )
        client = redisconn.connect(cluster.url, cluster=True, socket_timeout=2)
        await client.initialize()
        publisher = Publisher(client, settings)
        topics = [f"cohort:failover{i}" for i in range(args.topics)]
        by_master = Counter(
            int(client.get_node_from_key(keys.bus_key(s)).port)  # type: ignore[attr-defined]
            for s in range(settings.bus_shards)
        )
        victim = by_master.most_common(1)[0][0]
        victim_topics = {
            t
            for t in topics
            if int(
                client.get_node_from_key(  # type: ignore[attr-defined]
                    keys.bus_key(keys.shard_of(t, settings.bus_shards))
                ).port
            )
            == victim
        }
        acked: list[tuple[str, str, float, float]] = []
        start = time.monotonic()
        stop_at = start + args.duration_s
        tasks = [
            asyncio.create_task(_publisher(publisher, topics, i * 1_000_000, stop_at, acked))
            for i in range(args.publishers)
        ]
        await asyncio.sleep(args.kill_after_s)
        killed_at = time.monotonic()
        before_kill = len(acked)
        cluster.kill_node(victim)
        errors: Counter[str] = Counter()
        for counts in await asyncio.gather(*tasks):
            errors.update(counts)
        on_victim = sorted(at for topic, _, at, _ in acked if topic in victim_topics)
        gaps = [b - a for a, b in itertools.pairwise(on_victim)]
        unavailable = max(gaps) if gaps else None
        recovered = next((at - killed_at for at in on_victim if at - killed_at > 0.05), None)
        lost = 0
        for topic in topics:
            history: Any = await client.xrange(keys.history_key(topic, settings.bus_shards))
            kept = {eid.decode() for eid, _ in history}
            lost += sum(1 for t, eid, _, _ in acked if t == topic and eid not in kept)
        steady = sorted(lat for _, _, at, lat in acked[:before_kill])
        return {
            "redis": {"mode": "cluster", "masters": cluster.masters, "replicas": 1},
            "node_timeout_ms": args.node_timeout_ms,
            "publishers": args.publishers,
            "topics": args.topics,
            "acked": len(acked),
            "acked_before_kill": before_kill,
            "publishes_per_s": round(len(acked) / args.duration_s, 1),
            "publishes_per_s_before_kill": round(before_kill / args.kill_after_s, 1),
            "publish_p50_ms_before_kill": _ms(steady, 0.50),
            "publish_p99_ms_before_kill": _ms(steady, 0.99),
            "refused_publishes": sum(errors.values()),
            "refused_by_error": dict(errors),
            "lost": lost,
            "lost_fraction": round(lost / len(acked), 6) if acked else 0.0,
            "unavailable_s": round(unavailable, 3) if unavailable is not None else None,
            "first_publish_after_kill_s": round(recovered, 3) if recovered is not None else None,
            "killed_master_shards": by_master[victim],
            "wait_replicas": wait_replicas,
            "under_replicated": publisher.waiter.under_replicated if publisher.waiter else None,
        }
    finally:
        if client is not None:
            await client.aclose()
        cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=8.0)
    parser.add_argument("--kill-after-s", type=float, default=2.0)
    parser.add_argument("--publishers", type=int, default=8)
    parser.add_argument("--topics", type=int, default=64)
    parser.add_argument("--node-timeout-ms", type=int, default=1000)
    parser.add_argument("--wait-timeout-ms", type=int, default=200)
    args = parser.parse_args()
    machine = sysinfo.machine_info()  # the load average before the runs
    report = {
        "benchmark": "failover",
        "command": " ".join(["python -m benchmarks.failover", *sys.argv[1:]]),
        "async": asyncio.run(measure(args, wait_replicas=0)),
        "durable": asyncio.run(measure(args, wait_replicas=1)),
        "machine": machine,
    }
    RESULT.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
