"""Cohort leaderboards: a Redis sorted set per cohort, rebuilt from PostgreSQL at will.

A student's score on the board is the sum, over the cohort's quizzes, of their best graded
score on each quiz. PostgreSQL is the source of truth; the sorted set
``keys.leaderboard_key(cohort)`` is a cache of it that grading updates per student
(:func:`record`) and the scheduler rebuilds (:func:`rebuild`), so a lost Redis heals itself.
Writes are absolute (``ZADD`` of the recomputed total), hence idempotent.

``leaderboard.update`` events go to ``cohort:{id}`` at most once per :data:`INTERVAL_S` per
cohort across all processes, and the last change of a burst is never lost: the first change
after a quiet period publishes at once and opens a window (a Redis key with a TTL); changes
inside the window schedule one trailing publish at its end (a coalesced delayed job on the
``leaderboard`` queue), which reads the board as it is then.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec
import redis.asyncio as aioredis

from config import keys
from config.topics import cohort_topic
from workers import events
from workers.context import WorkerContext
from workers.events import Board, Entry
from workers.jobs import job, job_payload, schedule

#: Smallest time between two ``leaderboard.update`` events of a cohort.
INTERVAL_S = 2.0
#: Entries carried by a ``leaderboard.update`` event.
EVENT_TOP = 10
QUEUE = "leaderboard"


_TOTALS = """
SELECT best.user_id, sum(best.score)::float8 AS score
FROM (
    SELECT s.user_id, s.quiz_id, max(s.score) AS score
    FROM quiz_submissions s JOIN quizzes q ON q.id = s.quiz_id
    JOIN enrollments e ON e.cohort_id = q.cohort_id AND e.user_id = s.user_id
        AND e.kind = 'member'
    WHERE q.cohort_id = $1 AND s.status = 'graded' AND ($2::bigint IS NULL OR s.user_id = $2)
    GROUP BY s.user_id, s.quiz_id
) best
GROUP BY best.user_id
"""


async def record(
    db: asyncpg.Pool | asyncpg.Connection, redis: aioredis.Redis, cohort_id: int, user_id: int
) -> float | None:
    """Recompute one student's total and store it on the board; returns it (None: no grade)."""
    row = await db.fetchrow(_TOTALS, cohort_id, user_id)
    if row is None:
        return None
    score = float(row["score"])
    await redis.zadd(keys.leaderboard_key(str(cohort_id)), {str(user_id): score})
    return score


async def rebuild(
    db: asyncpg.Pool | asyncpg.Connection, redis: aioredis.Redis, cohort_id: int
) -> int:
    """Replace the cohort's board with the totals in PostgreSQL; returns its size."""
    rows = await db.fetch(_TOTALS, cohort_id, None)
    key = keys.leaderboard_key(str(cohort_id))
    pipe = redis.pipeline(transaction=True)
    pipe.delete(key)
    if rows:
        pipe.zadd(key, {str(r["user_id"]): float(r["score"]) for r in rows})
    await pipe.execute()
    return len(rows)


async def read(
    db: asyncpg.Pool | asyncpg.Connection,
    redis: aioredis.Redis,
    cohort_id: int,
    *,
    limit: int = EVENT_TOP,
    offset: int = 0,
) -> Board:
    """A page of the board, with display names; rebuilt first when the cache is missing."""
    key = keys.leaderboard_key(str(cohort_id))
    if not await redis.exists(key):
        await rebuild(db, redis, cohort_id)
    pipe = redis.pipeline(transaction=False)
    pipe.zrevrange(key, offset, offset + limit - 1, withscores=True)
    pipe.zcard(key)
    page, total = await pipe.execute()
    items: list[tuple[int, float]] = [(int(m), float(s)) for m, s in page]
    # Ties: by user id, whatever Redis' member order.
    items.sort(key=lambda item: (-item[1], item[0]))
    scores = sorted({s for _, s in items}, reverse=True)
    ranks: dict[float, int] = {}
    if scores:
        pipe = redis.pipeline(transaction=False)
        for score in scores:
            pipe.zcount(key, f"({score!r}", "+inf")
        ranks = {s: int(n) + 1 for s, n in zip(scores, await pipe.execute(), strict=True)}
    names: dict[int, str] = {}
    if items:
        rows = await db.fetch(
            "SELECT id, display_name FROM users WHERE id = ANY($1::bigint[])",
            [uid for uid, _ in items],
        )
        names = {r["id"]: r["display_name"] for r in rows}
    entries = [
        Entry(rank=ranks[score], user_id=uid, display_name=names.get(uid, ""), score=score)
        for uid, score in items
    ]
    return Board(cohort_id=cohort_id, entries=entries, total=int(total))


async def entry_of(
    db: asyncpg.Pool | asyncpg.Connection, redis: aioredis.Redis, cohort_id: int, user_id: int
) -> Entry | None:
    """One student's place on the board, or None when they have no grade yet."""
    key = keys.leaderboard_key(str(cohort_id))
    score = await redis.zscore(key, str(user_id))
    if score is None:
        return None
    higher = await redis.zcount(key, f"({float(score)!r}", "+inf")
    name = await db.fetchval("SELECT display_name FROM users WHERE id = $1", user_id)
    return Entry(rank=int(higher) + 1, user_id=user_id, display_name=name or "", score=score)


async def publish(ctx: WorkerContext, cohort_id: int) -> None:
    """Publish the board's top entries as ``leaderboard.update`` now (no throttling)."""
    assert ctx.db is not None
    board = await read(ctx.db, ctx.redis, cohort_id, limit=EVENT_TOP)
    await ctx.publisher.publish(*events.to(cohort_topic(cohort_id), board))


async def changed(ctx: WorkerContext, cohort_id: int) -> bool:
    """Announce that the board changed: publishes now, or schedules the trailing publish.
    Returns whether it published now."""
    window = keys.debounce_key("leaderboard", str(cohort_id))
    interval_ms = int(INTERVAL_S * 1000)
    if await ctx.redis.set(window, "1", nx=True, px=interval_ms):
        await publish(ctx, cohort_id)
        return True
    ttl = await ctx.redis.pttl(window)
    await schedule(
        ctx.redis,
        QUEUE,
        {"cohort_id": cohort_id},
        delay_ms=max(int(ttl), 1) if ttl and ttl > 0 else 1,
        key=f"trailing:{cohort_id}",
    )
    return False


class _Trailing(msgspec.Struct):
    cohort_id: int


@job(QUEUE)
async def trailing_publish(ctx: WorkerContext, payload: dict[str, Any]) -> None:
    """The end of a throttling window: publish the board as it is now, open a new window."""
    task = job_payload(payload, _Trailing)
    window = keys.debounce_key("leaderboard", str(task.cohort_id))
    await ctx.redis.set(window, "1", px=int(INTERVAL_S * 1000))
    await publish(ctx, task.cohort_id)
