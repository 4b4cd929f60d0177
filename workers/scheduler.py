"""Scheduled jobs: each runs once per tick across all worker processes.

Every process runs :func:`run_scheduler`. Time is cut into ticks of each job's interval
(``tick = floor(unix_time / interval)``); before running a job for a tick, a process takes
``SET keys.tick_lock_key(job, tick) NX EX``, so exactly one process runs it per tick (at most
once; a tick whose process dies mid-run is not retried, the next tick is). Jobs are therefore
written to catch up: each looks at the state in PostgreSQL, not at what happened since the
last tick.

Jobs:

* ``reminders`` (every ``scheduler_tick_s``): sessions starting within ``reminder_lead_s`` that
  were not reminded get a ``reminder`` job (``workers.notify``), which sets
  ``reminder_sent_at`` in the transaction that creates the notifications: once per session.
* ``sweeps`` (every ``scheduler_tick_s``): re-enqueue lost work, i.e. submissions pending for a
  minute (``workers.grade.sweep_pending``), recent announcements some member was never
  notified of, and instructor feedback whose student was not notified
  (``workers.feedback.sweep_unnotified``); and close timed polls whose due entry was lost
  (``workers.live_polls.close_overdue``) and live quiz questions whose deadline entry was lost
  (``workers.live_quiz.close_overdue``).
* ``leaderboards`` (every :data:`LEADERBOARD_REFRESH_S`): rebuild the boards of cohorts with
  grades from PostgreSQL, the source of truth, and announce them.
* ``dashboards`` (every :data:`DASHBOARD_REFRESH_S`): publish ``dashboard.update`` to
  ``staff:{cohort}`` for cohorts with activity in the last interval.
* ``struggling`` (every :data:`STRUGGLING_REFRESH_S`): the struggling-student rules
  (:mod:`workers.struggling`) for every cohort with staff; each alert raises one
  ``student.struggling`` notification per staff member, once ever per student and rule.
* ``digests`` (every ``scheduler_tick_s``): enqueue the daily digest emails that are due
  (:func:`workers.digest.due_digests`; at most one per user and local day).
* ``outbox_purge`` (hourly): delete outbox rows published a day ago.
* ``command_results_purge`` (hourly): delete live command results a day old
  (:mod:`workers.live_once`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import redis.exceptions

from config import keys
from config.topics import staff_topic
from workers import digest, events, leaderboard, live_once, live_polls, live_quiz, outbox_relay
from workers.context import WorkerContext
from workers.dashboard import active_dashboards, cohort_alerts
from workers.feedback import sweep_unnotified
from workers.grade import SWEEP_REPEAT_S, sweep_pending
from workers.jobs import enqueue, enqueue_at_most_every
from workers.notify import create_notifications, enqueue_emails

log = logging.getLogger("lectern.workers.scheduler")

LEADERBOARD_REFRESH_S = 300.0
DASHBOARD_REFRESH_S = 30.0
STRUGGLING_REFRESH_S = 300.0
ANNOUNCE_SWEEP_AFTER_S = 60


@dataclass(frozen=True)
class Scheduled:
    name: str
    interval_s: Callable[[WorkerContext], float]
    run: Callable[[WorkerContext], Awaitable[object]]


async def due_reminders(ctx: WorkerContext) -> int:
    """Enqueue a ``reminder`` job for each session about to start and not reminded yet."""
    assert ctx.db is not None
    rows = await ctx.db.fetch(
        "SELECT id FROM live_sessions WHERE state = 'scheduled' AND reminder_sent_at IS NULL "
        "AND starts_at > now() AND starts_at <= now() + make_interval(secs => $1) "
        "ORDER BY starts_at LIMIT 1000",
        float(ctx.settings.reminder_lead_s),
    )
    if rows:
        pipe = ctx.redis.pipeline(transaction=False)
        for r in rows:
            await enqueue(pipe, "reminder", {"session_id": r["id"]})
        await pipe.execute()
    return len(rows)


async def sweep_announcements(ctx: WorkerContext) -> int:
    """Re-enqueue the fan-out of announcements (of the last day) that missed a member."""
    assert ctx.db is not None
    rows = await ctx.db.fetch(
        """
        SELECT a.id FROM announcements a
        WHERE a.created_at > now() - interval '1 day'
          AND a.created_at < now() - make_interval(secs => $1)
          AND EXISTS (
            SELECT 1 FROM enrollments e
            WHERE e.cohort_id = a.cohort_id AND e.kind = 'member' AND e.created_at <= a.created_at
              AND NOT EXISTS (
                SELECT 1 FROM notifications n WHERE n.user_id = e.user_id
                  AND n.kind = 'announcement' AND n.dedupe_key = 'announcement:' || a.id))
        LIMIT 100
        """,
        float(ANNOUNCE_SWEEP_AFTER_S),
    )
    payloads = [(str(r["id"]), {"announcement_id": r["id"]}) for r in rows]
    return await enqueue_at_most_every(ctx.redis, "announce", payloads, SWEEP_REPEAT_S)


async def sweeps(ctx: WorkerContext) -> int:
    return (
        await sweep_pending(ctx)
        + await sweep_announcements(ctx)
        + await sweep_unnotified(ctx)
        + await live_polls.close_overdue(ctx)
        + await live_quiz.close_overdue(ctx)
    )


async def refresh_leaderboards(ctx: WorkerContext) -> int:
    """Rebuild every board that has grades; returns how many."""
    assert ctx.db is not None
    rows = await ctx.db.fetch(
        "SELECT DISTINCT q.cohort_id FROM quizzes q "
        "WHERE EXISTS (SELECT 1 FROM quiz_submissions s WHERE s.quiz_id = q.id "
        "AND s.status = 'graded')"
    )
    for r in rows:
        await leaderboard.rebuild(ctx.db, ctx.redis, r["cohort_id"])
        await leaderboard.changed(ctx, r["cohort_id"])
    return len(rows)


async def refresh_dashboards(ctx: WorkerContext) -> int:
    """Publish a fresh ``dashboard.update`` for each cohort with recent activity."""
    assert ctx.db is not None
    boards = await active_dashboards(ctx.db, DASHBOARD_REFRESH_S * 2)
    updates = [events.to(staff_topic(d.cohort_id), d) for d in boards]
    if updates:
        await ctx.publisher.publish_many(updates)
    return len(updates)


async def notify_struggling(ctx: WorkerContext) -> int:
    """One ``student.struggling`` notification per staff member, student and rule (dedupe key
    ``struggling:{cohort}:{student}:{rule}``: raised once, never repeated), with its email per
    the staff member's preference; returns how many alerts were considered."""
    assert ctx.db is not None
    cohorts = await ctx.db.fetch(
        "SELECT c.id, c.title FROM cohorts c WHERE EXISTS (SELECT 1 FROM enrollments e"
        " WHERE e.cohort_id = c.id AND e.kind = 'staff') ORDER BY c.id"
    )
    seen = 0
    for cohort in cohorts:
        found = await cohort_alerts(ctx.db, cohort["id"])
        if not found:
            continue
        seen += len(found)
        async with ctx.db.acquire() as conn:
            staff = [
                r["user_id"]
                for r in await conn.fetch(
                    "SELECT user_id FROM enrollments WHERE cohort_id = $1 AND kind = 'staff'",
                    cohort["id"],
                )
            ]
            for alert in found:
                key = f"struggling:{cohort['id']}:{alert.user_id}:{alert.rule}"
                async with conn.transaction():
                    await create_notifications(
                        conn,
                        staff,
                        kind="student.struggling",
                        dedupe_key=key,
                        title=f"{alert.name} may need help ({cohort['title']})",
                        body=alert.reason[:1].upper() + alert.reason[1:] + ".",
                        data={
                            "cohort_id": cohort["id"],
                            "user_id": alert.user_id,
                            "rule": alert.rule,
                            "reason": alert.reason,
                        },
                    )
                await enqueue_emails(
                    conn, ctx.redis, staff, kind="student.struggling", dedupe_key=key
                )
    return seen


