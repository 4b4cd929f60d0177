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
Prints one JSON object; everything it starts is stopped before it returns.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from collections import Counter
from typing import Any

from config import keys, redisconn
from config.servers import RedisClusterServer
from config.settings import Settings, load_settings
from gateway.publish import Publisher

#: What a publish may raise during the failover. AttributeError: redis-py's async cluster
#: client, when a failover makes one task disconnect a connection another task is writing to
#: (counted and reported, not hidden).
REFUSED: tuple[type[Exception], ...] = (*redisconn.ERRORS, AttributeError)


async def _publisher(
    publisher: Publisher, topics: list[str], start: int, stop_at: float, acked: list[Any]
) -> Counter[str]:
    errors: Counter[str] = Counter()
    n = start
    while time.monotonic() < stop_at:
        topic = topics[n % len(topics)]
        try:
            event_id = await publisher.publish(topic, "bench.n", {"n": n})
        except REFUSED as exc:
            errors[type(exc).__name__] += 1
            await asyncio.sleep(0.05)
            continue
        acked.append((topic, event_id, time.monotonic()))
        n += 1
    return errors


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    cluster = RedisClusterServer(node_timeout_ms=args.node_timeout_ms).start()
    client = None
    try:
        settings: Settings = load_settings({}, redis_url=cluster.url, redis_cluster=True)
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
        acked: list[tuple[str, str, float]] = []
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
        on_victim = sorted(at for topic, _, at in acked if topic in victim_topics)
        gaps = [b - a for a, b in itertools.pairwise(on_victim)]
        unavailable = max(gaps) if gaps else None
        recovered = next((at - killed_at for at in on_victim if at - killed_at > 0.05), None)
        lost = 0
        for topic in topics:
            history: Any = await client.xrange(keys.history_key(topic, settings.bus_shards))
            kept = {eid.decode() for eid, _ in history}
            lost += sum(1 for t, eid, _ in acked if t == topic and eid not in kept)
        return {
            "benchmark": "failover",
            "redis": {"mode": "cluster", "masters": cluster.masters, "replicas": 1},
            "node_timeout_ms": args.node_timeout_ms,
            "publishers": args.publishers,
            "topics": args.topics,
            "acked": len(acked),
            "acked_before_kill": before_kill,
            "publishes_per_s": round(len(acked) / args.duration_s, 1),
            "refused_publishes": sum(errors.values()),
            "refused_by_error": dict(errors),
            "lost": lost,
            "lost_fraction": round(lost / len(acked), 6) if acked else 0.0,
            "unavailable_s": round(unavailable, 3) if unavailable is not None else None,
            "first_publish_after_kill_s": round(recovered, 3) if recovered is not None else None,
            "killed_master_shards": by_master[victim],
            "durable_mode": False,
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
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args)), indent=2))


if __name__ == "__main__":
    main()
