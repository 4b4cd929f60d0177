"""The instructor dashboard at a glance: one definition of its figures, for the scheduler's
``dashboard.update`` on ``staff:{cohort}`` (cohorts with recent activity) and the API's snapshot
(``GET /api/v1/cohorts/{id}/dashboard``, so the page shows figures on load instead of dashes).

Figures (PostgreSQL, read when asked): members; submissions in the last 24 h; submissions
waiting for grading (not graded yet, or in the hand-grading queue); the average graded
percentage; lessons completed in the last 24 h; active students (a lesson completed or a quiz
submitted) in the last 24 h and 7 days; struggling students (quiz average under 50 %); and
the struggling-student alerts with their reasons (:mod:`workers.struggling`).
"""

from __future__ import annotations

from typing import Any

import asyncpg

from workers.events import Dashboard
from workers.struggling import Alert, StudentStats, alerts

_FIGURES = """
SELECT a.cohort_id,
  (SELECT count(*) FROM enrollments e WHERE e.cohort_id = a.cohort_id AND e.kind = 'member')
    AS members,
  (SELECT count(*) FROM quiz_submissions s JOIN quizzes q ON q.id = s.quiz_id
   WHERE q.cohort_id = a.cohort_id AND s.submitted_at > now() - interval '1 day') AS subs,
  (SELECT count(*) FROM quiz_submissions s JOIN quizzes q ON q.id = s.quiz_id
   WHERE q.cohort_id = a.cohort_id AND (s.status = 'pending' OR s.review = 'waiting'))
    AS pending,
  (SELECT avg(100 * s.score / nullif(s.max_score, 0))::float8
   FROM quiz_submissions s JOIN quizzes q ON q.id = s.quiz_id
   WHERE q.cohort_id = a.cohort_id AND s.status = 'graded') AS avg_pct,
  (SELECT count(*) FROM lesson_progress p JOIN lessons l ON l.id = p.lesson_id
   WHERE l.cohort_id = a.cohort_id AND p.completed_at > now() - interval '1 day') AS lessons,
  (SELECT coalesce(array_agg(x.user_id ORDER BY x.user_id), '{}') FROM (
     SELECT s.user_id FROM quiz_submissions s JOIN quizzes q ON q.id = s.quiz_id
     WHERE q.cohort_id = a.cohort_id AND s.status = 'graded'
     GROUP BY s.user_id HAVING avg(100 * s.score / nullif(s.max_score, 0)) < 50
     LIMIT 50) x) AS struggling,
  (SELECT count(DISTINCT x.user_id) FROM (
     SELECT p.user_id FROM lesson_progress p JOIN lessons l ON l.id = p.lesson_id
     WHERE l.cohort_id = a.cohort_id AND p.completed_at > now() - interval '1 day'
     UNION ALL
     SELECT s.user_id FROM quiz_submissions s JOIN quizzes q ON q.id = s.quiz_id
     WHERE q.cohort_id = a.cohort_id AND s.submitted_at > now() - interval '1 day') x
   JOIN enrollments e ON e.cohort_id = a.cohort_id AND e.user_id = x.user_id
     AND e.kind = 'member') AS active_24h,
  (SELECT count(DISTINCT x.user_id) FROM (
     SELECT p.user_id FROM lesson_progress p JOIN lessons l ON l.id = p.lesson_id
     WHERE l.cohort_id = a.cohort_id AND p.completed_at > now() - interval '7 days'
     UNION ALL
     SELECT s.user_id FROM quiz_submissions s JOIN quizzes q ON q.id = s.quiz_id
     WHERE q.cohort_id = a.cohort_id AND s.submitted_at > now() - interval '7 days') x
   JOIN enrollments e ON e.cohort_id = a.cohort_id AND e.user_id = x.user_id
     AND e.kind = 'member') AS active_7d
FROM active a
"""

#: Cohorts with a submission, grade or lesson completion in the last ``$1`` seconds.
_ACTIVE = """
WITH active AS (
    SELECT DISTINCT q.cohort_id FROM quiz_submissions s JOIN quizzes q ON q.id = s.quiz_id
    WHERE s.submitted_at > now() - make_interval(secs => $1)
       OR s.graded_at > now() - make_interval(secs => $1)
    UNION
    SELECT DISTINCT l.cohort_id FROM lesson_progress p JOIN lessons l ON l.id = p.lesson_id
    WHERE p.completed_at > now() - make_interval(secs => $1)
)
"""
_ONE = "WITH active AS (SELECT id AS cohort_id FROM cohorts WHERE id = $1)\n"


def _dashboard(r: Any) -> Dashboard:
    return Dashboard(
        cohort_id=r["cohort_id"],
        members=r["members"],
        submissions_24h=r["subs"],
        pending_grading=r["pending"],
        average_percentage=(round(r["avg_pct"], 2) if r["avg_pct"] is not None else None),
        lessons_completed_24h=r["lessons"],
        struggling=list(r["struggling"]),
        active_24h=r["active_24h"],
        active_7d=r["active_7d"],
    )


_STATS = """
SELECT e.user_id, u.display_name AS name, now() AS now,
  (SELECT avg(100 * s.score / nullif(s.max_score, 0))::float8
   FROM quiz_submissions s JOIN quizzes q ON q.id = s.quiz_id
   WHERE q.cohort_id = $1 AND s.user_id = e.user_id AND s.status = 'graded') AS quiz_average,
  greatest(e.created_at,
    (SELECT max(p.completed_at) FROM lesson_progress p JOIN lessons l ON l.id = p.lesson_id
     WHERE l.cohort_id = $1 AND p.user_id = e.user_id),
    (SELECT max(s.submitted_at) FROM quiz_submissions s JOIN quizzes q ON q.id = s.quiz_id
     WHERE q.cohort_id = $1 AND s.user_id = e.user_id)) AS last_active,
  (SELECT count(*) FROM lesson_progress p JOIN lessons l ON l.id = p.lesson_id
   WHERE l.cohort_id = $1 AND p.user_id = e.user_id) AS completed
FROM enrollments e JOIN users u ON u.id = e.user_id
WHERE e.cohort_id = $1 AND e.kind = 'member'
"""


async def cohort_alerts(db: asyncpg.Pool | asyncpg.Connection, cohort_id: int) -> list[Alert]:
    """The struggling-student alerts of a cohort, now (the database's clock)."""
    rows = await db.fetch(_STATS, cohort_id)
    if not rows:
        return []
    total = await db.fetchval("SELECT count(*) FROM lessons WHERE cohort_id = $1", cohort_id)
    stats = [
        StudentStats(
            user_id=r["user_id"],
            name=r["name"],
            quiz_average=r["quiz_average"],
            last_active=r["last_active"],
            completed=r["completed"],
        )
        for r in rows
    ]
    return alerts(stats, int(total), rows[0]["now"])


async def active_dashboards(
    db: asyncpg.Pool | asyncpg.Connection, within_s: float
) -> list[Dashboard]:
    """The dashboards of cohorts with activity in the last ``within_s`` seconds."""
    boards = [_dashboard(r) for r in await db.fetch(_ACTIVE + _FIGURES, within_s)]
    for board in boards:
        board.alerts = await cohort_alerts(db, board.cohort_id)
    return boards


async def snapshot(db: asyncpg.Pool | asyncpg.Connection, cohort_id: int) -> Dashboard | None:
    """One cohort's dashboard now (None: no such cohort)."""
    row = await db.fetchrow(_ONE + _FIGURES, cohort_id)
    if row is None:
        return None
    board = _dashboard(row)
    board.alerts = await cohort_alerts(db, cohort_id)
    return board
