"""Quizzes, submissions and grades.

* Staff of a cohort create and edit its quizzes; a definition is validated by
  :func:`workers.grading.questions_from_obj` (400 ``invalid_quiz`` listing every problem).
  Questions can no longer change once someone has submitted (409).
* ``GET /api/v1/quizzes/{id}`` shows students :func:`workers.grading.public_questions` (no
  answer key, ``view: "public"``) and staff the full definition (``view: "full"``).
* Students of the cohort submit (``POST /api/v1/quizzes/{id}/submissions``). The submission is
  stored ``pending`` and the ``grade`` job (:mod:`workers.grade`) is enqueued after the commit;
  the grade arrives as ``quiz.graded`` on ``user:{id}`` and in ``GET /api/v1/submissions/{id}``.
  Attempts are numbered from 1; past ``max_attempts`` the answer is 409 ``attempts_exhausted``.
  A client may name the ``attempt`` it means: repeating a submit that went through (a retry
  after a lost response) then returns the stored submission (200) instead of using up another
  attempt, since ``(quiz, user, attempt)`` is the submission's idempotency key.
* Statistics and the cohort leaderboard are in :mod:`api.routes_quiz_stats`.
* If the job cannot be enqueued (Redis down), the submission stays pending and the scheduler's
  sweep enqueues it within a minute or so: a submission is never lost.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
import msgspec
from aiohttp import web

from api import errors
from api.deps import body as read_body
from api.deps import (
    current_user,
    is_staff,
    path_int,
    query_int,
    require_member,
    require_staff,
    user_id,
)
from api.openapi import Routes
from api.responses import json_response
from api.schemas import Title
from api.state import DB, REDIS
from config import redisconn
from config.topics import cohort_topic
from gateway.auth import Claims
from workers import grade as grade_job
from workers.grading import (
    MAX_QUESTIONS,
    GradeResult,
    QuestionResult,
    QuizDefinitionError,
    public_questions,
    questions_from_json,
    questions_from_obj,
    questions_to_json,
)
from workers.jobs import enqueue
from workers.outbox_write import emit
from workers.review import apply_review

log = logging.getLogger("lectern.api.quizzes")

MAX_SUBMISSION_BODY = 256 * 1024
MAX_ATTEMPTS_LIMIT = 100

Attempts = Annotated[int, msgspec.Meta(ge=1, le=MAX_ATTEMPTS_LIMIT)]


class QuizIn(msgspec.Struct, kw_only=True):
    """A quiz definition: ``questions`` follow workers.grading's question union."""

    title: Title
    questions: list[dict[str, Any]]
    max_attempts: Attempts = 1


class QuizPatch(msgspec.Struct, kw_only=True):
    title: Title | None = None
    questions: list[dict[str, Any]] | None = None
    max_attempts: Attempts | None = None


class QuizOut(msgspec.Struct, kw_only=True):
    """``questions`` are the public questions (``view: "public"``, students) or the full
    definitions with their answer keys (``view: "full"``, staff)."""

    id: int
    cohort_id: int
    title: str
    max_attempts: int
    max_score: float
    question_count: int
    view: Literal["public", "full"]
    questions: list[Any]
    attempts_used: int
    created_at: datetime
    updated_at: datetime


class QuizSummary(msgspec.Struct, kw_only=True):
    id: int
    cohort_id: int
    title: str
    max_attempts: int
    max_score: float
    question_count: int
    attempts_used: int
    created_at: datetime


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


_QUIZ = (
    "SELECT id, cohort_id, title, questions::text AS questions, max_attempts, created_at,"
    " updated_at FROM quizzes"
)
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


def _definition(raw: list[dict[str, Any]]) -> bytes:
    try:
        return questions_to_json(questions_from_obj(raw))
    except QuizDefinitionError as exc:
        raise errors.bad_request(
            "the quiz definition is invalid",
            {"field": "questions", "problems": list(exc.problems)},
            "invalid_quiz",
        ) from None


def is_student(claims: Claims, cohort_id: int) -> bool:
    return str(cohort_id) in claims.cohorts


