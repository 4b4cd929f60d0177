"""Grading: the ``grade`` job queue, payload ``{"submission_id": int}``.

The API stores a pending submission and enqueues this job after its commit. The handler:

1. in one transaction, with the submission row locked: grades it with
   :func:`workers.grading.grade`, stores the grade (``UPDATE ... WHERE status = 'pending'``, so a
   submission is graded once however often the job runs), emits ``quiz.graded`` to
   ``user:{id}`` through the outbox and creates the ``quiz.graded`` notification (dedupe key
   ``submission:{id}``) with its ``notification.new`` event; a submission with short-text
   answers the matcher did not accept joins the grading queue (``review = 'waiting'``, and
   ``grading.waiting`` on ``staff:{cohort}``, see :mod:`workers.review`);
2. after the commit, and again on every redelivery (the first delivery may have died right
   after committing): enqueues the notification's email (idempotent itself), stores the
   student's new total on the cohort leaderboard and announces the change (throttled).

:func:`sweep_pending` re-enqueues submissions left pending (their job was lost, e.g. Redis was
down when the API tried to enqueue it); the scheduler calls it.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

from config.topics import staff_topic, user_topic
from workers import activity, events, leaderboard, review
from workers.context import WorkerContext
from workers.grading import (
    GradeResult,
    QuizDefinitionError,
    grade,
    questions_from_json,
)
from workers.jobs import PermanentError, enqueue_at_most_every, job, job_payload
from workers.notify import create_notifications, enqueue_emails
from workers.outbox_write import emit

QUEUE = "grade"
#: Submissions pending longer than this are assumed to have lost their job.
SWEEP_AFTER_S = 60
#: A swept submission is not enqueued again for this long.
SWEEP_REPEAT_S = 300

_json = msgspec.json.Encoder()


class _GradeJob(msgspec.Struct):
    submission_id: int


_LOAD = """
SELECT s.id, s.user_id, s.quiz_id, s.attempt, s.answers::text AS answers, s.status,
       q.cohort_id, q.title, q.questions::text AS questions
FROM quiz_submissions s JOIN quizzes q ON q.id = s.quiz_id
WHERE s.id = $1
FOR UPDATE OF s
"""

_STORE = """
UPDATE quiz_submissions
SET status = 'graded', score = $2, max_score = $3, feedback = $4::jsonb, graded_at = now(),
    review = $5
WHERE id = $1 AND status = 'pending'
"""


def notification_text(title: str, result: GradeResult) -> tuple[str, str]:
    """Title and body of the ``quiz.graded`` notification (and of its email)."""
    score = f"{result.score:g} of {result.max_score:g} points ({result.percentage:g}%)"
    return f"Quiz graded: {title}", f"You scored {score} on \u201c{title}\u201d. {result.feedback}"


@job(QUEUE)
async def grade_submission(ctx: WorkerContext, payload: dict[str, Any]) -> None:
    """Grade one submission exactly once; converge its follow-ups on every delivery."""
    task = job_payload(payload, _GradeJob)
    assert ctx.db is not None
    key = f"submission:{task.submission_id}"
    async with ctx.db.acquire() as conn:
        async with conn.transaction():
            row = await conn.fetchrow(_LOAD, task.submission_id)
            if row is None:
                return  # deleted with its quiz
            if row["status"] == "pending":
                await _grade_pending(conn, row, key)
        await enqueue_emails(conn, ctx.redis, [row["user_id"]], kind="quiz.graded", dedupe_key=key)
        await leaderboard.record(conn, ctx.redis, row["cohort_id"], row["user_id"])
    await leaderboard.changed(ctx, row["cohort_id"])


async def sweep_pending(ctx: WorkerContext, older_than_s: int = SWEEP_AFTER_S) -> int:
    """Enqueue a grading job for submissions pending longer than ``older_than_s``, each at
    most once per :data:`SWEEP_REPEAT_S` (so a long queue is not flooded with copies);
    returns how many were enqueued."""
    assert ctx.db is not None
    rows = await ctx.db.fetch(
        "SELECT id FROM quiz_submissions WHERE status = 'pending' "
        "AND submitted_at < now() - make_interval(secs => $1) ORDER BY submitted_at LIMIT 1000",
        float(older_than_s),
    )
    payloads = [(str(r["id"]), {"submission_id": r["id"]}) for r in rows]
    return await enqueue_at_most_every(ctx.redis, QUEUE, payloads, SWEEP_REPEAT_S)


async def _grade_pending(conn: asyncpg.Connection, row: asyncpg.Record, key: str) -> None:
    """Grade a pending submission in the caller's transaction: store the result, emit its
    events, record a pass, notify the learner (``key`` dedupes the notification)."""
    try:
        questions = questions_from_json(row["questions"])
    except QuizDefinitionError as exc:
        raise PermanentError(f"quiz {row['quiz_id']} is not gradable") from exc
    result = grade(questions, msgspec.json.decode(row["answers"]))
    waiting = review.waiting_questions(questions, result)
    await conn.execute(
        _STORE,
        row["id"],
        result.score,
        result.max_score,
        _json.encode(result).decode(),
        "waiting" if waiting else "none",
    )
    if waiting:
        queued = events.GradingWaiting(
            submission_id=row["id"],
            quiz_id=row["quiz_id"],
            user_id=row["user_id"],
            question_ids=waiting,
        )
        await emit(conn, events.to(staff_topic(row["cohort_id"]), queued))
    graded = events.QuizGraded(
        submission_id=row["id"],
        quiz_id=row["quiz_id"],
        attempt=row["attempt"],
        score=result.score,
        max_score=result.max_score,
        percentage=result.percentage,
        feedback=result.feedback,
        results=result.results,
    )
    await emit(conn, events.to(user_topic(row["user_id"]), graded))
    if result.percentage >= activity.PASS_PERCENTAGE:
        await activity.record(
            conn,
            row["cohort_id"],
            row["user_id"],
            "quiz.passed",
            row["quiz_id"],
            row["title"],
        )
    await _notify_graded(conn, row, result, key)


async def _notify_graded(
    conn: asyncpg.Connection, row: asyncpg.Record, result: GradeResult, key: str
) -> None:
    """The learner's ``quiz.graded`` notification (deduplicated by ``key``)."""
    title, body = notification_text(row["title"], result)
    await create_notifications(
        conn,
        [row["user_id"]],
        kind="quiz.graded",
        dedupe_key=key,
        title=title,
        body=body,
        data={
            "submission_id": row["id"],
            "quiz_id": row["quiz_id"],
            "cohort_id": row["cohort_id"],
            "score": result.score,
            "max_score": result.max_score,
            "percentage": result.percentage,
        },
    )
