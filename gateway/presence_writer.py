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

**Lease.** A gateway that dies sends no leaves, so each process holds a presence lease
(``keys.PRESENCE_LEASES``: lease id -> last refresh, ms) that :meth:`PresenceWriter.run_lease`
refreshes every ``presence_lease_interval_s``, and indexes its open subscriptions under it
(``keys.presence_subs_key``, written in the same pipeline as the records). When the lease is
not refreshed for ``presence_lease_grace_s`` the workers close those subscriptions as of the
last refresh (workers/presence_leases.py). A live gateway whose lease was nevertheless reaped
(Redis lost it, or the process stalled longer than the grace) notices on its next refresh
(the ``ZADD`` adds instead of updating), takes a new lease id and joins its subscriptions
again, so its members come back instead of staying gone. A clean shutdown flushes the leaves
and then removes the lease (:meth:`PresenceWriter.release`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from prometheus_client import Counter

from config import keys, redisconn, streams
from config.streams import LeasedSub, Presence, PresenceOp
from gateway import metrics

if TYPE_CHECKING:
    from gateway.connection import Conn

log = logging.getLogger("lectern.gateway.presence_writer")

MAX_QUEUE = 10_000
STREAM_MAXLEN = 100_000
#: A lease's subscription index outlives a dead gateway this long if no worker reaps it.
SUBS_TTL_S = 7 * 24 * 3600

dropped = Counter(
    "lectern_gateway_presence_dropped_total",
    "Presence records dropped (queue full or Redis unavailable).",
    registry=metrics.registry,
)
leases_lost = Counter(
    "lectern_gateway_presence_leases_lost_total",
    "Presence leases found reaped while this process was alive (its members joined again).",
    registry=metrics.registry,
)


def now_ms() -> int:
    return int(time.time() * 1000)


class PresenceWriter:
    def __init__(self, redis: aioredis.Redis, gateway_id: str, interval_s: float) -> None:
        self.redis = redis
        self.gateway_id = gateway_id
        self.interval_s = interval_s
        #: This process's lease id; a new one after a reaped lease (see the module docstring).
        self.lease = f"{gateway_id}.0"
        self._epoch = 0
        self._leased = False
        self._released = False
        #: Records to append, each with the subscription index of the lease it belongs to.
        self.queue: list[tuple[Presence, str]] = []
        #: (connection number, topic) -> (subscription id, connection), for the matching leave
        #: and for joining again under a new lease.
        self._subs: dict[tuple[int, str], tuple[str, Conn]] = {}
        self._seq = itertools.count(1)
        self._wake = asyncio.Event()

    def joined(self, conn: Conn, topic: str) -> None:
        sub = f"{conn.conn_id}.{next(self._seq)}"
        self._subs[(conn.id, topic)] = (sub, conn)
        self._put(PresenceOp.JOIN, conn, topic, sub)

    def left(self, conn: Conn, topic: str) -> None:
        held = self._subs.pop((conn.id, topic), None)
        if held is not None:
            self._put(PresenceOp.LEAVE, conn, topic, held[0])

    def _put(self, op: PresenceOp, conn: Conn, topic: str, sub: str) -> None:
        if len(self.queue) >= MAX_QUEUE:
            dropped.inc()
            return
        entry = Presence(op, conn.claims.sub, topic, sub, now_ms())
        self.queue.append((entry, keys.presence_subs_key(self.lease)))
        self._wake.set()

    async def flush(self) -> bool:
        """Append what is queued now, and index it under its lease; drop it (counted) if
        Redis refuses. True when nothing was dropped."""
        batch, self.queue = self.queue, []
        if not batch:
            return True
        pipe = self.redis.pipeline(transaction=False)
        for entry, index in batch:
            fields = streams.PRESENCE.encode(entry)
            pipe.xadd(keys.PRESENCE_STREAM, fields, maxlen=STREAM_MAXLEN, approximate=True)  # type: ignore[arg-type]
            if entry.op is PresenceOp.JOIN:
                sub = LeasedSub(entry.topic, entry.user, entry.ts)
                pipe.hset(index, entry.conn, streams.LEASED_SUB_ENCODER.encode(sub))
            else:
                pipe.hdel(index, entry.conn)
        try:
            await pipe.execute()
        except redisconn.ERRORS as exc:
            dropped.inc(len(batch))
            log.warning("presence records dropped: %s", exc)
            return False
        return True

    async def refresh(self) -> None:
        """Refresh the lease; if it was reaped meanwhile, take a new one and join again."""
        if self._released:
            return
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(keys.PRESENCE_LEASES, {self.lease: now_ms()})
        pipe.expire(keys.presence_subs_key(self.lease), SUBS_TTL_S)
        added, _ = await pipe.execute()
        if added and self._leased:
            self._renew()
            await self.redis.zadd(keys.PRESENCE_LEASES, {self.lease: now_ms()})
        self._leased = True

    def _renew(self) -> None:
        """The lease was reaped: its subscriptions were closed as of its last refresh. Open
        them again under a new lease id (queued records of the old one are moot)."""
        leases_lost.inc()
        log.warning("presence lease %s was reaped while alive: joining again", self.lease)
        old = keys.presence_subs_key(self.lease)
        self._epoch += 1
        self.lease = f"{self.gateway_id}.{self._epoch}"
        self.queue = [(entry, index) for entry, index in self.queue if index != old]
        for (_, topic), (_, conn) in list(self._subs.items()):
            self.joined(conn, topic)

    async def run_lease(self) -> None:
        """Refresh the lease every ``interval_s`` until cancelled (Redis errors: next time)."""
        while True:
            try:
                await self.refresh()
            except redisconn.ERRORS as exc:
                log.warning("presence lease not refreshed: %s", exc)
            await asyncio.sleep(self.interval_s)

    async def release(self) -> None:
        """At a clean shutdown: append the last records, then give the lease up (its
        subscriptions all left through the stream). Kept when the flush failed, so that the
        workers close what the lost leaves would have."""
        self._released = True
        if not await self.flush():
            return
        with contextlib.suppress(*redisconn.ERRORS):
            pipe = self.redis.pipeline(transaction=False)
            pipe.zrem(keys.PRESENCE_LEASES, self.lease)
            pipe.delete(keys.presence_subs_key(self.lease))
            await pipe.execute()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()
