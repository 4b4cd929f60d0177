"""The gateway's bus reader across topology changes of a real Redis Cluster: a subscriber keeps
receiving every event, once and in order, after the slot of its bus shard moves to another
master (resharding: MOVED) and after that master is SIGKILLed and its replica promoted.

Each test gets its own cluster (it changes the topology).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
import redis
from redis.crc import key_slot

from config import keys, redisconn
from config.servers import RedisClusterServer
from config.settings import Settings, load_settings
from gateway.app import BUS
from gateway.auth import issue_access_token
from gateway.publish import Publisher
from tests.gateway.clients import expect_silence, recv_json, until, ws_open
from tests.gateway.conftest import Gateway, start_gateway

pytestmark = pytest.mark.cluster


@pytest.fixture
def cluster() -> Iterator[RedisClusterServer]:
    server = RedisClusterServer(node_timeout_ms=1000).start()
    yield server
    server.stop()


@pytest.fixture
def csettings(cluster: RedisClusterServer) -> Settings:
    return load_settings(
        {},
        redis_url=cluster.url,
        redis_cluster=True,
        conn_rate_per_ip_per_s=10_000,
        conn_burst_per_ip=10_000,
        shutdown_timeout_s=3,
        gateway_metrics_port=0,
        dev_mode=True,
    )


@pytest.fixture
async def gateway(csettings: Settings) -> AsyncIterator[Gateway]:
    gw = await start_gateway(csettings)
    yield gw
    await gw.runner.cleanup()


def _slot_of(topic: str, settings: Settings) -> int:
    """The slot of the topic's bus shard (and of its history)."""
    return int(key_slot(keys.bus_key(keys.shard_of(topic, settings.bus_shards)).encode()))


def _nodes(cluster: RedisClusterServer) -> dict[int, tuple[str, str]]:
    """port -> (node id, role) as node 0 sees them."""
    with redis.Redis(port=cluster.ports[0]) as r:
        nodes: Any = r.execute_command("CLUSTER NODES")
    return {
        int(a.split(":")[1].split("@")[0]): (n["node_id"], n["flags"]) for a, n in nodes.items()
    }


def _owner(cluster: RedisClusterServer, slot: int) -> int:
    for port in cluster.ports:
        with redis.Redis(port=port) as r:
            try:
                r.execute_command("CLUSTER COUNTKEYSINSLOT", slot)
                shards: Any = r.execute_command("CLUSTER SLOTS")
            except redis.exceptions.ConnectionError:
                continue
        for lo, hi, master, *_ in shards:
            if lo <= slot <= hi:
                return int(master[1])
    raise AssertionError(f"no owner of slot {slot}")


