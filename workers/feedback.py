"""Telling a student about instructor feedback: the ``feedback`` job queue, payload
``{"feedback_id": int}``.

The API stores the feedback, the submission's new grade and the ``feedback.posted`` event (on
``user:{id}``, through the outbox) in one transaction, then enqueues this job. The handler:

1. in one transaction, with the feedback row locked: creates the ``feedback.posted``
   notification (dedupe key ``feedback:{id}``, with its ``notification.new`` event) and sets
   ``notified_at``, once however often the job runs;
2. after the commit, and again on every redelivery: enqueues the notification's email (only
   if the student wants email for ``feedback.posted``; the email job is idempotent), stores the
   student's total on the cohort leaderboard (an override may have moved it) and announces the
   change (throttled).

:func:`sweep_unnotified` re-enqueues feedback left without a notification (the job was lost,
e.g. Redis was down when the API tried to enqueue it); the scheduler calls it.
"""

from __future__ import annotations

from typing import Any

import msgspec

from workers import leaderboard
from workers.context import WorkerContext
from workers.jobs import enqueue_at_most_every, job, job_payload
from workers.notify import create_notifications, enqueue_emails

QUEUE = "feedback"
KIND = "feedback.posted"
#: Feedback without a notification after this long is assumed to have lost its job.
SWEEP_AFTER_S = 60
SWEEP_REPEAT_S = 300
#: Characters of the comment quoted in the notification's body.
EXCERPT = 280


class _FeedbackJob(msgspec.Struct):
    feedback_id: int


_LOAD = """
SELECT f.id, f.submission_id, f.comment, f.score::float8 AS score,
       f.max_score::float8 AS max_score, f.notified_at, s.user_id, s.quiz_id,
       q.title, q.cohort_id, coalesce(u.display_name, 'Your instructor') AS author
FROM submission_feedback f
JOIN quiz_submissions s ON s.id = f.submission_id
JOIN quizzes q ON q.id = s.quiz_id
LEFT JOIN users u ON u.id = f.author_id
WHERE f.id = $1
FOR UPDATE OF f
"""


def notification_text(
    quiz_title: str, author: str, comment: str, score: float, max_score: float
) -> tuple[str, str]:
    """Title and body of the ``feedback.posted`` notification (and of its email)."""
    body = (
        f"{author} reviewed your answers to \u201c{quiz_title}\u201d:"
        f" {score:g} of {max_score:g} points."
    )
    text = " ".join(comment.split())
    if text:
        quoted = text if len(text) <= EXCERPT else text[: EXCERPT - 1].rstrip() + "\u2026"
        body += f" \u201c{quoted}\u201d"
    return f"Feedback on {quiz_title}", body


@job(QUEUE)
async def notify_feedback(ctx: WorkerContext, payload: dict[str, Any]) -> None:
    """Notify the student once; converge the email and the leaderboard on every delivery."""
    task = job_payload(payload, _FeedbackJob)
    assert ctx.db is not None
    key = f"feedback:{task.feedback_id}"
    async with ctx.db.acquire() as conn:
        async with conn.transaction():
            row = await conn.fetchrow(_LOAD, task.feedback_id)
            if row is None:
                return  # deleted with its submission
            if row["notified_at"] is None:
                title, body = notification_text(
                    row["title"], row["author"], row["comment"], row["score"], row["max_score"]
                )
                await create_notifications(
                    conn,
                    [row["user_id"]],
                    kind=KIND,
                    dedupe_key=key,
                    title=title,
                    body=body,
                    data={
                        "feedback_id": row["id"],
                        "submission_id": row["submission_id"],
                        "quiz_id": row["quiz_id"],
                        "cohort_id": row["cohort_id"],
                        "score": row["score"],
                        "max_score": row["max_score"],
                    },
                )
                await conn.execute(
                    "UPDATE submission_feedback SET notified_at = now() WHERE id = $1", row["id"]
                )
        await enqueue_emails(conn, ctx.redis, [row["user_id"]], kind=KIND, dedupe_key=key)
        await leaderboard.record(conn, ctx.redis, row["cohort_id"], row["user_id"])
    await leaderboard.changed(ctx, row["cohort_id"])


async def sweep_unnotified(ctx: WorkerContext, older_than_s: int = SWEEP_AFTER_S) -> int:
    """Enqueue the job of feedback older than ``older_than_s`` that has no notification yet,
    each at most once per :data:`SWEEP_REPEAT_S`; returns how many were enqueued."""
    assert ctx.db is not None
    rows = await ctx.db.fetch(
        "SELECT id FROM submission_feedback WHERE notified_at IS NULL"
        " AND created_at < now() - make_interval(secs => $1) ORDER BY created_at LIMIT 1000",
        float(older_than_s),
    )
    payloads = [(str(r["id"]), {"feedback_id": r["id"]}) for r in rows]
    return await enqueue_at_most_every(ctx.redis, QUEUE, payloads, SWEEP_REPEAT_S)
