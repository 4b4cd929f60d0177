"""History reads for resumes (gateway/history.py) against a real Redis: paged without a gap,
coalesced across identical reads, and a trim that overtakes a paged read is a reset."""

from __future__ import annotations

import asyncio
from typing import Any

import redis
import redis.asyncio as aioredis

from config import keys
from config.settings import Settings
from gateway import metrics, protocol
from gateway.history import HistoryReader
from gateway.publish import Publisher


def _nothing(topic: str) -> str | None:
    """No event of the topic dispatched by the bus yet."""
    return None


def _count(source: str) -> float:
    return metrics.history_reads.labels(source)._value.get()


async def _publish(publisher: Publisher, topic: str, n: int) -> list[str]:
    return await publisher.publish_many((topic, "tick", {"seq": i}) for i in range(n))


async def test_paged_read_returns_every_event_in_order(
    redis: aioredis.Redis, publisher: Publisher, settings: Settings, uid: str
) -> None:
    topic = f"cohort:h{uid}"
    ids = await _publish(publisher, topic, 10)
    reader = HistoryReader(redis, settings.bus_shards, 4, _nothing, page=3)

    recs, reset = await reader.read(topic, protocol.EMPTY_CURSOR)
    assert not reset
    assert [r.id for r in recs] == ids

    recs, reset = await reader.read(topic, ids[4])
    assert not reset
    assert [r.id for r in recs] == ids[5:]

    recs, reset = await reader.read(topic, ids[-1])
    assert (recs, reset) == ([], False)


async def test_topic_without_history(redis: aioredis.Redis, settings: Settings, uid: str) -> None:
    reader = HistoryReader(redis, settings.bus_shards, 4, _nothing)
    topic = f"cohort:none{uid}"
    assert await reader.read(topic, protocol.EMPTY_CURSOR) == ([], False)
    # A client that saw events of a topic whose history is gone may have missed some.
    assert await reader.read(topic, "1700000000000-0") == ([], True)


async def test_identical_reads_in_flight_share_one_redis_read(
    redis: aioredis.Redis, publisher: Publisher, settings: Settings, uid: str
) -> None:
    topic = f"cohort:h{uid}"
    ids = await _publish(publisher, topic, 5)
    reader = HistoryReader(redis, settings.bus_shards, 4, _nothing)
    went, shared = _count("redis"), _count("shared")

    results = await asyncio.gather(*(reader.read(topic, ids[0]) for _ in range(50)))

    assert _count("redis") - went == 1
    assert _count("shared") - shared == 49
    first = results[0][0]
    assert [r.id for r in first] == ids[1:]
    # The same Record objects: each event's frame is then built once for every resumer.
    assert all(recs is first for recs, _ in results)
    # A read from another cursor is its own read.
    recs, _ = await reader.read(topic, ids[2])
    assert [r.id for r in recs] == ids[3:]
    assert _count("redis") - went == 2


async def test_a_waiter_that_leaves_does_not_cancel_the_shared_read(
    redis: aioredis.Redis, publisher: Publisher, settings: Settings, uid: str
) -> None:
    topic = f"cohort:h{uid}"
    ids = await _publish(publisher, topic, 3)
    reader = HistoryReader(redis, settings.bus_shards, 4, _nothing)
    leaver = asyncio.create_task(reader.read(topic, ids[0]))
    stayer = asyncio.create_task(reader.read(topic, ids[0]))
    await asyncio.sleep(0)
    leaver.cancel()
    recs, reset = await stayer
    assert not reset
    assert [r.id for r in recs] == ids[1:]
    assert leaver.cancelled()


class _TrimAfterFirstPage:
    """A real Redis client that, once the reader's first page was sent, trims the topic's
    history the way publishing does (exact MAXLEN, floor = newest trimmed ID), as a burst of
    publishes racing the resume would."""

    def __init__(self, client: aioredis.Redis, url: str, history: str, floor: str) -> None:
        self._client = client
        self._sync = redis.Redis.from_url(url)
        self._history, self._floor = history, floor
        self.pipelines = 0

    def pipeline(self, transaction: bool = True) -> Any:
        self.pipelines += 1
        if self.pipelines == 2:
            keep = self._sync.xrevrange(self._history, count=2)
            trimmed = self._sync.xrange(self._history, max=f"({keep[-1][0].decode()}")
            self._sync.xtrim(self._history, maxlen=2, approximate=False)
            self._sync.set(self._floor, trimmed[-1][0])
        return self._client.pipeline(transaction=transaction)


async def test_a_trim_that_overtakes_a_paged_read_is_a_reset(
    redis: aioredis.Redis, publisher: Publisher, settings: Settings, uid: str
) -> None:
    topic = f"cohort:h{uid}"
    ids = await _publish(publisher, topic, 8)
    history = keys.history_key(topic, settings.bus_shards)
    floor = keys.floor_key(topic, settings.bus_shards)
    racing = _TrimAfterFirstPage(redis, settings.redis_url, history, floor)
    reader = HistoryReader(racing, settings.bus_shards, 4, _nothing, page=2)  # type: ignore[arg-type]

    # Page 1 holds ids[1:3]; then everything up to ids[5] is trimmed: ids[3:6] are gone.
    recs, reset = await reader.read(topic, ids[0])

    assert racing.pipelines == 2
    assert reset
    assert recs == []


class _HeldAfterRead:
    """A real Redis client whose pipelines return only when ``release`` is set, so a test can
    act between a read's Redis round trip and its result."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self.sent = asyncio.Event()
        self.release = asyncio.Event()

    def pipeline(self, transaction: bool = True) -> Any:
        pipe = self._client.pipeline(transaction=transaction)
        execute = pipe.execute

        async def held() -> Any:
            result = await execute()
            self.sent.set()
            await self.release.wait()
            return result

        pipe.execute = held  # type: ignore[method-assign]
        return pipe


async def test_a_joiner_reads_on_when_the_shared_read_left_redis_before_its_event(
    redis: aioredis.Redis, publisher: Publisher, settings: Settings, uid: str
) -> None:
    """The shared read's XRANGE ran before event c was published; the bus then dispatched c
    before the joiner registered, so the joiner would never see c live: it must read on."""
    topic = f"cohort:h{uid}"
    a, b = await _publish(publisher, topic, 2)
    dispatched: dict[str, str] = {}
    held = _HeldAfterRead(redis)
    reader = HistoryReader(held, settings.bus_shards, 4, dispatched.get)  # type: ignore[arg-type]

    first = asyncio.create_task(reader.read(topic, a))
    await held.sent.wait()
    (c,) = await _publish(publisher, topic, 1)
    dispatched[topic] = c
    joiner = asyncio.create_task(reader.read(topic, a))
    await asyncio.sleep(0)
    held.release.set()

    recs, reset = await first
    assert not reset and [r.id for r in recs] == [b]
    recs, reset = await joiner
    assert not reset and [r.id for r in recs] == [b, c]
