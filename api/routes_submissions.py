"""Quiz submissions: submitting answers, reading them back with their grade.

* Students of the cohort submit (``POST /api/v1/quizzes/{id}/submissions``). The submission is
  stored ``pending`` and the ``grade`` job (:mod:`workers.grade`) is enqueued after the commit;
  the grade arrives as ``quiz.graded`` on ``user:{id}`` and in ``GET /api/v1/submissions/{id}``.
  Attempts are numbered from 1; past ``max_attempts`` the answer is 409 ``attempts_exhausted``.
  A client may name the ``attempt`` it means: repeating a submit that went through (a retry
  after a lost response) then returns the stored submission (200) instead of using up another
  attempt, since ``(quiz, user, attempt)`` is the submission's idempotency key.
* If the job cannot be enqueued (Redis down), the submission stays pending and the scheduler's
  sweep enqueues it within a minute or so: a submission is never lost.
* A submission's ``score`` is always the effective grade: the automatic one with staff's hand
  grading applied (:func:`workers.review.apply_review`).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Literal

import asyncpg
import msgspec
from aiohttp import web

from api import errors
from api.deps import body as read_body
from api.deps import current_user, is_staff, path_int, query_int, require_member, user_id
from api.openapi import Routes
from api.responses import json_response
from api.routes_quizzes import Attempts, attempts_used, is_student, quiz_or_404
from api.state import DB, REDIS
from config import redisconn
from workers import grade as grade_job
from workers.grading import MAX_QUESTIONS, GradeResult, QuestionResult, questions_from_json
from workers.jobs import enqueue
from workers.review import apply_review

log = logging.getLogger("lectern.api.quizzes")

MAX_SUBMISSION_BODY = 256 * 1024


class SubmitIn(msgspec.Struct, kw_only=True):
    """``answers`` maps question ids to answers; ``attempt`` (optional) names the attempt, for
    idempotent retries."""

    answers: dict[str, Any]
    attempt: Attempts | None = None


class SubmissionOut(msgspec.Struct, kw_only=True):
    id: int
    quiz_id: int
    user_id: int
    attempt: int
    status: Literal["pending", "graded"]
    answers: dict[str, Any]
    submitted_at: datetime
    graded_at: datetime | None = None
    score: float | None = None
    max_score: float | None = None
    percentage: float | None = None
    feedback: str | None = None
    results: list[QuestionResult] | None = None
    #: Hand grading (:mod:`workers.review`): ``waiting`` while a short-text answer waits for
    #: an instructor, ``done`` once graded by hand; ``score_overridden`` when staff set the
    #: total. ``score``, ``percentage`` and ``results`` are the effective grade.
    review: Literal["none", "waiting", "done"] = "none"
    score_overridden: bool = False


#: The hand-grading columns (migration 0003) every submission read carries.
REVIEW_COLS = (
    "manual_points::text AS manual_points, score_override::float8 AS score_override, review"
)
_SUBMISSION = (
    "SELECT id, quiz_id, user_id, attempt, status, answers::text AS answers, submitted_at,"
    " graded_at, feedback::text AS feedback,"  # nosec B608  # constant SQL text
    f" {REVIEW_COLS} FROM quiz_submissions"
)
_result_decoder = msgspec.json.Decoder(dict[str, Any])
_grade_decoder = msgspec.json.Decoder(GradeResult)
_points_decoder = msgspec.json.Decoder(dict[str, float])


def submission_out(row: asyncpg.Record) -> SubmissionOut:
    out = SubmissionOut(
        id=row["id"],
        quiz_id=row["quiz_id"],
        user_id=row["user_id"],
        attempt=row["attempt"],
        status=row["status"],
        answers=_result_decoder.decode(row["answers"]),
        submitted_at=row["submitted_at"],
        graded_at=row["graded_at"],
    )
    out.review = row["review"]
    if row["status"] == "graded" and row["feedback"]:
        override = row["score_override"]
        result = apply_review(
            _grade_decoder.decode(row["feedback"]),
            _points_decoder.decode(row["manual_points"]),
            override,
        )
        out.score = result.score
        out.max_score = result.max_score
        out.percentage = result.percentage
        out.feedback = result.feedback
        out.results = list(result.results)
        out.score_overridden = override is not None
    return out


def _check_answers(quiz: asyncpg.Record, answers: dict[str, Any]) -> None:
    """400 when ``answers`` name questions the quiz does not have."""
    known = {q.id for q in questions_from_json(quiz["questions"])}
    unknown = sorted(set(answers) - known)
    if unknown:
        raise errors.bad_request(
            "answers name questions that are not in this quiz",
            {"field": "answers", "unknown": unknown[:20]},
            "unknown_questions",
        )


async def _next_attempt(
    conn: asyncpg.Connection, quiz: asyncpg.Record, uid: int, data: SubmitIn
) -> tuple[int, asyncpg.Record | None]:
    """(attempts used, the stored submission when ``data`` repeats one exactly); 409 when the
    attempt is taken with other answers, out of order, or none is left. Holds the student's
    per-quiz lock until the caller's transaction ends."""
    # One submit at a time per student and quiz, so attempts are counted exactly.
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended('submit:' || $1 || ':' || $2, 0))",
        str(quiz["id"]),
        str(uid),
    )
    used = await attempts_used(conn, quiz["id"], uid)
    if data.attempt is not None and data.attempt <= used:
        row = await conn.fetchrow(
            f"{_SUBMISSION} WHERE quiz_id = $1 AND user_id = $2 AND attempt = $3",
            quiz["id"],
            uid,
            data.attempt,
        )
        if row is not None and _result_decoder.decode(row["answers"]) == data.answers:
            return used, row
        raise errors.conflict(
            f"attempt {data.attempt} was already submitted with other answers",
            {"field": "attempt", "next_attempt": used + 1},
            "attempt_taken",
        )
    if used >= quiz["max_attempts"]:
        raise errors.conflict(
            f"all {quiz['max_attempts']} attempts are used",
            {"max_attempts": quiz["max_attempts"]},
            "attempts_exhausted",
        )
    if data.attempt is not None and data.attempt != used + 1:
        raise errors.conflict(
            f"the next attempt is {used + 1}",
            {"field": "attempt", "next_attempt": used + 1},
            "attempt_out_of_order",
        )
    return used, None


