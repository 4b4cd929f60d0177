"""Quiz statistics for staff and cohort leaderboards.

* ``GET /api/v1/quizzes/{id}/stats`` (staff): counts, average, median and best percentage, a
  ten-bucket distribution and per-question correct rates, over every graded attempt.
* ``GET /api/v1/cohorts/{id}/leaderboard`` (members and staff): the board kept by
  :mod:`workers.leaderboard` (the sum of each student's best score per quiz), paged with
  ``limit`` and ``offset``, plus the caller's own place (``me``) for a student.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from api.deps import (
    current_user,
    path_int,
    query_int,
    require_member,
    require_staff,
    user_id,
)
from api.openapi import Routes
from api.responses import json_response
from api.routes_quizzes import is_student, quiz_or_404
from api.state import DB, REDIS
from workers import leaderboard
from workers.grading import questions_from_json

#: Deepest leaderboard page offset (a cohort never has more students than this).
MAX_OFFSET = 1_000_000


class QuestionStats(msgspec.Struct, kw_only=True):
    question_id: str
    prompt: str
    max_points: float
    answered: int
    correct: int
    correct_rate: float | None
    average_points: float | None


class QuizStats(msgspec.Struct, kw_only=True):
    """Over graded submissions (every attempt counts). ``distribution``: ten buckets of
    percentage, 0-10 ... 90-100 (100 falls in the last)."""

    quiz_id: int
    submissions: int
    graded: int
    pending: int
    students: int
    average_percentage: float | None
    median_percentage: float | None
    best_percentage: float | None
    distribution: list[int]
    questions: list[QuestionStats]


class LeaderboardOut(msgspec.Struct, kw_only=True):
    cohort_id: int
    entries: list[leaderboard.Entry]
    total: int
    me: leaderboard.Entry | None = None


_STATS = """
SELECT count(*) AS submissions,
       count(*) FILTER (WHERE status = 'graded') AS graded,
       count(*) FILTER (WHERE status = 'pending') AS pending,
       count(DISTINCT user_id) AS students,
       avg(100 * score / nullif(max_score, 0))::float8 AS avg_pct,
       (percentile_cont(0.5) WITHIN GROUP (ORDER BY 100 * score / nullif(max_score, 0)))::float8
           AS median_pct,
       max(100 * score / nullif(max_score, 0))::float8 AS best_pct
FROM quiz_submissions WHERE quiz_id = $1
"""
_BUCKETS = """
SELECT least(floor(100 * score / nullif(max_score, 0) / 10), 9)::int AS bucket, count(*) AS n
FROM quiz_submissions WHERE quiz_id = $1 AND status = 'graded' AND max_score > 0
GROUP BY 1
"""
_PER_QUESTION = """
SELECT r->>'question_id' AS question_id,
       count(*) FILTER (WHERE r->>'outcome' <> 'missing') AS answered,
       count(*) FILTER (WHERE (r->>'correct')::boolean) AS correct,
       avg((r->>'points_awarded')::float8) AS avg_points,
       count(*) AS graded
FROM quiz_submissions s, jsonb_array_elements(s.feedback->'results') r
WHERE s.quiz_id = $1 AND s.status = 'graded'
GROUP BY 1
"""


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


async def quiz_stats(request: web.Request) -> web.Response:
    claims = await current_user(request)
    quiz_id = path_int(request)
    pool = request.app[DB]
    quiz = await quiz_or_404(pool, quiz_id)
    require_staff(claims, quiz["cohort_id"])
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        totals = await conn.fetchrow(_STATS, quiz_id)
        buckets = {r["bucket"]: r["n"] for r in await conn.fetch(_BUCKETS, quiz_id)}
        per_q = {r["question_id"]: r for r in await conn.fetch(_PER_QUESTION, quiz_id)}
    questions = []
    for q in questions_from_json(quiz["questions"]):
        r = per_q.get(q.id)
        graded = r["graded"] if r else 0
        questions.append(
            QuestionStats(
                question_id=q.id,
                prompt=q.prompt,
                max_points=q.points,
                answered=r["answered"] if r else 0,
                correct=r["correct"] if r else 0,
                correct_rate=round(r["correct"] / graded, 4) if r and graded else None,
                average_points=_round(r["avg_points"]) if r else None,
            )
        )
    return json_response(
        QuizStats(
            quiz_id=quiz_id,
            submissions=totals["submissions"],
            graded=totals["graded"],
            pending=totals["pending"],
            students=totals["students"],
            average_percentage=_round(totals["avg_pct"]),
            median_percentage=_round(totals["median_pct"]),
            best_percentage=_round(totals["best_pct"]),
            distribution=[buckets.get(i, 0) for i in range(10)],
            questions=questions,
        )
    )


async def get_leaderboard(request: web.Request) -> web.Response:
    claims = await current_user(request)
    cohort_id = path_int(request)
    require_member(claims, cohort_id)
    limit = min(query_int(request, "limit", 10, lo=1) or 10, 100)
    # Redis ranks are int64: an offset near 2**63 would overflow offset + limit there.
    offset = query_int(request, "offset", 0, hi=MAX_OFFSET) or 0
    pool, redis = request.app[DB], request.app[REDIS]
    board = await leaderboard.read(pool, redis, cohort_id, limit=limit, offset=offset)
    me = next((e for e in board.entries if e.user_id == user_id(claims)), None)
    if me is None and is_student(claims, cohort_id):
        me = await leaderboard.entry_of(pool, redis, cohort_id, user_id(claims))
    return json_response(
        LeaderboardOut(cohort_id=cohort_id, entries=board.entries, total=board.total, me=me)
    )


def setup(app: web.Application) -> None:
    r = Routes(app, "quizzes")
    r.get(
        "/api/v1/quizzes/{id}/stats",
        quiz_stats,
        summary="Statistics of a quiz",
        auth="staff",
        response=QuizStats,
    )
    r.get(
        "/api/v1/cohorts/{id}/leaderboard",
        get_leaderboard,
        summary="The cohort's leaderboard (sum of each student's best score per quiz)",
        auth="member",
        response=LeaderboardOut,
        query=(("limit", "integer"), ("offset", "integer")),
    )