async def purge_outbox(ctx: WorkerContext) -> int:
    return await outbox_relay.purge_published(ctx)


async def purge_command_results(ctx: WorkerContext) -> int:
    return await live_once.purge(ctx)


SCHEDULE: list[Scheduled] = [
    Scheduled("reminders", lambda ctx: ctx.settings.scheduler_tick_s, due_reminders),
    Scheduled("sweeps", lambda ctx: ctx.settings.scheduler_tick_s, sweeps),
    Scheduled("leaderboards", lambda ctx: LEADERBOARD_REFRESH_S, refresh_leaderboards),
    Scheduled("dashboards", lambda ctx: DASHBOARD_REFRESH_S, refresh_dashboards),
    Scheduled("struggling", lambda ctx: STRUGGLING_REFRESH_S, notify_struggling),
    Scheduled("digests", lambda ctx: ctx.settings.scheduler_tick_s, digest.due_digests),
    Scheduled("outbox_purge", lambda ctx: 3600.0, purge_outbox),
    Scheduled("command_results_purge", lambda ctx: 3600.0, purge_command_results),
]


async def run_due(ctx: WorkerContext, now: float | None = None) -> list[str]:
    """Run every scheduled job whose current tick no process has claimed; returns their
    names. Each job is bounded by its interval, and one failing does not stop the others."""
    now = time.time() if now is None else now
    ran: list[str] = []
    for item in SCHEDULE:
        interval = max(item.interval_s(ctx), 0.001)
        tick = int(now // interval)
        lock = keys.tick_lock_key(item.name, tick)
        if not await ctx.redis.set(lock, ctx.consumer, nx=True, ex=max(int(interval * 2), 10)):
            continue
        try:
            async with asyncio.timeout(max(interval, 5.0)):
                await item.run(ctx)
            ran.append(item.name)
        except Exception:
            log.exception("scheduled job failed", extra={"job": item.name, "tick": tick})
    return ran


async def run_scheduler(ctx: WorkerContext) -> None:
    """Service: run the scheduled jobs, each once per tick across all processes."""
    if ctx.db is None:
        return
    tick_s = max(ctx.settings.scheduler_tick_s, 0.05)
    while True:
        try:
            await run_due(ctx)
        except (
            redis.exceptions.RedisError,
            redis.exceptions.RedisClusterException,
            OSError,
            asyncpg.PostgresError,
        ) as exc:
            log.warning("scheduler tick failed: %s", exc)
        # Wake just after the next tick boundary.
        await asyncio.sleep(tick_s - time.time() % tick_s + 0.01)
