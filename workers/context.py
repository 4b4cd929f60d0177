"""What every worker service gets: settings, Redis, the PostgreSQL pool and the publisher."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

import asyncpg
import redis.asyncio as aioredis

from config import redisconn
from config.settings import Settings
from gateway.publish import Publisher


@dataclass
class WorkerContext:
    settings: Settings
    redis: aioredis.Redis
    db: asyncpg.Pool | None
    publisher: Publisher
    #: Unique per process: the consumer name in every consumer group.
    consumer: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")

    @classmethod
    async def open(cls, settings: Settings, *, with_db: bool = True) -> WorkerContext:
        redis = redisconn.connect(
            settings.redis_url,
            cluster=settings.redis_cluster,
            socket_connect_timeout=2,
            socket_timeout=None,
        )
        db = None
        if with_db and settings.database_url:
            db = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=10)
        return cls(settings, redis, db, Publisher(redis, settings))

    async def close(self) -> None:
        if self.db is not None:
            await self.db.close()
        await self.redis.aclose()
