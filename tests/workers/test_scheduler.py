"""The scheduler: one run per tick across processes; session reminders once per session."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from config import keys
from config.servers import SmtpCatcher
from config.settings import Settings
from tests.workers.helpers import (
    Workers,
    eventually,
    make_cohort,
    make_quiz,
    make_submission,
    make_user,
    received_by,
    steady,
    user_email,
)
from workers import job_runner, scheduler
from workers.context import WorkerContext
from workers.grade import sweep_pending
from workers.outbox_relay import run_outbox_relay


async def test_each_tick_runs_once_across_processes(
    wsettings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs: list[str] = []

    async def count(ctx: WorkerContext) -> None:
        runs.append(ctx.consumer)

    name = f"count-{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(scheduler, "SCHEDULE", [scheduler.Scheduled(name, lambda c: 10.0, count)])
    async with Workers(wsettings, consumer="p1") as a, Workers(wsettings, consumer="p2") as b:
        now = 1_000_000.0
        ran = await asyncio.gather(*(scheduler.run_due(x.ctx, now) for x in (a, b, a, b)))
        assert sum(len(r) for r in ran) == 1 and len(runs) == 1
        assert await scheduler.run_due(b.ctx, now + 5) == []  # same tick
        assert await scheduler.run_due(b.ctx, now + 10) == [name]  # next tick


async def test_session_reminder_reaches_every_member_once(
    wsettings: Settings, smtp: SmtpCatcher
) -> None:
    """A session starting within reminder_lead_s: each member gets one notification and one
    email, however many ticks pass; a later session is left alone, and so is staff."""
    async with Workers(wsettings) as w:
        db = w.ctx.db
        assert db is not None
        members = [await make_user(db) for _ in range(2)]
        teacher = await make_user(db, "instructor")
        cohort = await make_cohort(db, *members, staff=(teacher,))
        now = datetime.now(UTC)
        soon, later = await db.fetch(
            "INSERT INTO live_sessions (cohort_id, title, starts_at, ends_at) VALUES"
            " ($1, 'Office hours', $2::timestamptz, $2::timestamptz + interval '1 hour'),"
            " ($1, 'Next week', $3::timestamptz, $3::timestamptz + interval '1 hour')"
            " RETURNING id",
            cohort,
            now + timedelta(minutes=5),
            now + timedelta(hours=3),
        )
        w.start(scheduler.run_scheduler, job_runner.run_jobs, run_outbox_relay)
        for member in members:
            address = await user_email(db, member)
            await eventually(lambda a=address: received_by(smtp, a))
        await steady(lambda: _reminders(w.ctx, cohort), sorted(members), 0.8)
        assert received_by(smtp, await user_email(db, teacher)) == []
        for member in members:
            (msg,) = received_by(smtp, await user_email(db, member))
            assert msg["Subject"] == "Starting soon: Office hours"
        reminded = await db.fetch(
            "SELECT id FROM live_sessions WHERE cohort_id = $1 AND reminder_sent_at IS NOT NULL",
            cohort,
        )
        assert [r["id"] for r in reminded] == [soon["id"]]
        events = await db.fetchval(
            "SELECT count(*) FROM outbox WHERE topic = ANY($1) AND type = 'notification.new'",
            [f"user:{m}" for m in members],
        )
        assert events == 2 and later["id"] != soon["id"]


async def _reminders(ctx: WorkerContext, cohort: int) -> list[int]:
    assert ctx.db is not None
    rows = await ctx.db.fetch(
        "SELECT n.user_id FROM notifications n JOIN enrollments e ON e.user_id = n.user_id"
        " WHERE e.cohort_id = $1 AND n.kind = 'session.reminder' ORDER BY n.user_id",
        cohort,
    )
    return [r["user_id"] for r in rows]


async def test_lost_grading_job_is_swept_once(wsettings: Settings) -> None:
    """A submission whose job never made it to Redis is graded by the sweep; a sweep soon
    after does not enqueue it again."""
    async with Workers(wsettings) as w:
        db = w.ctx.db
        assert db is not None
        student = await make_user(db)
        quiz = await make_quiz(db, await make_cohort(db, student))
        sid = await make_submission(db, quiz, student, {"q1": 1})
        await db.execute(
            "UPDATE quiz_submissions SET submitted_at = now() - interval '2 minutes' WHERE id = $1",
            sid,
        )
        w.start(job_runner.run_jobs)
        assert await sweep_pending(w.ctx) >= 1
        await eventually(
            lambda: db.fetchval("SELECT status = 'graded' FROM quiz_submissions WHERE id = $1", sid)
        )
        await db.execute(
            "UPDATE quiz_submissions SET status = 'pending', score = NULL,"
            " max_score = NULL, feedback = NULL, graded_at = NULL WHERE id = $1",
            sid,
        )
        assert sid not in await _swept_now(w.ctx)


async def _swept_now(ctx: WorkerContext) -> list[int]:
    before = await ctx.redis.xrange(keys.job_stream("grade"))
    await sweep_pending(ctx)
    after = await ctx.redis.xrange(keys.job_stream("grade"))
    seen = {eid for eid, _ in before}
    return [msgspec.json.decode(f[b"p"])["submission_id"] for eid, f in after if eid not in seen]


async def test_refreshes_rebuild_boards_and_publish_dashboards(wsettings: Settings) -> None:
    """Every scheduled job runs against the real schema; the leaderboard is rebuilt from
    PostgreSQL after Redis lost it, and an active cohort's staff get a dashboard.update."""
    async with Workers(wsettings) as w:
        db = w.ctx.db
        assert db is not None
        students = [await make_user(db) for _ in range(2)]
        cohort = await make_cohort(db, *students)
        quiz = await make_quiz(db, cohort)
        sid = await make_submission(db, quiz, students[0], {})
        await db.execute(
            "UPDATE quiz_submissions SET status = 'graded', score = 1, max_score = 4,"
            " feedback = '{}'::jsonb, graded_at = now() WHERE id = $1",
            sid,
        )
        await make_submission(db, quiz, students[1], {})  # still pending
        for item in scheduler.SCHEDULE:
            await item.run(w.ctx)
        board = keys.leaderboard_key(str(cohort))
        assert await w.ctx.redis.zrange(board, 0, -1, withscores=True) == [
            (str(students[0]).encode(), 1.0)
        ]
        entries = await w.ctx.redis.xrange(
            keys.history_key(f"staff:{cohort}", wsettings.bus_shards)
        )
        data = msgspec.json.decode(entries[-1][1][b"d"])
        assert data == {
            "cohort_id": cohort,
            "members": 2,
            "submissions_24h": 2,
            "pending_grading": 1,
            "average_percentage": 25.0,
            "lessons_completed_24h": 0,
            "struggling": [students[0]],
            "active_24h": 2,
            "active_7d": 2,
            "alerts": [
                {
                    "user_id": students[0],
                    "name": "Ada Lovelace",
                    "rule": "low_quiz_average",
                    "reason": "quiz average 25% (under 50%)",
                }
            ],
        }
