"""Quizzes: creating, editing and reading their definitions.

* Staff of a cohort create and edit its quizzes; a definition is validated by
  :func:`workers.grading.questions_from_obj` (400 ``invalid_quiz`` listing every problem).
  Questions can no longer change once someone has submitted (409).
* ``GET /api/v1/quizzes/{id}`` shows students :func:`workers.grading.public_questions` (no
  answer key, ``view: "public"``) and staff the full definition (``view: "full"``).
* Submissions and grades are in :mod:`api.routes_submissions`; statistics and the cohort
  leaderboard in :mod:`api.routes_quiz_stats`.
"""

from __future__ import annotations

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
    require_member,
    require_staff,
    user_id,
)
from api.openapi import Routes
from api.responses import json_response
from api.schemas import Title
from api.state import DB
from config.topics import cohort_topic
from gateway.auth import Claims
from workers import events
from workers.grading import (
    QuizDefinitionError,
    public_questions,
    questions_from_json,
    questions_from_obj,
    questions_to_json,
)
from workers.outbox_write import emit

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


_QUIZ = (
    "SELECT id, cohort_id, title, questions::text AS questions, max_attempts, created_at,"
    " updated_at FROM quizzes"
)


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


async def quiz_or_404(conn: Any, quiz_id: int) -> asyncpg.Record:
    row = await conn.fetchrow(f"{_QUIZ} WHERE id = $1", quiz_id)
    if row is None:
        raise errors.not_found(f"quiz {quiz_id} does not exist")
    return row


async def attempts_used(conn: Any, quiz_id: int, uid: int) -> int:
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
        published = events.QuizPublished(quiz_id=out.id, cohort_id=cohort_id, title=out.title)
        await emit(conn, events.to(cohort_topic(cohort_id), published))
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
    used = await attempts_used(pool, quiz_id, user_id(claims))
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
