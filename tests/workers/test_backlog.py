"""The backlog gauges (workers/backlog.py) read the real queue streams and outbox table."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from config import keys
from config.settings import Settings
from tests.workers.helpers import migrated
from workers import metrics
from workers.backlog import sample_outbox, sample_queues
from workers.context import WorkerContext
from workers.jobs import enqueue


@pytest.fixture
async def ctx(wsettings: Settings) -> AsyncIterator[WorkerContext]:
    await migrated(wsettings.database_url)
    context = await WorkerContext.open(wsettings)
    yield context
    await context.close()


def _gauge(name: str, queue: str | None = None) -> float | None:
    return metrics.registry.get_sample_value(name, {"queue": queue} if queue else {})


async def test_queue_depth_counts_jobs_waiting_in_the_stream(ctx: WorkerContext) -> None:
    stream = keys.job_stream("email")
    base = await ctx.redis.xlen(stream)
    ids = [await enqueue(ctx.redis, "email", {"probe": n}) for n in range(3)]
    try:
        await sample_queues(ctx)
        assert _gauge("lectern_worker_queue_depth", "email") == base + 3
        assert _gauge("lectern_worker_queue_delayed", "email") == await ctx.redis.zcard(
            keys.job_delayed_key("email")
        )
    finally:
        await ctx.redis.xdel(stream, *ids)


async def test_outbox_backlog_counts_unpublished_rows_and_their_age(ctx: WorkerContext) -> None:
    assert ctx.db is not None
    row_id = await ctx.db.fetchval(
        "INSERT INTO outbox (topic, type, created_at) VALUES ('probe:x', 'probe', "
        "now() - interval '90 seconds') RETURNING id"
    )
    try:
        await sample_outbox(ctx)
        assert _gauge("lectern_worker_outbox_backlog") >= 1
        assert _gauge("lectern_worker_outbox_oldest_seconds") >= 90
        await ctx.db.execute("UPDATE outbox SET published_at = now() WHERE id = $1", row_id)
        unpublished = await ctx.db.fetchval(
            "SELECT count(*) FROM outbox WHERE published_at IS NULL"
        )
        await sample_outbox(ctx)
        assert _gauge("lectern_worker_outbox_backlog") == unpublished
    finally:
        await ctx.db.execute("DELETE FROM outbox WHERE id = $1", row_id)
