"""Live sessions: scheduling, the scheduled -> live -> ended state machine, the late joiner's
room snapshot, and attendance.

* Staff schedule sessions (``POST /api/v1/cohorts/{id}/sessions``) and start and end them;
  members and staff list and read them. Starting a ``live`` or ``ended`` session, or ending one
  that is not ``live``, is ``409 invalid_transition``. Each transition emits ``session.state``
  {session} to the room and to ``cohort:{id}`` through the outbox (not latency-critical).
* Transitions take the room's advisory lock (:func:`workers.live_state.room_lock`'s key), so
  they wait for a command being applied in the room and no command lands after the end.
  Ending closes an open poll and ends a running live quiz. Both transitions credit attendance
  up to that moment first, so time in the room before the start or after the end is not
  counted.
* ``GET /api/v1/sessions/{id}/state``: see :func:`session_state`.
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
from api.deps import body, current_user, is_staff, path_int, require_member, require_staff
from api.openapi import Routes
from api.responses import json_response
from api.schemas import Title
from api.state import DB, PUBLISHER, REDIS, SETTINGS
from config import keys, redisconn
from config.topics import cohort_topic
from gateway import sessions as open_sessions
from gateway.protocol import EMPTY_CURSOR
from workers import attendance, live_polls, live_quiz
from workers import live_rules as rules
from workers.context import WorkerContext
from workers.live_state import LOCK_NAMESPACE, TIMINGS, Room, get_meta, reaction_totals
from workers.outbox_write import emit_many
from workers.ranking import rank

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


class QuestionOut(msgspec.Struct, kw_only=True):
    id: int
    session_id: int
    #: The asker; both null for an anonymous question.
    user: str | None
    name: str | None = None
    anonymous: bool = False
    #: The caller asked it (the only way an anonymous asker learns it is theirs).
    mine: bool = False
    body: str
    created_at: str
    votes: int
    pinned: bool
    dismissed: bool
    answered: bool
    answer: str | None
    answered_by: str | None
    answered_by_name: str | None = None
    answered_at: str | None


class TallyOut(msgspec.Struct, kw_only=True):
    counts: list[int]
    total: int
    percentages: list[int]


class PollOut(msgspec.Struct, kw_only=True):
    """A poll with its settings (:mod:`workers.poll_rules`); ``tally`` only when the caller
    may see the counts, ``voters`` (per option) only for staff of a named poll."""

    id: int
    session_id: int
    question: str
    options: list[str]
    state: str
    kind: str = "single"
    anonymous: bool = True
    results: str = "on_reveal"
    opened_at: str
    closes_at: str | None = None
    closed_at: str | None
    closed_by: str | None = None
    total: int = 0
    tally: TallyOut | None = None
    voters: list[list[str]] | None = None
    my_vote: int | None = None
    my_choices: list[int] = msgspec.field(default_factory=list)


class MessageOut(msgspec.Struct, kw_only=True):
    id: int
    session_id: int
    user: str | None
    name: str | None = None
    body: str
    created_at: str


class HereOut(msgspec.Struct, kw_only=True):
    count: int
    #: Who is here: staff only (students get the count).
    users: list[str] | None = None


class StatusOut(msgspec.Struct, kw_only=True):
    state: str
    by: str
    at: str
    #: Where to watch a stopped recording (``recording.set``), else null.
    url: str | None = None


class BannerOut(msgspec.Struct, kw_only=True):
    text: str
    by: str
    at: str


class RoomStateOut(msgspec.Struct, kw_only=True):
    """A room as of ``cursors``: subscribe to each topic with its cursor to continue."""

    session: SessionOut
    cursors: dict[str, str]
    questions: list[QuestionOut]
    my_votes: list[int]
    #: The newest poll (also ``polls[0]``).
    poll: PollOut | None
    #: The session's polls, newest first (at most 50).
    polls: list[PollOut]
    chat: list[MessageOut]
    reactions: dict[str, int]
    here: HereOut
    recording: StatusOut | None
    banner: BannerOut | None
    #: The session's newest live quiz (running or ended), else null.
    quiz: LiveQuizOut | None = None


class QuizResultsOut(msgspec.Struct, kw_only=True):
    live_quiz_id: int
    index: int
    question_id: str
    answered: int
    outcomes: dict[str, int]
    #: Per option, how many picked it (choice questions).
    counts: list[int] | None = None
    #: The right options (choice questions of a quiz that reveals them).
    correct: list[int] | None = None


class QuizStandingsOut(msgspec.Struct, kw_only=True):
    players: int
    top: list[dict[str, Any]]
    final: bool


class LiveQuizOut(msgspec.Struct, kw_only=True):
    """The session's newest live quiz (workers/live_quiz.py): the current question as
    ``quiz.question`` showed it, with the time left on the server's clock."""

    live_quiz_id: int
    quiz_id: int
    title: str
    index: int
    count: int
    question: dict[str, Any]
    time_limit_s: int
    started_at: str
    deadline: str
    state: str
    #: Answers are accepted now (running, before the deadline, results not out).
    open: bool
    time_left_ms: int
    #: The current question's results, once it closed.
    results: QuizResultsOut | None
    leaderboard: QuizStandingsOut
    my_answer: Any
    my_score: int
    my_rank: int | None


