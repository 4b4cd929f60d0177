"""Durable mode (``publish_wait_replicas``): a publish returns once replicas have the event, with
``WAIT`` on the connection that wrote it (on a cluster: the slot's master), and a shortfall is
counted and logged, never passed off as durable."""

from __future__ import annotations

import os
import time
import uuid
from typing import Any, cast

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from config import keys, redisconn
from config.servers import RedisClusterServer
from config.settings import Settings, load_settings
from gateway import durable
from gateway.publish import Publisher
from tests.conftest import RedisTarget


def _settings(target: RedisTarget, replicas: int, timeout_ms: int = 2000) -> Settings:
    return load_settings(
        {},
        redis_url=target.url,
        redis_cluster=target.cluster,
        publish_wait_replicas=replicas,
        publish_wait_timeout_ms=timeout_ms,
    )


async def _on_replica(client: RedisCluster, key: str, event_id: str) -> bool:
    """Whether the replica of ``key``'s master has the entry (read there, not redirected)."""
    master = client.get_node_from_key(key)
    assert master is not None
    info: Any = await client.info("replication", target_nodes=master)
    replica = aioredis.Redis(host=info["slave0"]["ip"], port=int(info["slave0"]["port"]))
    try:
        await replica.execute_command("READONLY")
        entries: Any = await replica.xrange(key, min=event_id, max=event_id)
        return len(entries) == 1
    finally:
        await replica.aclose()


@pytest.mark.cluster
async def test_a_durable_publish_is_on_the_replica_when_it_returns(
    redis_cluster_server: RedisClusterServer | None,
) -> None:
    url = redis_cluster_server.url if redis_cluster_server else os.environ["REDIS_CLUSTER_URL"]
    target = RedisTarget(url, True)
    settings = _settings(target, replicas=1)
    client = cast(RedisCluster, redisconn.connect(target.url, cluster=True))
    publisher = Publisher(cast(aioredis.Redis, client), settings)
    assert publisher.waiter is not None
    try:
        topics = [f"cohort:d{uuid.uuid4().hex[:8]}" for _ in range(12)]  # over every master
        for n, topic in enumerate(topics):
            event_id = await publisher.publish(topic, "t.n", {"n": n})
            assert await _on_replica(client, keys.history_key(topic, settings.bus_shards), event_id)
        batch = [(t, "t.m", {"n": n}) for n, t in enumerate(topics)]
        ids = await publisher.publish_many(batch)
        for topic, event_id in zip(topics, ids, strict=True):
            assert await _on_replica(client, keys.history_key(topic, settings.bus_shards), event_id)
        assert publisher.waiter.under_replicated == 0
    finally:
        await client.aclose()


@pytest.mark.redis_modes
async def test_fewer_replicas_than_asked_is_published_counted_and_not_hidden(
    redis_target: RedisTarget,
) -> None:
    """The single Redis has no replica and each cluster master has one: ask for one more."""
    replicas = 2 if redis_target.cluster else 1
    settings = _settings(redis_target, replicas=replicas, timeout_ms=50)
    client = redisconn.connect(redis_target.url, cluster=redis_target.cluster)
    publisher = Publisher(client, settings)
    assert publisher.waiter is not None
    before = durable.under_replicated._value.get()
    topic = f"cohort:u{uuid.uuid4().hex[:8]}"
    try:
        start = time.monotonic()
        event_id = await publisher.publish(topic, "t.n", {"n": 1})
        assert time.monotonic() - start >= 0.05  # WAIT ran its timeout out
        history: Any = await client.xrange(keys.history_key(topic, settings.bus_shards))
        assert [e.decode() for e, _ in history] == [event_id]  # published all the same
        await publisher.publish_many([(topic, "t.n", {"n": 2}), (topic, "t.n", {"n": 3})])
        assert publisher.waiter.under_replicated == 3
        assert durable.under_replicated._value.get() - before == 3
    finally:
        await client.aclose()


def test_negative_replica_count_is_refused() -> None:
    with pytest.raises(Exception, match="PUBLISH_WAIT_REPLICAS"):
        load_settings({"LECTERN_PUBLISH_WAIT_REPLICAS": "-1"})
