"""Live sessions: scheduling, the scheduled -> live -> ended state machine, and attendance
(the late joiner's room snapshot is :mod:`api.routes_room_state`).

* Staff schedule sessions (``POST /api/v1/cohorts/{id}/sessions``) and start and end them;
  members and staff list and read them. Starting a ``live`` or ``ended`` session, or ending one
  that is not ``live``, is ``409 invalid_transition``. Each transition emits ``session.state``
  {session} to the room and to ``cohort:{id}`` through the outbox (not latency-critical).
* Transitions take the room's advisory lock (:func:`workers.live_state.room_lock`'s key), so
  they wait for a command being applied in the room and no command lands after the end.
  Ending closes an open poll and ends a running live quiz. Both transitions credit attendance
  up to that moment first, so time in the room before the start or after the end is not
  counted.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

import asyncpg
import msgspec
from aiohttp import web

from api import errors
from api.csv_export import to_csv
from api.deps import body, current_user, path_int, require_member, require_staff
from api.openapi import Routes
from api.responses import json_response
from api.schemas import Title
from api.state import DB, PUBLISHER, REDIS, SETTINGS
from config import redisconn
from config.topics import cohort_topic
from gateway import sessions as open_sessions
from workers import attendance, events, live_polls, live_quiz
from workers import live_rules as rules
from workers.context import WorkerContext
from workers.live_state import LOCK_NAMESPACE, TIMINGS, Room
from workers.outbox_write import Addressed, emit_many

log = logging.getLogger("lectern.api.login_sessions")

AwareDatetime = Annotated[datetime, msgspec.Meta(tz=True)]


class SessionIn(msgspec.Struct, kw_only=True):
    title: Title
    starts_at: AwareDatetime
    ends_at: AwareDatetime


class SessionOut(msgspec.Struct, kw_only=True):
    id: int
    cohort_id: int
    title: str
    starts_at: str
    ends_at: str
    state: str
    topic: str


class AttendanceOut(msgspec.Struct, kw_only=True):
    user_id: int
    display_name: str
    joined_at: datetime
    left_at: datetime | None
    seconds_attended: int


_SESSION = "SELECT id, cohort_id, title, starts_at, ends_at, state FROM live_sessions"


def _out(row: Any) -> SessionOut:
    return msgspec.convert(rules.session_view(row), SessionOut)


async def session_or_404(conn: Any, session_id: int, *, lock: bool = False) -> asyncpg.Record:
    row = await conn.fetchrow(
        f"{_SESSION} WHERE id = $1" + (" FOR UPDATE" if lock else ""), session_id
    )
    if row is None:
        raise errors.not_found(f"session {session_id} does not exist")
    return row


# -- scheduling -------------------------------------------------------------------------------


async def create_session(request: web.Request) -> web.Response:
    claims = await current_user(request)
    cohort_id = path_int(request)
    require_staff(claims, cohort_id)
    data = await body(request, SessionIn)
    title = data.title.strip()
    if not title:
        raise errors.bad_request("the title is blank", {"field": "title"}, "invalid_field")
    if data.ends_at <= data.starts_at:
        raise errors.bad_request(
            "ends_at must be after starts_at", {"field": "ends_at"}, "invalid_field"
        )
    try:
        async with request.app[DB].acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "INSERT INTO live_sessions (cohort_id, title, starts_at, ends_at)"
                " VALUES ($1, $2, $3, $4)"
                " RETURNING id, cohort_id, title, starts_at, ends_at, state",
                cohort_id,
                title,
                data.starts_at,
                data.ends_at,
            )
            # Before the commit: a session no gateway may subscribe to is never created.
            await open_sessions.register(request.app[REDIS], cohort_id, row["id"], row["state"])
    except asyncpg.ForeignKeyViolationError:
        raise errors.not_found(f"cohort {cohort_id} does not exist") from None
    return json_response(_out(row), 201)


async def list_sessions(request: web.Request) -> web.Response:
    claims = await current_user(request)
    cohort_id = path_int(request)
    require_member(claims, cohort_id)
    state = request.query.get("state")
    if state is not None and state not in ("scheduled", "live", "ended"):
        raise errors.bad_request(
            "state must be scheduled, live or ended", {"field": "state"}, "invalid_field"
        )
    rows = await request.app[DB].fetch(
        f"{_SESSION} WHERE cohort_id = $1 AND ($2::text IS NULL OR state = $2)"
        " ORDER BY starts_at, id",
        cohort_id,
        state,
    )
    return json_response([_out(r) for r in rows])


async def get_session(request: web.Request) -> web.Response:
    claims = await current_user(request)
    row = await session_or_404(request.app[DB], path_int(request))
    require_member(claims, row["cohort_id"])
    return json_response(_out(row))


# -- the state machine ------------------------------------------------------------------------


def _worker_context(app: web.Application) -> WorkerContext:
    return WorkerContext(app[SETTINGS], app[REDIS], app[DB], app[PUBLISHER])


async def _transition(request: web.Request, action: str) -> web.Response:
    claims = await current_user(request)
    session_id = path_int(request)
    pool = request.app[DB]
    row = await session_or_404(pool, session_id)
    require_staff(claims, row["cohort_id"])
    room = Room(str(row["cohort_id"]), str(session_id), row["cohort_id"], session_id)
    if rules.transition(row["state"], action) is not None:
        # Settle attendance up to now under the old state (see the module docstring).
        try:
            await attendance.checkpoint(_worker_context(request.app), room, TIMINGS[0])
        except redisconn.ERRORS as exc:
            log.warning("attendance checkpoint skipped: %s", exc)
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOCK_NAMESPACE | session_id)
        row = await session_or_404(conn, session_id, lock=True)
        new_state = rules.transition(row["state"], action)
        if new_state is None:
            raise errors.conflict(
                f"cannot {action} a session that is {row['state']}",
                {"state": row["state"], "action": action},
                "invalid_transition",
            )
        row = await conn.fetchrow(
            "UPDATE live_sessions SET state = $2 WHERE id = $1"
            " RETURNING id, cohort_id, title, starts_at, ends_at, state",
            session_id,
            new_state,
        )
        view = rules.session_view(row)
        sent: list[Addressed] = []
        if new_state == "ended":
            sent += await live_polls.close_open(conn, room, "session_end")
            sent += await live_quiz.end_running(conn, room, "session_end")
        state = events.SessionState(session=view)
        sent.append(events.to(room.topic, state))
        sent.append(events.to(cohort_topic(row["cohort_id"]), state))
        await emit_many(conn, sent)
        await open_sessions.register(request.app[REDIS], row["cohort_id"], session_id, new_state)
    return json_response(_out(row))


async def start_session(request: web.Request) -> web.Response:
    return await _transition(request, "start")


async def end_session(request: web.Request) -> web.Response:
    return await _transition(request, "end")


# -- attendance -------------------------------------------------------------------------------


async def list_attendance(request: web.Request) -> web.Response:
    claims = await current_user(request)
    session_id = path_int(request)
    pool = request.app[DB]
    row = await session_or_404(pool, session_id)
    require_staff(claims, row["cohort_id"])
    rows = await pool.fetch(
        "SELECT a.user_id, u.display_name, a.joined_at, a.left_at, a.seconds_attended"
        " FROM attendance a JOIN users u ON u.id = a.user_id WHERE a.session_id = $1"
        " ORDER BY a.user_id",
        session_id,
    )
    return json_response([AttendanceOut(**dict(r)) for r in rows])


ATTENDANCE_HEADER = ("student", "email", "attended", "minutes", "joined_at", "left_at")


async def attendance_csv(request: web.Request) -> web.Response:
    """The session's attendance for a spreadsheet: every member of the cohort, absent ones
    included (attended "no", 0 minutes), by name (formula-safe, :mod:`api.csv_export`)."""
    claims = await current_user(request)
    session_id = path_int(request)
    pool = request.app[DB]
    row = await session_or_404(pool, session_id)
    require_staff(claims, row["cohort_id"])
    rows = await pool.fetch(
        "SELECT u.display_name, u.email, a.user_id IS NOT NULL AS attended,"
        " coalesce(a.seconds_attended, 0) AS seconds, a.joined_at, a.left_at"
        " FROM enrollments e JOIN users u ON u.id = e.user_id"
        " LEFT JOIN attendance a ON a.session_id = $2 AND a.user_id = e.user_id"
        " WHERE e.cohort_id = $1 AND e.kind = 'member' ORDER BY u.display_name, u.id",
        row["cohort_id"],
        session_id,
    )
    text = to_csv(
        ATTENDANCE_HEADER,
        (
            (
                r["display_name"],
                r["email"],
                r["attended"],
                round(r["seconds"] / 60, 1),
                rules.iso(r["joined_at"]),
                rules.iso(r["left_at"]),
            )
            for r in rows
        ),
    )
    return web.Response(
        text=text,
        content_type="text/csv",
        charset="utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="attendance-session-{session_id}.csv"'
        },
    )


def setup(app: web.Application) -> None:
    """Register this module's routes with their OpenAPI descriptions.

    Long because a route table reads best as one list.
    """
    r = Routes(app, tag="sessions")
    r.post(
        "/api/v1/cohorts/{id}/sessions",
        create_session,
        summary="Schedule a live session",
        auth="staff",
        request=SessionIn,
        response=SessionOut,
        status=201,
    )
    r.get(
        "/api/v1/cohorts/{id}/sessions",
        list_sessions,
        summary="A cohort's live sessions, by start time",
        auth="member",
        response=list[SessionOut],
        query=(("state", "string"),),
    )
    r.get(
        "/api/v1/sessions/{id}",
        get_session,
        summary="A live session",
        auth="member",
        response=SessionOut,
    )
    r.post(
        "/api/v1/sessions/{id}/start",
        start_session,
        summary="Start a scheduled session (409 unless scheduled)",
        auth="staff",
        response=SessionOut,
    )
    r.post(
        "/api/v1/sessions/{id}/end",
        end_session,
        summary="End a live session (409 unless live)",
        auth="staff",
        response=SessionOut,
    )
    r.get(
        "/api/v1/sessions/{id}/attendance.csv",
        attendance_csv,
        summary="Attendance as CSV: every member, minutes attended (staff)",
        auth="staff",
        response=bytes,
        response_content_type="text/csv",
    )
    r.get(
        "/api/v1/sessions/{id}/attendance",
        list_attendance,
        summary="Seconds attended per user",
        auth="staff",
        response=list[AttendanceOut],
    )
