"""Background jobs on Redis Streams (DESIGN.md section 5).

``enqueue`` is what producers (the API, other jobs) call. The consumer side lives below it.
"""

from __future__ import annotations

from typing import Any

import msgspec
import redis.asyncio as aioredis

from config import keys

_encoder = msgspec.json.Encoder()

JOB_STREAM_MAXLEN = 1_000_000


async def enqueue(
    redis: aioredis.Redis | Any, queue: str, payload: dict[str, Any], *, attempt: int = 0
) -> str:
    """Append a job; returns its entry ID. ``redis`` may be a client or a pipeline.

    Delivery is at least once: handlers must be idempotent (unique keys in PostgreSQL).
    """
    fields: dict[Any, Any] = {"p": _encoder.encode(payload), "a": str(attempt)}
    entry = await redis.xadd(
        keys.job_stream(queue), fields, maxlen=JOB_STREAM_MAXLEN, approximate=True
    )
    return entry.decode() if isinstance(entry, bytes) else str(entry)
