"""The grading job end to end on real PostgreSQL, Redis and SMTP: exactly one grade, one
event, one notification and one email however the job is delivered; the leaderboard and its
throttled updates."""

from __future__ import annotations

import asyncio
from typing import Any

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
    parts,
    received_by,
    steady,
    user_email,
)
from workers import job_runner, jobs, leaderboard
from workers.context import WorkerContext
from workers.outbox_relay import run_outbox_relay

RIGHT_TWO = {"q1": 1, "q2": "3.15", "q3": "Lyon"}


async def graded(ctx: WorkerContext, submission: int) -> Any:
    assert ctx.db is not None
    return await ctx.db.fetchrow(
        "SELECT score, max_score, graded_at FROM quiz_submissions"
        " WHERE id = $1 AND status = 'graded'",
        submission,
    )


async def email_sent(ctx: WorkerContext, user: int) -> bool:
    assert ctx.db is not None
    return bool(
        await ctx.db.fetchval(
            "SELECT count(*) FROM email_deliveries d JOIN notifications n"
            " ON n.id = d.notification_id WHERE n.user_id = $1 AND d.status = 'sent'",
            user,
        )
    )


async def test_killed_worker_and_duplicate_job_give_one_grade_and_one_email(
    wsettings: Settings, smtp: SmtpCatcher
) -> None:
    """A process read the grading job and died without acknowledging it, and the job was also
    enqueued twice. After the reclaim: one grade, one quiz.graded event, one notification, one
    email, and the student's total on the leaderboard."""
    async with Workers(wsettings) as w:
        db = w.ctx.db
        assert db is not None
        student = await make_user(db)
        cohort = await make_cohort(db, student)
        quiz = await make_quiz(db, cohort)
        submission = await make_submission(db, quiz, student, RIGHT_TWO)
        stream = keys.job_stream("grade")
        await job_runner.ensure_group(w.ctx.redis, stream)
        entry = await jobs.enqueue(w.ctx.redis, "grade", {"submission_id": submission})
        # The process that dies: it takes every undelivered entry, ours included.
        got: Any = await w.ctx.redis.xreadgroup(keys.WORKER_GROUP, "dies", {stream: ">"}, 10_000)
        assert entry.encode() in [eid for eid, _ in got[0][1]]
        await jobs.enqueue(w.ctx.redis, "grade", {"submission_id": submission})
        w.start(job_runner.run_jobs, run_outbox_relay)

        row = await eventually(lambda: graded(w.ctx, submission))
        assert (float(row["score"]), float(row["max_score"])) == (2.0, 3.0)
        await eventually(lambda: email_sent(w.ctx, student))
        # Let the reclaimed copy run too, then count.
        await eventually(lambda: _acked(w.ctx, entry), within=5)
        await steady(lambda: graded(w.ctx, submission), row, 0.3)
        events = await db.fetch(
            "SELECT data::text FROM outbox WHERE topic = $1 AND type = 'quiz.graded'",
            f"user:{student}",
        )
        assert len(events) == 1
        data = msgspec.json.decode(events[0]["data"])
        assert data["submission_id"] == submission and data["percentage"] == 66.67
        assert [r["outcome"] for r in data["results"]] == ["correct", "correct", "incorrect"]
        notes = await db.fetch(
            "SELECT kind, dedupe_key FROM notifications WHERE user_id = $1", student
        )
        assert [tuple(n) for n in notes] == [("quiz.graded", f"submission:{submission}")]
        address = await user_email(db, student)
        assert len(received_by(smtp, address)) == 1
        assert "2 of 3 points" in parts(received_by(smtp, address)[0])["text/plain"]
        score = await w.ctx.redis.zscore(keys.leaderboard_key(str(cohort)), str(student))
        assert score == 2.0


async def _acked(ctx: WorkerContext, entry: str) -> bool:
    pending = await ctx.redis.xpending_range(
        keys.job_stream("grade"), keys.WORKER_GROUP, min=entry, max=entry, count=1
    )
    return not pending


async def test_leaderboard_updates_are_throttled_and_the_last_one_is_kept(
    wsettings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three changes in a burst: one update at once, one trailing update at the end of the
    window carrying the final board; nothing more."""
    monkeypatch.setattr(leaderboard, "INTERVAL_S", 0.4)
    runner = lambda ctx: job_runner.run_jobs(ctx, queues=["leaderboard"])  # noqa: E731
    async with Workers(wsettings, runner) as w:
        db = w.ctx.db
        assert db is not None
        students = [await make_user(db, name=f"S{i}") for i in range(3)]
        cohort = await make_cohort(db, *students)
        quiz = await make_quiz(db, cohort, max_attempts=1)
        history = keys.history_key(f"cohort:{cohort}", wsettings.bus_shards)

        answers = [{"q1": 1}, {"q1": 1, "q2": 3.14}, {"q1": 1, "q2": 3.14, "q3": "paris"}]
        for student, given in zip(students, answers, strict=True):
            sid = await make_submission(db, quiz, student, given)
            await _grade_directly(db, sid, given)
            await leaderboard.record(db, w.ctx.redis, cohort, student)
            await leaderboard.changed(w.ctx, cohort)
        assert await w.ctx.redis.xlen(history) == 1
        await eventually(lambda: _xlen_is(w.ctx, history, 2), within=3)
        await steady(lambda: w.ctx.redis.xlen(history), 2, 0.6)
        last = (await w.ctx.redis.xrange(history))[-1][1]
        board = msgspec.json.decode(last[b"d"])
        assert [(e["user_id"], e["score"], e["rank"]) for e in board["entries"]] == [
            (students[2], 3.0, 1),
            (students[1], 2.0, 2),
            (students[0], 1.0, 3),
        ]
        assert board["entries"][0]["display_name"] == "S2"


async def _xlen_is(ctx: WorkerContext, key: str, n: int) -> bool:
    return bool(await ctx.redis.xlen(key) == n)


async def _grade_directly(db: Any, submission: int, answers: dict[str, Any]) -> None:
    score = float(sum(1 for _ in answers))
    await db.execute(
        "UPDATE quiz_submissions SET status = 'graded', score = $2, max_score = 3,"
        " feedback = '{}'::jsonb, graded_at = now() WHERE id = $1",
        submission,
        score,
    )
    await asyncio.sleep(0)
