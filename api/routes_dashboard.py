"""The instructor's views of a cohort, for staff of the cohort:

* ``GET /api/v1/cohorts/{id}/dashboard``: the cohort at a glance, now: the same figures the
  scheduler publishes as ``dashboard.update`` on ``staff:{cohort}`` (:mod:`workers.dashboard`),
  read on request, so the page has them on load even on a quiet day when no event comes;
  plus who is online in the cohort now (``online``, ``online_version``: gateway/online.py),
  which the ``online`` event on ``staff:{cohort}`` then keeps current.
* ``GET /api/v1/cohorts/{id}/students/{user_id}``: one member in detail (the drill-down):
  lessons done, every quiz submission with its effective grade and queue state, attendance
  per session (absent ones too), and the struggling alerts that name them. 404 for someone
  who is not a member of the cohort.
"""

from __future__ import annotations

from datetime import datetime

import msgspec
from aiohttp import web

from api import errors
from api.deps import current_user, path_int, require_staff
from api.openapi import Routes
from api.responses import json_response
from api.state import DB, REDIS
from config import redisconn
from gateway.online import read_online
from workers.dashboard import Dashboard, cohort_alerts, snapshot
from workers.progress import MyProgress, my_progress
from workers.struggling import Alert


class OnlineUser(msgspec.Struct, kw_only=True):
    user_id: int
    display_name: str
    #: ``member`` or ``staff``.
    kind: str


class DashboardNow(Dashboard, kw_only=True):
    """The figures of ``dashboard.update``, and who is online now."""

    #: Members and staff of the cohort with a live connection now, by name (staff only see it).
    online: list[OnlineUser] = msgspec.field(default_factory=list)
    #: The version of that list: an ``online`` event with a lower one is older, ignore it.
    #: -1 when Redis could not be asked (``online`` is then empty, not known to be empty).
    online_version: int = 0


class SubmissionLine(msgspec.Struct, kw_only=True):
    submission_id: int
    quiz_id: int
    quiz_title: str
    attempt: int
    status: str
    review: str
    score: float | None
    max_score: float | None
    submitted_at: datetime


class AttendanceLine(msgspec.Struct, kw_only=True):
    session_id: int
    title: str
    starts_at: datetime
    state: str
    attended: bool
    seconds_attended: int


class StudentDetail(msgspec.Struct, kw_only=True):
    cohort_id: int
    user_id: int
    display_name: str
    email: str
    enrolled_at: datetime
    progress: MyProgress
    submissions: list[SubmissionLine]
    attendance: list[AttendanceLine]
    alerts: list[Alert]


async def get_dashboard(request: web.Request) -> web.Response:
    claims = await current_user(request)
    cohort_id = path_int(request)
    require_staff(claims, cohort_id)
    board = await snapshot(request.app[DB], cohort_id)
    if board is None:
        raise errors.not_found(f"cohort {cohort_id} does not exist")
    try:
        version, users = await read_online(request.app[REDIS], cohort_id)
    except redisconn.ERRORS:
        version, users = -1, []
    rows = await request.app[DB].fetch(
        "SELECT e.user_id, u.display_name, e.kind FROM enrollments e"
        " JOIN users u ON u.id = e.user_id WHERE e.cohort_id = $1 AND e.user_id = ANY($2)"
        " ORDER BY u.display_name, e.user_id",
        cohort_id,
        users,
    )
    online = [OnlineUser(**dict(r)) for r in rows]
    fields = {f: getattr(board, f) for f in board.__struct_fields__}
    return json_response(DashboardNow(**fields, online=online, online_version=version))


async def get_student(request: web.Request) -> web.Response:
    claims = await current_user(request)
    cohort_id = path_int(request)
    uid = path_int(request, "user_id")
    require_staff(claims, cohort_id)
    async with request.app[DB].acquire() as conn:
        who = await conn.fetchrow(
            "SELECT u.id, u.display_name, u.email, e.created_at FROM enrollments e"
            " JOIN users u ON u.id = e.user_id"
            " WHERE e.cohort_id = $1 AND e.user_id = $2 AND e.kind = 'member'",
            cohort_id,
            uid,
        )
        if who is None:
            raise errors.not_found(f"user {uid} is not a student of cohort {cohort_id}")
        subs = await conn.fetch(
            "SELECT s.id AS submission_id, s.quiz_id, q.title AS quiz_title, s.attempt, s.status,"
            " s.review, s.score::float8 AS score, s.max_score::float8 AS max_score,"
            " s.submitted_at FROM quiz_submissions s JOIN quizzes q ON q.id = s.quiz_id"
            " WHERE q.cohort_id = $1 AND s.user_id = $2 ORDER BY s.submitted_at DESC, s.id DESC"
            " LIMIT 500",
            cohort_id,
            uid,
        )
        visits = await conn.fetch(
            "SELECT ls.id AS session_id, ls.title, ls.starts_at, ls.state,"
            " a.user_id IS NOT NULL AS attended, coalesce(a.seconds_attended, 0)"
            " AS seconds_attended FROM live_sessions ls"
            " LEFT JOIN attendance a ON a.session_id = ls.id AND a.user_id = $2"
            " WHERE ls.cohort_id = $1 AND ls.state <> 'scheduled'"
            " ORDER BY ls.starts_at DESC LIMIT 500",
            cohort_id,
            uid,
        )
        progress = await my_progress(conn, uid, cohort_id)
        alerts = [a for a in await cohort_alerts(conn, cohort_id) if a.user_id == uid]
    return json_response(
        StudentDetail(
            cohort_id=cohort_id,
            user_id=uid,
            display_name=who["display_name"],
            email=who["email"],
            enrolled_at=who["created_at"],
            progress=progress,
            submissions=[SubmissionLine(**dict(r)) for r in subs],
            attendance=[AttendanceLine(**dict(r)) for r in visits],
            alerts=alerts,
        )
    )


def setup(app: web.Application) -> None:
    Routes(app, "dashboard").get(
        "/api/v1/cohorts/{id}/students/{user_id}",
        get_student,
        summary="One student of the cohort in detail: lessons, grades, attendance, alerts",
        auth="staff",
        response=StudentDetail,
    )
    Routes(app, "dashboard").get(
        "/api/v1/cohorts/{id}/dashboard",
        get_dashboard,
        summary="The cohort at a glance (the figures of dashboard.update) and who is online, now",
        auth="staff",
        response=DashboardNow,
    )
