"""Backlog gauges: how much work is waiting, sampled every ``SAMPLE_S`` seconds.

Every worker process samples the same shared state (queue streams, delayed sets, dead-letter
streams, the outbox table), so each reports the same values: dashboards and alerts take the
``max`` over processes. A sample that fails counts in ``lectern_worker_backend_errors_total``
(the process cannot reach Redis or PostgreSQL) and leaves the gauges at their last value.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncpg

from config import keys, redisconn
from workers import metrics
from workers.context import WorkerContext
from workers.job_runner import load_handlers
from workers.jobs import JOB_HANDLERS

log = logging.getLogger("lectern.workers.backlog")

SAMPLE_S = 5.0

_OUTBOX = """
SELECT count(*) AS n,
       coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest
FROM outbox WHERE published_at IS NULL
"""


async def sample_queues(ctx: WorkerContext) -> None:
    """Set the depth, delayed and dead-letter gauges of every queue with a handler."""
    load_handlers()
    queues = sorted(JOB_HANDLERS)
    pipe = ctx.redis.pipeline(transaction=False)
    for queue in queues:
        pipe.xlen(keys.job_stream(queue))
        pipe.zcard(keys.job_delayed_key(queue))
        pipe.xlen(keys.dead_letter_stream(queue))
    values: list[Any] = await pipe.execute()
    for i, queue in enumerate(queues):
        depth, delayed, dead = values[3 * i : 3 * i + 3]
        metrics.queue_depth.labels(queue).set(depth)
        metrics.queue_delayed.labels(queue).set(delayed)
        metrics.dead_letter_depth.labels(queue).set(dead)


async def sample_outbox(ctx: WorkerContext) -> None:
    """Set the outbox backlog gauges (rows not yet published, age of the oldest)."""
    if ctx.db is None:
        return
    row = await ctx.db.fetchrow(_OUTBOX)
    assert row is not None
    metrics.outbox_backlog.set(row["n"])
    metrics.outbox_oldest_seconds.set(row["oldest"])


async def run_backlog_gauges(ctx: WorkerContext) -> None:
    """Service: sample the backlog gauges until cancelled."""
    while True:
        try:
            await sample_queues(ctx)
        except redisconn.ERRORS as exc:
            metrics.backend_errors.labels("redis").inc()
            log.warning("queue sample failed: %s", exc)
        try:
            await sample_outbox(ctx)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            metrics.backend_errors.labels("postgres").inc()
            log.warning("outbox sample failed: %s", exc)
        await asyncio.sleep(SAMPLE_S)
