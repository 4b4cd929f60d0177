"""Presence records: who joined or left a live room, for the attendance worker.

The hub calls :meth:`PresenceWriter.joined` when a connection's subscription to a ``live:``
topic is added and :meth:`PresenceWriter.left` when it is removed (unsubscribe, or disconnect,
which unsubscribes everything). Both only append to a bounded in-memory list; one writer task
(:meth:`PresenceWriter.run`) appends everything queued since its last round trip to
``keys.PRESENCE_STREAM`` with one pipeline (``MAXLEN ~ 100000``).

Contract: the hot path never waits on Redis. When Redis is down or slow, or the queue is full,
records are **dropped and counted** (``lectern_gateway_presence_dropped_total``): attendance is
best effort, and a dropped join is repaired by the client's next subscription, while a
dropped leave leaves the user listed (see workers/attendance.py). Records are
:class:`config.streams.Presence` entries.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from prometheus_client import Counter

from config import keys, redisconn, streams
from config.streams import Presence, PresenceOp
from gateway import metrics

if TYPE_CHECKING:
    from gateway.connection import Conn

log = logging.getLogger("lectern.gateway.presence_writer")

MAX_QUEUE = 10_000
STREAM_MAXLEN = 100_000

dropped = Counter(
    "lectern_gateway_presence_dropped_total",
    "Presence records dropped (queue full or Redis unavailable).",
    registry=metrics.registry,
)


class PresenceWriter:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self.queue: list[Presence] = []
        #: (connection number, topic) -> subscription id, for the matching leave.
        self._subs: dict[tuple[int, str], str] = {}
        self._seq = itertools.count(1)
        self._wake = asyncio.Event()

    def joined(self, conn: Conn, topic: str) -> None:
        sub = f"{conn.conn_id}.{next(self._seq)}"
        self._subs[(conn.id, topic)] = sub
        self._put(PresenceOp.JOIN, conn, topic, sub)

    def left(self, conn: Conn, topic: str) -> None:
        sub = self._subs.pop((conn.id, topic), None)
        if sub is not None:
            self._put(PresenceOp.LEAVE, conn, topic, sub)

    def _put(self, op: PresenceOp, conn: Conn, topic: str, sub: str) -> None:
        if len(self.queue) >= MAX_QUEUE:
            dropped.inc()
            return
        ts = int(time.time() * 1000)
        self.queue.append(Presence(op, conn.claims.sub, topic, sub, ts))
        self._wake.set()

    async def flush(self) -> None:
        """Append what is queued now; drop it (counted) if Redis refuses."""
        batch, self.queue = self.queue, []
        if not batch:
            return
        pipe = self.redis.pipeline(transaction=False)
        for entry in batch:
            fields = streams.PRESENCE.encode(entry)
            pipe.xadd(keys.PRESENCE_STREAM, fields, maxlen=STREAM_MAXLEN, approximate=True)  # type: ignore[arg-type]
        try:
            await pipe.execute()
        except redisconn.ERRORS as exc:
            dropped.inc(len(batch))
            log.warning("presence records dropped: %s", exc)

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()