def _move_slot(cluster: RedisClusterServer, slot: int, source: int, target: int) -> None:
    """Reshard one slot as redis-cli does: IMPORTING/MIGRATING, MIGRATE its keys, NODE."""
    ids = {port: node_id for port, (node_id, _) in _nodes(cluster).items()}
    with redis.Redis(port=source) as src, redis.Redis(port=target) as dst:
        dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", ids[source])
        src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", ids[target])
        while moving := src.execute_command("CLUSTER GETKEYSINSLOT", slot, 100):
            src.execute_command("MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *moving)
        for port in cluster.master_ports:
            with redis.Redis(port=port) as r:
                r.execute_command("CLUSTER SETSLOT", slot, "NODE", ids[target])


async def _publish(publisher: Publisher, topic: str, n: int, within: float = 20) -> str:
    """Publish, retrying while the cluster fails over (a publisher's caller retries too)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        try:
            return await publisher.publish(topic, "t.n", {"n": n})
        except redisconn.ERRORS:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _subscribe(
    http: aiohttp.ClientSession, gateway: Gateway, settings: Settings, topic: str
) -> aiohttp.ClientWebSocketResponse:
    cohort = topic.split(":", 1)[1]
    tok = issue_access_token(settings, sub="u" + cohort, role="student", cohorts=[cohort])
    ws, _ = await ws_open(http, f"{gateway.ws_url}?token={tok}")
    await ws.send_json({"type": "sub", "ref": "s", "topics": [topic]})
    assert (await recv_json(ws))["type"] == "subscribed"
    return ws


async def _events(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[int]:
    got: list[int] = []
    while len(got) < count:
        frame = await recv_json(ws, 20)
        assert frame["type"] == "event", frame  # never a reset: nothing was lost
        got.append(frame["data"]["n"])
    return got


async def test_reader_follows_a_resharded_bus_slot(
    cluster: RedisClusterServer, gateway: Gateway, csettings: Settings
) -> None:
    topic = f"cohort:{uuid.uuid4().hex[:8]}"
    slot = _slot_of(topic, csettings)
    client = redisconn.connect(cluster.url, cluster=True)
    publisher = Publisher(client, csettings)
    try:
        async with aiohttp.ClientSession() as http:
            ws = await _subscribe(http, gateway, csettings, topic)
            for n in range(3):
                await _publish(publisher, topic, n)
            assert await _events(ws, 3) == [0, 1, 2]
            source = _owner(cluster, slot)
            target = next(p for p in cluster.master_ports if p != source)
            _move_slot(cluster, slot, source, target)
            assert _owner(cluster, slot) == target
            for n in range(3, 8):
                await _publish(publisher, topic, n)
            assert await _events(ws, 5) == [3, 4, 5, 6, 7]
            await expect_silence(ws, 0.5)  # and no duplicate
            await until(lambda: gateway.app[BUS].connected, 10)
            await ws.close()
    finally:
        await client.aclose()


async def test_a_durable_publish_follows_a_resharded_slot(
    cluster: RedisClusterServer, csettings: Settings
) -> None:
    """Durable mode sends the script and ``WAIT`` straight to the slot's master on one
    connection: after the slot moves, the first attempt gets ``MOVED`` and must re-read the map
    and wait on the new master (its replica acknowledges, nothing is under-replicated)."""
    settings = load_settings(
        {},
        redis_url=cluster.url,
        redis_cluster=True,
        publish_wait_replicas=1,
        publish_wait_timeout_ms=5000,
    )
    topic = f"cohort:{uuid.uuid4().hex[:8]}"
    slot = _slot_of(topic, settings)
    client = redisconn.connect(cluster.url, cluster=True)
    publisher = Publisher(client, settings)
    assert publisher.waiter is not None
    try:
        first = await publisher.publish(topic, "t.n", {"n": 0})
        source = _owner(cluster, slot)
        target = next(p for p in cluster.master_ports if p != source)
        _move_slot(cluster, slot, source, target)
        second = await publisher.publish(topic, "t.n", {"n": 1})
        history: Any = await client.xrange(keys.history_key(topic, settings.bus_shards))
        assert [e.decode() for e, _ in history] == [first, second]
        assert publisher.waiter.under_replicated == 0
    finally:
        await client.aclose()


async def _replicated(port: int, within: float = 15) -> None:
    """Wait until every replica of the master on ``port`` acknowledged all it was sent (a
    fixed sleep was not enough on a loaded machine: replicas acknowledge once a second)."""
    node = redis.Redis(host="127.0.0.1", port=port)
    try:
        async with asyncio.timeout(within):
            while True:
                info: Any = await asyncio.to_thread(node.info, "replication")
                offset = info["master_repl_offset"]
                replicas = [v for k, v in info.items() if k.startswith("slave") and k[5:].isdigit()]
                if replicas and all(r["offset"] >= offset for r in replicas):
                    return
                await asyncio.sleep(0.1)
    finally:
        node.close()


def _topic_on(cluster: RedisClusterServer, settings: Settings, port: int) -> str:
    """A topic whose bus shard's slot the master on ``port`` owns."""
    while True:
        topic = f"cohort:{uuid.uuid4().hex[:8]}"
        if _owner(cluster, _slot_of(topic, settings)) == port:
            return topic


async def test_reader_survives_a_master_killed_and_its_replica_promoted(
    cluster: RedisClusterServer, gateway: Gateway, csettings: Settings
) -> None:
    """The killed master is the node named in ``REDIS_URL``: the gateway's main client, idle
    until the recovery's history read, must still find the cluster through the nodes the bus
    reader's client learned (before :mod:`config.redisconn` shared them, it knew only the dead
    node and failed for good, in the 1 run in 3 where the topic's slot lived there)."""
    victim = cluster.ports[0]
    assert cluster.url.endswith(f":{victim}/0")
    topic = _topic_on(cluster, csettings, victim)
    slot = _slot_of(topic, csettings)
    client = redisconn.connect(cluster.url, cluster=True)
    publisher = Publisher(client, csettings)
    try:
        async with aiohttp.ClientSession() as http:
            ws = await _subscribe(http, gateway, csettings, topic)
            for n in range(3):
                await _publish(publisher, topic, n)
            assert await _events(ws, 3) == [0, 1, 2]
            await _replicated(victim)  # this test is about the reader, not replication loss
            cluster.kill_node(victim)
            for n in range(3, 6):
                await _publish(publisher, topic, n)
            assert _owner(cluster, slot) != victim
            assert await _events(ws, 3) == [3, 4, 5]
            await expect_silence(ws, 0.5)  # and no duplicate
            await until(lambda: gateway.app[BUS].connected, 10)
            await ws.close()
    finally:
        await client.aclose()