class AttendanceOut(msgspec.Struct, kw_only=True):
    user_id: int
    display_name: str
    joined_at: datetime
    left_at: datetime | None
    seconds_attended: int


_SESSION = "SELECT id, cohort_id, title, starts_at, ends_at, state FROM live_sessions"


def _out(row: Any) -> SessionOut:
    return msgspec.convert(rules.session_view(row), SessionOut)


async def _session_or_404(conn: Any, session_id: int, *, lock: bool = False) -> asyncpg.Record:
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
    row = await _session_or_404(request.app[DB], path_int(request))
    require_member(claims, row["cohort_id"])
    return json_response(_out(row))


# -- the state machine ------------------------------------------------------------------------


def _worker_context(app: web.Application) -> WorkerContext:
    return WorkerContext(app[SETTINGS], app[REDIS], app[DB], app[PUBLISHER])


async def _transition(request: web.Request, action: str) -> web.Response:
    claims = await current_user(request)
    session_id = path_int(request)
    pool = request.app[DB]
    row = await _session_or_404(pool, session_id)
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
        row = await _session_or_404(conn, session_id, lock=True)
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
        events: list[tuple[str, str, Any]] = []
        if new_state == "ended":
            events += await live_polls.close_open(conn, room, "session_end")
            events += await live_quiz.end_running(conn, room, "session_end")
        events.append((room.topic, "session.state", {"session": view}))
        events.append((cohort_topic(row["cohort_id"]), "session.state", {"session": view}))
        await emit_many(conn, events)
        await open_sessions.register(request.app[REDIS], row["cohort_id"], session_id, new_state)
    return json_response(_out(row))


async def start_session(request: web.Request) -> web.Response:
    return await _transition(request, "start")


async def end_session(request: web.Request) -> web.Response:
    return await _transition(request, "end")


# -- the late joiner's snapshot ---------------------------------------------------------------


async def _cursors(app: web.Application, topics: list[str]) -> dict[str, str]:
    """The newest event ID of each topic's history (``0-0`` for a topic without one: the
    gateway replays everything published after it)."""
    shards = app[SETTINGS].bus_shards
    pipe = app[REDIS].pipeline(transaction=False)
    for topic in topics:
        pipe.xrevrange(keys.history_key(topic, shards), count=1)
    tails = await pipe.execute()
    return {
        topic: tail[0][0].decode() if tail else EMPTY_CURSOR
        for topic, tail in zip(topics, tails, strict=True)
    }


async def _room_questions(
    conn: asyncpg.Connection, session_id: int, me: int
) -> tuple[list[dict[str, Any]], list[int]]:
    """The room's question board (ranked, undismissed, ``mine`` marked) and the ids of the
    questions ``me`` voted for."""
    qrows = await conn.fetch(
        "SELECT q.id, q.session_id, q.user_id, q.body, q.created_at, q.answer,"
        " q.answered_by, q.answered_at, q.pinned, q.dismissed, q.votes, q.anonymous,"
        " u.display_name AS name, a.display_name AS answered_by_name FROM questions q"
        " JOIN users u ON u.id = q.user_id LEFT JOIN users a ON a.id = q.answered_by"
        " WHERE q.session_id = $1 AND NOT q.dismissed",
        session_id,
    )
    my_votes = await conn.fetch(
        "SELECT v.question_id FROM question_votes v JOIN questions q ON q.id = v.question_id"
        " WHERE q.session_id = $1 AND v.user_id = $2 AND NOT q.dismissed"
        " ORDER BY v.question_id",
        session_id,
        me,
    )
    by_id = {r["id"]: r for r in qrows}
    board = [
        {**rules.question_view(by_id[item.id]), "mine": by_id[item.id]["user_id"] == me}
        for item in rank(rules.qa_item(r) for r in qrows)
    ]
    return board, [r["question_id"] for r in my_votes]