def _quiz_out(row: asyncpg.Record, *, full: bool, attempts_used: int) -> QuizOut:
    questions = questions_from_json(row["questions"])
    shown: list[Any] = list(questions) if full else list(public_questions(questions))
    return QuizOut(
        id=row["id"],
        cohort_id=row["cohort_id"],
        title=row["title"],
        max_attempts=row["max_attempts"],
        max_score=round(sum(q.points for q in questions), 2),
        question_count=len(questions),
        view="full" if full else "public",
        questions=shown,
        attempts_used=attempts_used,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


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


async def quiz_or_404(conn: Any, quiz_id: int) -> asyncpg.Record:
    row = await conn.fetchrow(f"{_QUIZ} WHERE id = $1", quiz_id)
    if row is None:
        raise errors.not_found(f"quiz {quiz_id} does not exist")
    return row


async def _attempts_used(conn: Any, quiz_id: int, uid: int) -> int:
    return int(
        await conn.fetchval(
            "SELECT coalesce(max(attempt), 0) FROM quiz_submissions"
            " WHERE quiz_id = $1 AND user_id = $2",
            quiz_id,
            uid,
        )
    )


# -- quizzes ----------------------------------------------------------------------------------


async def create_quiz(request: web.Request) -> web.Response:
    claims = await current_user(request)
    cohort_id = path_int(request)
    require_staff(claims, cohort_id)
    data = await read_body(request, QuizIn)
    definition = _definition(data.questions)
    async with request.app[DB].acquire() as conn, conn.transaction():
        if await conn.fetchval("SELECT 1 FROM cohorts WHERE id = $1", cohort_id) is None:
            raise errors.not_found(f"cohort {cohort_id} does not exist")
        row = await conn.fetchrow(
            "INSERT INTO quizzes (cohort_id, title, questions, max_attempts, created_by)"
            " VALUES ($1, $2, $3::jsonb, $4, $5) RETURNING id, cohort_id, title,"
            " questions::text AS questions, max_attempts, created_at, updated_at",
            cohort_id,
            data.title.strip(),
            definition.decode(),
            data.max_attempts,
            user_id(claims),
        )
        out = _quiz_out(row, full=True, attempts_used=0)
        await emit(
            conn,
            cohort_topic(cohort_id),
            "quiz.published",
            {"quiz_id": out.id, "cohort_id": cohort_id, "title": out.title},
        )
    return json_response(out, 201)


async def update_quiz(request: web.Request) -> web.Response:
    claims = await current_user(request)
    quiz_id = path_int(request)
    data = await read_body(request, QuizPatch)
    definition = _definition(data.questions) if data.questions is not None else None
    async with request.app[DB].acquire() as conn, conn.transaction():
        row = await conn.fetchrow(f"{_QUIZ} WHERE id = $1 FOR UPDATE", quiz_id)
        if row is None:
            raise errors.not_found(f"quiz {quiz_id} does not exist")
        require_staff(claims, row["cohort_id"])
        if definition is not None and await conn.fetchval(
            "SELECT 1 FROM quiz_submissions WHERE quiz_id = $1 LIMIT 1", quiz_id
        ):
            raise errors.conflict(
                "the questions cannot change once students have submitted",
                {"field": "questions"},
                "quiz_has_submissions",
            )
        row = await conn.fetchrow(
            "UPDATE quizzes SET title = coalesce($2, title),"
            " questions = coalesce($3::jsonb, questions),"
            " max_attempts = coalesce($4, max_attempts), updated_at = now()"
            " WHERE id = $1 RETURNING id, cohort_id, title, questions::text AS questions,"
            " max_attempts, created_at, updated_at",
            quiz_id,
            data.title.strip() if data.title is not None else None,
            definition.decode() if definition is not None else None,
            data.max_attempts,
        )
    return json_response(_quiz_out(row, full=True, attempts_used=0))


async def get_quiz(request: web.Request) -> web.Response:
    claims = await current_user(request)
    quiz_id = path_int(request)
    pool = request.app[DB]
    row = await quiz_or_404(pool, quiz_id)
    require_member(claims, row["cohort_id"])
    used = await _attempts_used(pool, quiz_id, user_id(claims))
    return json_response(
        _quiz_out(row, full=is_staff(claims, row["cohort_id"]), attempts_used=used)
    )


async def list_quizzes(request: web.Request) -> web.Response:
    claims = await current_user(request)
    cohort_id = path_int(request)
    require_member(claims, cohort_id)
    rows = await request.app[DB].fetch(
        "SELECT q.id, q.cohort_id, q.title, q.questions::text AS questions, q.max_attempts,"
        " q.created_at, (SELECT coalesce(max(s.attempt), 0) FROM quiz_submissions s"
        " WHERE s.quiz_id = q.id AND s.user_id = $2) AS used"
        " FROM quizzes q WHERE q.cohort_id = $1 ORDER BY q.id",
        cohort_id,
        user_id(claims),
    )
    out = []
    for row in rows:
        questions = questions_from_json(row["questions"])
        out.append(
            QuizSummary(
                id=row["id"],
                cohort_id=row["cohort_id"],
                title=row["title"],
                max_attempts=row["max_attempts"],
                max_score=round(sum(q.points for q in questions), 2),
                question_count=len(questions),
                attempts_used=row["used"],
                created_at=row["created_at"],
            )
        )
    return json_response(out)


# -- submissions ------------------------------------------------------------------------------


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
    used = await _attempts_used(conn, quiz["id"], uid)
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
        "/api/v1/cohorts/{id}/quizzes",
        create_quiz,
        summary="Create a quiz",
        auth="staff",
        request=QuizIn,
        response=QuizOut,
        status=201,
    )
    r.get(
        "/api/v1/cohorts/{id}/quizzes",
        list_quizzes,
        summary="Quizzes of a cohort, with the caller's attempts",
        auth="member",
        response=list[QuizSummary],
    )
    r.get(
        "/api/v1/quizzes/{id}",
        get_quiz,
        summary="A quiz: public questions for students, the full definition for staff",
        auth="member",
        response=QuizOut,
    )
    r.patch(
        "/api/v1/quizzes/{id}",
        update_quiz,
        summary="Edit a quiz (questions only before the first submission)",
        auth="staff",
        request=QuizPatch,
        response=QuizOut,
    )
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
