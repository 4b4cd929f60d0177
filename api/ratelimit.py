"""Fixed-window counters in Redis (``keys.ratelimit_key``), for registrations per IP.

A window starts at the first hit and lasts ``window_s``; every hit counts, allowed or not, so a
client that keeps hammering stays limited until it pauses for a whole window.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from config import keys


async def hit(redis: aioredis.Redis, scope: str, ident: str, limit: int, window_s: int) -> int:
    """Count one hit; return 0 when allowed, else the seconds until the window ends."""
    key = keys.ratelimit_key(scope, ident)
    pipe = redis.pipeline(transaction=True)
    pipe.set(key, 0, ex=window_s, nx=True)
    pipe.incr(key)
    pipe.ttl(key)
    _, count, ttl = await pipe.execute()
    if int(count) <= limit:
        return 0
    return max(1, int(ttl))
