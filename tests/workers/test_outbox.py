"""The outbox relay: events committed with a change reach Redis (and clients) in id order, and
events committed while Redis was down go out once it is back."""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from config import keys
from config.servers import RedisServer
from config.settings import Settings
from gateway.publish import Publisher
from tests.workers.helpers import Workers, eventually, listening, steady
from workers.context import WorkerContext
from workers.outbox_relay import relay_all, run_outbox_relay
from workers.outbox_write import Addressed, emit, emit_many


async def history(redis: aioredis.Redis, settings: Settings, topic: str) -> list[tuple[str, Any]]:
    entries = await redis.xrange(keys.history_key(topic, settings.bus_shards))
    return [(f[b"t"].decode(), msgspec.json.decode(f[b"d"])) for _, f in entries]


async def unpublished(ctx: WorkerContext, topic: str) -> int:
    assert ctx.db is not None
    return int(
        await ctx.db.fetchval(
            "SELECT count(*) FROM outbox WHERE topic = $1 AND published_at IS NULL", topic
        )
    )


async def listening_relays(ctx: WorkerContext) -> int:
    assert ctx.db is not None
    return int(
        await ctx.db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'LISTEN %lectern_outbox%'"
        )
    )


async def test_rows_are_published_in_id_order_and_marked(wsettings: Settings) -> None:
    topic = f"user:{uuid.uuid4().hex[:8]}"
    async with Workers(wsettings) as w:
        assert w.ctx.db is not None
        async with w.ctx.db.acquire() as conn, conn.transaction():
            await emit_many(conn, [Addressed(topic, "step", {"n": n}) for n in range(5)])
        async with w.ctx.db.acquire() as conn, conn.transaction():
            await emit(conn, Addressed(topic, "step", {"n": 5}))
        await relay_all(w.ctx)
        assert await history(w.ctx.redis, wsettings, topic) == [
            ("step", {"n": n}) for n in range(6)
        ]
        assert await unpublished(w.ctx, topic) == 0
        await relay_all(w.ctx)  # nothing is published twice
        assert len(await history(w.ctx.redis, wsettings, topic)) == 6


class _DiesAfterPublishing(Publisher):
    """Publishes for real, then the relay dies before it can mark the rows."""

    async def publish_many(self, *args: Any, **kw: Any) -> list[str]:
        await super().publish_many(*args, **kw)
        raise ConnectionError("the relay died between publish and commit")


async def test_a_relay_that_dies_after_publishing_is_not_published_twice(
    wsettings: Settings,
) -> None:
    topic = f"user:{uuid.uuid4().hex[:8]}"
    async with Workers(wsettings) as w:
        assert w.ctx.db is not None
        async with w.ctx.db.acquire() as conn, conn.transaction():
            await emit_many(conn, [Addressed(topic, "step", {"n": n}) for n in range(3)])
        real = w.ctx.publisher
        w.ctx.publisher = _DiesAfterPublishing(w.ctx.redis, wsettings)
        with pytest.raises(ConnectionError):
            await relay_all(w.ctx)
        assert await unpublished(w.ctx, topic) == 3  # rolled back: the next relay retries
        w.ctx.publisher = real
        await relay_all(w.ctx)
        assert await unpublished(w.ctx, topic) == 0
        assert await history(w.ctx.redis, wsettings, topic) == [
            ("step", {"n": n}) for n in range(3)
        ]


async def test_rolled_back_change_publishes_nothing(wsettings: Settings) -> None:
    topic = f"user:{uuid.uuid4().hex[:8]}"
    async with Workers(wsettings) as w:
        assert w.ctx.db is not None
        async with w.ctx.db.acquire() as conn:
            try:
                async with conn.transaction():
                    await emit(conn, Addressed(topic, "ghost", {}))
                    raise RuntimeError("the change failed")
            except RuntimeError:
                pass
        await relay_all(w.ctx)
        assert await history(w.ctx.redis, wsettings, topic) == []


async def test_notify_wakes_the_relay_and_a_gateway_client_gets_the_event(
    wsettings: Settings,
) -> None:
    """A committed event reaches a WebSocket client through the relay and a real gateway,
    well before the relay's one-second poll would have found it."""
    user = uuid.uuid4().hex[:8]
    async with (
        Workers(wsettings, run_outbox_relay) as w,
        listening(wsettings, user, [f"user:{user}"]) as client,
    ):
        assert w.ctx.db is not None
        await eventually(lambda: listening_relays(w.ctx))
        start = time.monotonic()
        async with w.ctx.db.acquire() as conn, conn.transaction():
            await emit(conn, Addressed(f"user:{user}", "progress.update", {"lesson": 3}))
        frame = await client.next_event("progress.update")
        assert frame["data"] == {"lesson": 3} and frame["topic"] == f"user:{user}"
        assert time.monotonic() - start < 0.9


async def test_events_committed_while_redis_is_down_go_out_when_it_is_back(
    wsettings: Settings,
) -> None:
    """Redis dies; changes keep committing with their events; nothing is published and
    nothing is lost; Redis comes back on the same port and the events go out, in order."""
    server = RedisServer().start()
    try:
        settings = msgspec.structs.replace(wsettings, redis_url=server.url)
        topic = f"cohort:{uuid.uuid4().hex[:8]}"
        async with Workers(settings, run_outbox_relay) as w:
            assert w.ctx.db is not None
            async with w.ctx.db.acquire() as conn, conn.transaction():
                await emit(conn, Addressed(topic, "announcement.new", {"n": 0}))
            await eventually(lambda: _none_left(w.ctx, topic))
            server.kill()
            for n in (1, 2, 3):
                async with w.ctx.db.acquire() as conn, conn.transaction():
                    await emit(conn, Addressed(topic, "announcement.new", {"n": n}))
            await steady(lambda: unpublished(w.ctx, topic), 3, 0.6)
            server.start()  # same port, empty: the history is gone, the outbox is not
            events = await eventually(lambda: _history_or_empty(w.ctx.redis, settings, topic))
            assert events == [("announcement.new", {"n": n}) for n in (1, 2, 3)]
            await eventually(lambda: _none_left(w.ctx, topic))
    finally:
        server.stop()


async def _none_left(ctx: WorkerContext, topic: str) -> bool:
    return await unpublished(ctx, topic) == 0


async def _history_or_empty(
    redis: aioredis.Redis, settings: Settings, topic: str
) -> list[tuple[str, Any]]:
    try:
        events = await history(redis, settings, topic)
    except (ConnectionError, OSError, aioredis.RedisError):
        return []
    return events if len(events) >= 3 else []