async def _recent_chat(conn: asyncpg.Connection, session_id: int) -> list[dict[str, Any]]:
    """The room's last ``SNAPSHOT_CHAT`` undeleted chat messages, oldest first."""
    chat = await conn.fetch(
        "SELECT m.id, m.session_id, m.user_id, m.body, m.created_at, u.display_name AS name"
        " FROM chat_messages m JOIN users u ON u.id = m.user_id"
        " WHERE m.session_id = $1 AND m.deleted_at IS NULL ORDER BY m.id DESC LIMIT $2",
        session_id,
        rules.SNAPSHOT_CHAT,
    )
    return [rules.message_view(r) for r in reversed(chat)]


async def session_state(request: web.Request) -> web.Response:
    """The room as a late joiner needs it, and the cursor per topic it was taken at.

    **Why the cursor is read first.** Every room event is published only *after* the change
    it announces is committed (workers publish after commit under the room lock; the outbox
    relay publishes committed rows). So when this handler reads topic T's newest event ID C
    and only *then* reads the database and Redis, every event up to C describes a change the
    snapshot already contains. Events after C may or may not be in it; the client gets them
    when it subscribes with ``cursors[T]``, and since every room event carries the full new
    state of what it changed (a whole question, a whole tally, a message with its id),
    applying one the snapshot already reflects is harmless. No gap, and overlap is idempotent.
    Reading in the other order would lose any event published between the two reads.

    The database part is one ``REPEATABLE READ`` read-only transaction, so it is a single
    point in time. Topics: the room ``live:{cohort}:{session}``, plus ``staff:{cohort}`` for
    staff (who is here, live poll tallies).
    """
    claims = await current_user(request)
    session_id = path_int(request)
    app = request.app
    pool = app[DB]
    row = await _session_or_404(pool, session_id)
    cohort_id = row["cohort_id"]
    require_member(claims, cohort_id)
    staff = is_staff(claims, cohort_id)
    me = int(claims.sub) if claims.sub.isdigit() else 0
    room = Room(str(cohort_id), str(session_id), cohort_id, session_id)
    topics = [room.topic, room.staff_topic] if staff else [room.topic]

    cursors = await _cursors(app, topics)  # first: see the docstring

    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        row = await _session_or_404(conn, session_id)
        board, my_votes = await _room_questions(conn, session_id, me)
        polls = await live_polls.history(conn, session_id, me, staff)
        chat = await _recent_chat(conn, session_id)
        quiz = await live_quiz.room_quiz(conn, session_id, me)
    redis = app[REDIS]
    meta = await get_meta(redis, room)
    users = await attendance.present_users(redis, room)
    state = {
        "session": rules.session_view(row),
        "cursors": cursors,
        "questions": board,
        "my_votes": my_votes,
        "poll": polls[0] if polls else None,
        "polls": polls,
        "chat": chat,
        "reactions": await reaction_totals(redis, room),
        "here": {"count": len(users), "users": users if staff else None},
        "recording": meta.get("recording"),
        "banner": meta.get("banner"),
        "quiz": quiz,
    }
    return json_response(msgspec.convert(state, RoomStateOut))


async def list_attendance(request: web.Request) -> web.Response:
    claims = await current_user(request)
    session_id = path_int(request)
    pool = request.app[DB]
    row = await _session_or_404(pool, session_id)
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
    row = await _session_or_404(pool, session_id)
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
        "/api/v1/sessions/{id}/state",
        session_state,
        summary="The room's state for a late joiner, with the cursor of each topic",
        auth="member",
        response=RoomStateOut,
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
