"""The outbox relay: publishes the events that transactions wrote to the ``outbox`` table.

A change and the events it causes commit together (DESIGN.md section 6): the writer inserts
outbox rows in its own transaction and sends ``NOTIFY lectern_outbox``
(``workers.outbox_write.emit``).
The relay wakes up on that notification, or every :data:`POLL_INTERVAL_S` when notifications are
lost (the listening connection broke, the relay started late), and publishes.

Guarantees:

* **Nothing lost.** Rows are selected, published and marked ``published_at`` in one
  transaction. If publishing fails (Redis down) the transaction rolls back, the rows stay
  unpublished and the relay tries again with backoff, so events committed while Redis was down
  go out once it is back.
* **Once.** Each row is published with the idempotency token ``outbox:<id>``: if the process
  dies after publishing but before its commit, the next relay publishes the rows again and
  gets the event IDs they already have, appending nothing (``gateway.publish``; the token lives
  ``publish_once_ttl_s``, far longer than a relay takes to be replaced).
* **Order per topic is outbox id order** among committed rows: one relay at a time holds the
  transaction-level advisory lock :data:`LOCK_ID`, reads the oldest unpublished rows in id order
  and publishes them in that order (``Publisher.publish_many`` keeps the order of one topic).
  Without that lock two relays could publish two batches of the same topic concurrently.
  Ids are assigned at insert, not at commit: a row committed after a higher id was already
  published goes out after it, i.e. in commit order.
* Published rows are deleted by :func:`purge_published` after :data:`KEEP_PUBLISHED_S`
  (the scheduler calls it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg
import msgspec
import redis.exceptions

from config.retry import Backoff
from workers import metrics
from workers.context import WorkerContext

log = logging.getLogger("lectern.workers.outbox_relay")

CHANNEL = "lectern_outbox"
BATCH = 500
POLL_INTERVAL_S = 1.0
#: Advisory lock key for "one relay publishes at a time" ("OUTBOX" in ASCII).
LOCK_ID = 0x4F5554424F58
KEEP_PUBLISHED_S = 24 * 3600

_SELECT = """
SELECT id, topic, type, data::text AS data FROM outbox
WHERE published_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED
"""
_MARK = "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])"

_decoder = msgspec.json.Decoder()


async def relay_batch(ctx: WorkerContext, limit: int = BATCH) -> int | None:
    """Publish up to ``limit`` of the oldest unpublished rows; returns how many, or None when
    another relay holds the lock. Raises when Redis or PostgreSQL fails (nothing is marked)."""
    assert ctx.db is not None
    async with ctx.db.acquire() as conn, conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", LOCK_ID):
            return None
        rows = await conn.fetch(_SELECT, limit)
        if not rows:
            return 0
        events = [(r["topic"], r["type"], _decoder.decode(r["data"])) for r in rows]
        await ctx.publisher.publish_many(events, [f"outbox:{r['id']}" for r in rows])
        await conn.execute(_MARK, [r["id"] for r in rows])
    metrics.outbox_published.inc(len(rows))
    return len(rows)


async def relay_all(ctx: WorkerContext) -> int:
    """Publish until no unpublished row is left (or another relay holds the lock)."""
    total = 0
    while True:
        count = await relay_batch(ctx)
        if not count:
            return total
        total += count
        if count < BATCH:
            return total


async def purge_published(ctx: WorkerContext, older_than_s: int = KEEP_PUBLISHED_S) -> int:
    """Delete rows published more than ``older_than_s`` ago, in bounded batches."""
    assert ctx.db is not None
    deleted = 0
    while True:
        result = await ctx.db.execute(
            """
            DELETE FROM outbox WHERE id IN (
                SELECT id FROM outbox WHERE published_at < now() - make_interval(secs => $1)
                ORDER BY id LIMIT 5000)
            """,
            float(older_than_s),
        )
        count = int(result.split()[-1])
        deleted += count
        if count < 5000:
            return deleted


class _Listener:
    """A dedicated connection LISTENing on :data:`CHANNEL`; reconnects when it breaks."""

    def __init__(self, dsn: str, wake: asyncio.Event) -> None:
        self.dsn = dsn
        self.wake = wake
        self.conn: asyncpg.Connection | None = None

    def _notified(self, *_: Any) -> None:
        self.wake.set()

    async def ensure(self) -> None:
        if self.conn is not None and not self.conn.is_closed():
            return
        await self.close()
        try:
            conn = await asyncpg.connect(self.dsn, timeout=5)
            await conn.add_listener(CHANNEL, self._notified)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            log.warning("outbox listen failed: %s", exc)
            return
        self.conn = conn
        # Rows committed while nobody listened: look at once.
        self.wake.set()

    async def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await self.conn.close(timeout=2)
            self.conn = None


async def run_outbox_relay(ctx: WorkerContext) -> None:
    """Service: publish outbox rows as they commit, until cancelled."""
    if ctx.db is None or not ctx.settings.database_url:
        return
    wake = asyncio.Event()
    listener = _Listener(ctx.settings.database_url, wake)
    backoff = Backoff()
    try:
        while True:
            await listener.ensure()
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancel that lands
            # in the same loop turn as a wake-up, and the loop would outlive its shutdown.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(POLL_INTERVAL_S):
                    await wake.wait()
            wake.clear()
            try:
                await relay_all(ctx)
                backoff.reset()
            except (
                redis.exceptions.RedisError,
                redis.exceptions.RedisClusterException,
                OSError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
            ) as exc:
                delay = backoff.next_delay()
                log.warning("outbox relay failed, retrying in %.1fs: %s", delay, exc)
                await asyncio.sleep(delay)
                wake.set()
    finally:
        await listener.close()