async def submit(request: web.Request) -> web.Response:
    claims = await current_user(request)
    quiz_id = path_int(request)
    uid = user_id(claims)
    data = await read_body(request, SubmitIn, MAX_SUBMISSION_BODY)
    if len(data.answers) > MAX_QUESTIONS:
        raise errors.bad_request("too many answers", {"field": "answers"}, "invalid_field")
    pool = request.app[DB]
    async with pool.acquire() as conn, conn.transaction():
        quiz = await quiz_or_404(conn, quiz_id)
        cohort_id = quiz["cohort_id"]
        require_member(claims, cohort_id)
        if not is_student(claims, cohort_id):
            raise errors.forbidden("only students of the cohort submit answers", "not_a_student")
        _check_answers(quiz, data.answers)
        used, replayed = await _next_attempt(conn, quiz, uid, data)
        if replayed is not None:
            return json_response(submission_out(replayed), 200)
        row = await conn.fetchrow(
            "INSERT INTO quiz_submissions (quiz_id, user_id, attempt, answers)"
            " VALUES ($1, $2, $3, $4::jsonb) RETURNING id, quiz_id, user_id, attempt, status,"
            " answers::text AS answers, submitted_at, graded_at, feedback::text AS feedback,"
            f" {REVIEW_COLS}",  # nosec B608  # constant SQL text
            quiz_id,
            uid,
            used + 1,
            msgspec.json.encode(data.answers).decode(),
        )
    try:
        await enqueue(request.app[REDIS], grade_job.QUEUE, {"submission_id": row["id"]})
    except redisconn.ERRORS as exc:
        # Stored and pending: the scheduler's sweep grades it once Redis is back.
        log.warning(
            "grading job not enqueued; the sweep will pick it up",
            extra={"submission_id": row["id"], "error": repr(exc)},
        )
    return json_response(submission_out(row), 202)


async def get_submission(request: web.Request) -> web.Response:
    claims = await current_user(request)
    submission_id = path_int(request)
    pool = request.app[DB]
    row = await pool.fetchrow(
        "SELECT s.id, s.quiz_id, s.user_id, s.attempt, s.status, s.answers::text AS answers,"
        " s.submitted_at, s.graded_at, s.feedback::text AS feedback, q.cohort_id,"
        " s.manual_points::text AS manual_points, s.score_override::float8 AS score_override,"
        " s.review FROM quiz_submissions s JOIN quizzes q ON q.id = s.quiz_id WHERE s.id = $1",
        submission_id,
    )
    # Someone else's submission is "not found" for a student: ids do not leak existence.
    if row is None or (
        row["user_id"] != user_id(claims) and not is_staff(claims, row["cohort_id"])
    ):
        raise errors.not_found(f"submission {submission_id} does not exist")
    return json_response(submission_out(row))


async def list_submissions(request: web.Request) -> web.Response:
    """A student's own attempts; staff see everyone's (or one student's with ``user_id``)."""
    claims = await current_user(request)
    quiz_id = path_int(request)
    pool = request.app[DB]
    quiz = await quiz_or_404(pool, quiz_id)
    require_member(claims, quiz["cohort_id"])
    target: int | None = user_id(claims)
    if is_staff(claims, quiz["cohort_id"]):
        target = query_int(request, "user_id", None, lo=1)
    rows = await pool.fetch(
        f"{_SUBMISSION} WHERE quiz_id = $1 AND ($2::bigint IS NULL OR user_id = $2)"
        " ORDER BY id LIMIT 1000",
        quiz_id,
        target,
    )
    return json_response([submission_out(r) for r in rows])


def setup(app: web.Application) -> None:
    r = Routes(app, "quizzes")
    r.post(
        "/api/v1/quizzes/{id}/submissions",
        submit,
        summary="Submit answers; graded in the background (quiz.graded event)",
        auth="member",
        request=SubmitIn,
        response=SubmissionOut,
        status=202,
    )
    r.get(
        "/api/v1/quizzes/{id}/submissions",
        list_submissions,
        summary="Submissions of a quiz: the caller's, or everyone's for staff",
        auth="member",
        response=list[SubmissionOut],
        query=(("user_id", "integer"),),
    )
    r.get(
        "/api/v1/submissions/{id}",
        get_submission,
        summary="A submission with its grade once graded",
        auth="user",
        response=SubmissionOut,
    )
