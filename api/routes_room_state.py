"""The late joiner's snapshot of a live room: ``GET /api/v1/sessions/{id}/state``.

The room's state (question board, polls, chat, reactions, who is here, recording, banner, the
newest live quiz) **and** the cursor of each topic it was taken at, so that subscribing with
those cursors continues it with no gap (:func:`session_state` says why). Events carry the same
views (:mod:`workers.live_rules`), so a client applies events to the snapshot unchanged.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec
from aiohttp import web

from api.deps import current_user, is_staff, path_int, require_member
from api.openapi import Routes
from api.responses import json_response
from api.routes_sessions import SessionOut, session_or_404
from api.state import DB, REDIS, SETTINGS
from config import keys
from gateway.protocol import EMPTY_CURSOR
from workers import attendance, live_polls, live_quiz
from workers import live_rules as rules
from workers.live_state import Room, get_meta, reaction_totals
from workers.ranking import rank


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
    row = await session_or_404(pool, session_id)
    cohort_id = row["cohort_id"]
    require_member(claims, cohort_id)
    staff = is_staff(claims, cohort_id)
    me = int(claims.sub) if claims.sub.isdigit() else 0
    room = Room(str(cohort_id), str(session_id), cohort_id, session_id)
    topics = [room.topic, room.staff_topic] if staff else [room.topic]

    cursors = await _cursors(app, topics)  # first: see the docstring

    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        row = await session_or_404(conn, session_id)
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


def setup(app: web.Application) -> None:
    """Register this module's route with its OpenAPI description."""
    Routes(app, tag="sessions").get(
        "/api/v1/sessions/{id}/state",
        session_state,
        summary="The room's state for a late joiner, with the cursor of each topic",
        auth="member",
        response=RoomStateOut,
    )
