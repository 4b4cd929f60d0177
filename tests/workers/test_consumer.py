"""The consumer-group reader shared by jobs, commands and presence, on a real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from config.servers import free_port
from workers.consumer import GroupReader


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    r = aioredis.Redis.from_url(redis_url)
    yield r
    await r.aclose()


def reader(client: aioredis.Redis, stream: str, consumer: str, **kw: Any) -> GroupReader:
    options: dict[str, Any] = {
        "start_id": "0",
        "claim_idle_ms": 50,
        "claim_every_s": 0.0,
        "block_ms": 50,
    }
    options.update(kw)
    return GroupReader(client, "g", consumer, [stream], **options)


async def test_new_entries_then_reclaim_of_an_idle_consumer(
    client: aioredis.Redis, uid: str
) -> None:
    """A second consumer takes over what the first read and never acknowledged, with its
    delivery count; acknowledged entries are not delivered again."""
    stream = f"test:consumer:{uid}"
    first = reader(client, stream, "a", count_deliveries=True)
    await first.ensure_groups()
    ids = [await client.xadd(stream, {"n": str(i)}) for i in range(3)]
    got = await first.next_batch(10)
    assert [d.id for d in got] == ids and all(d.deliveries == 1 for d in got)
    await first.ack(stream, ids[0])
    await asyncio.sleep(0.1)
    second = reader(client, stream, "b", count_deliveries=True)
    taken = await second.next_batch(10)
    assert [d.id for d in taken] == ids[1:]
    assert [d.fields for d in taken] == [{b"n": b"1"}, {b"n": b"2"}]
    assert all(d.deliveries == 2 for d in taken)


async def test_an_entry_deleted_while_pending_is_not_delivered(
    client: aioredis.Redis, uid: str
) -> None:
    stream = f"test:consumer:{uid}"
    first = reader(client, stream, "a")
    await first.ensure_groups()
    eid = await client.xadd(stream, {"n": "1"})
    assert [d.id for d in await first.next_batch(10)] == [eid]
    await client.xdel(stream, eid)
    await asyncio.sleep(0.1)
    assert await reader(client, stream, "b").next_batch(10) == []


async def test_a_deleted_group_is_recreated(client: aioredis.Redis, uid: str) -> None:
    """NOGROUP (the stream was deleted, e.g. Redis flushed): the group comes back and new
    entries are read without an error reaching the caller."""
    stream = f"test:consumer:{uid}"
    r = reader(client, stream, "a", start_id="0")
    await r.ensure_groups()
    await client.delete(stream)
    eid = await client.xadd(stream, {"n": "1"})
    assert [d.id for d in await r.next_batch(10)] == [eid]


async def test_redis_down_is_retried_with_backoff() -> None:
    """With nothing listening, next_batch keeps retrying (growing delays) instead of raising."""
    down = aioredis.Redis(port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    r = reader(down, "test:consumer:down", "a")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(r.next_batch(10), 1.0)
    assert r.backoff.delay_s > 0.2  # it failed, waited and doubled at least twice
    await down.aclose()
