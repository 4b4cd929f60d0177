"""Applying one offline operation under the documented conflict rules (docs/api.md, "Offline
sync"). :func:`apply` runs inside the caller's transaction, which also records the operation's
idempotency key, so an operation is applied, and its result stored, exactly once.

The rules, per kind of data:

* **Progress: the server wins.** ``lesson.complete`` only ever advances progress; a lesson the
  server already has completed keeps its server ``completed_at`` (``server_kept``).
* **Quiz answer drafts: last write wins** by client timestamp. A draft older than (or as old
  as) the stored one changes nothing (``server_kept``, with the stored draft).
* **Content (notes): manual review.** ``note.save`` carries the version it was edited from
  (``base_version``, 0 for a new note). On the server's current version it applies (version
  + 1); on any other the server's note stays and both sides go to ``sync_conflicts`` for a
  person to resolve (``review``). Nothing is merged, nothing is lost.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import asyncpg
import msgspec

from workers import progress

Status = Literal["applied", "server_kept", "review", "rejected"]

#: Longest JSON a quiz draft may take (bytes, encoded).
MAX_DRAFT_BYTES = 16 * 1024
MAX_NOTE_CHARS = 20_000
Key = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
Id = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]


class LessonComplete(msgspec.Struct, kw_only=True, tag="lesson.complete", tag_field="type"):
    key: Key
    client_ts: datetime
    lesson_id: Id


class QuizDraft(msgspec.Struct, kw_only=True, tag="quiz.draft", tag_field="type"):
    key: Key
    client_ts: datetime
    quiz_id: Id
    #: The answers as the quiz page holds them (question index -> answer); at most 16 KiB.
    answers: dict[str, Any]


class NoteSave(msgspec.Struct, kw_only=True, tag="note.save", tag_field="type"):
    key: Key
    client_ts: datetime
    lesson_id: Id
    body: Annotated[str, msgspec.Meta(max_length=MAX_NOTE_CHARS)]
    #: The note version the edit started from; 0 when the client had no note.
    base_version: Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]


Operation = LessonComplete | QuizDraft | NoteSave


class OpResult(msgspec.Struct, kw_only=True):
    key: str
    type: str
    status: Status
    #: True when this key was applied before: the stored result, nothing applied again.
    replayed: bool = False
    error: str | None = None
    #: The server's value after the operation (what the client should now show).
    data: dict[str, Any] = {}


def op_type(op: Operation) -> str:
    return str(msgspec.inspect.type_info(type(op)).tag)  # type: ignore[attr-defined]


def lww_applies(stored_ts: datetime | None, client_ts: datetime) -> bool:
    """Last write wins: the client's write replaces the stored one only when strictly newer
    (a tie keeps the server's, so replays and equal clocks never flip a value)."""
    return stored_ts is None or client_ts > stored_ts


def note_applies(server_version: int, base_version: int) -> bool:
    """A content edit applies only on top of the version the server has (0: no note yet)."""
    return server_version == base_version


_json = msgspec.json.Encoder()


async def _member_of(conn: asyncpg.Connection, cohort_id: int | None, uid: int) -> bool:
    if cohort_id is None:
        return False
    kind = await conn.fetchval(
        "SELECT kind FROM enrollments WHERE cohort_id = $1 AND user_id = $2", cohort_id, uid
    )
    return bool(kind == "member")


def rejected(op: Operation, error: str) -> OpResult:
    return OpResult(key=op.key, type=op_type(op), status="rejected", error=error)


async def apply(conn: asyncpg.Connection, uid: int, op: Operation) -> tuple[OpResult, int | None]:
    """Apply ``op`` for user ``uid``; returns its result and, for a newly completed lesson, the
    cohort whose staff progress must be refreshed after the commit."""
    match op:
        case LessonComplete():
            return await _complete(conn, uid, op)
        case QuizDraft():
            return await _draft(conn, uid, op), None
        case NoteSave():
            return await _note(conn, uid, op), None


async def _complete(
    conn: asyncpg.Connection, uid: int, op: LessonComplete
) -> tuple[OpResult, int | None]:
    """Server wins: a lesson already completed keeps the server's time (``server_kept``)."""
    try:
        done = await progress.complete_lesson(conn, uid, op.lesson_id)
    except progress.NotEnrolled:
        return rejected(op, "not a member of the lesson's cohort"), None
    if done is None:
        return rejected(op, f"lesson {op.lesson_id} does not exist"), None
    state, changed = done
    return (
        OpResult(
            key=op.key,
            type=op_type(op),
            status="applied" if changed else "server_kept",
            data=msgspec.to_builtins(state),
        ),
        state.cohort_id if changed else None,
    )


async def _draft(conn: asyncpg.Connection, uid: int, op: QuizDraft) -> OpResult:
    """Last write wins, by client timestamp (a tie keeps the server's draft)."""
    kind = op_type(op)
    answers = _json.encode(op.answers)
    if len(answers) > MAX_DRAFT_BYTES:
        return rejected(op, f"answers over {MAX_DRAFT_BYTES} bytes")
    cohort = await conn.fetchval("SELECT cohort_id FROM quizzes WHERE id = $1", op.quiz_id)
    if not await _member_of(conn, cohort, uid):
        return rejected(op, f"quiz {op.quiz_id} is not one of your cohorts'")
    stored = await conn.fetchrow(
        "SELECT answers::text AS answers, client_ts FROM quiz_drafts"
        " WHERE user_id = $1 AND quiz_id = $2 FOR UPDATE",
        uid,
        op.quiz_id,
    )
    if not lww_applies(stored["client_ts"] if stored else None, op.client_ts):
        assert stored is not None
        data = {
            "answers": msgspec.json.decode(stored["answers"]),
            "client_ts": stored["client_ts"],
        }
        return OpResult(key=op.key, type=kind, status="server_kept", data=data)
    await conn.execute(
        "INSERT INTO quiz_drafts (user_id, quiz_id, answers, client_ts)"
        " VALUES ($1, $2, $3::jsonb, $4) ON CONFLICT (user_id, quiz_id) DO UPDATE"
        " SET answers = excluded.answers, client_ts = excluded.client_ts, updated_at = now()",
        uid,
        op.quiz_id,
        answers.decode(),
        op.client_ts,
    )
    data = {"answers": op.answers, "client_ts": op.client_ts}
    return OpResult(key=op.key, type=kind, status="applied", data=data)


async def _note(conn: asyncpg.Connection, uid: int, op: NoteSave) -> OpResult:
    """An edit made on an older version than the server's goes to manual review (both texts
    kept in ``sync_conflicts``); otherwise it is saved as the next version."""
    kind = op_type(op)
    cohort = await conn.fetchval("SELECT cohort_id FROM lessons WHERE id = $1", op.lesson_id)
    if not await _member_of(conn, cohort, uid):
        return rejected(op, f"lesson {op.lesson_id} is not one of your cohorts'")
    note = await conn.fetchrow(
        "SELECT body, version FROM lesson_notes WHERE user_id = $1 AND lesson_id = $2 FOR UPDATE",
        uid,
        op.lesson_id,
    )
    server_version = note["version"] if note else 0
    if not note_applies(server_version, op.base_version):
        conflict = await conn.fetchval(
            "INSERT INTO sync_conflicts (user_id, lesson_id, base_version, server_version,"
            " server_body, client_body, client_ts) VALUES ($1, $2, $3, $4, $5, $6, $7)"
            " RETURNING id",
            uid,
            op.lesson_id,
            op.base_version,
            server_version,
            note["body"] if note else "",
            op.body,
            op.client_ts,
        )
        data = {
            "conflict_id": conflict,
            "body": note["body"] if note else "",
            "version": server_version,
        }
        return OpResult(key=op.key, type=kind, status="review", data=data)
    version = await conn.fetchval(
        "INSERT INTO lesson_notes (user_id, lesson_id, body, client_ts) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (user_id, lesson_id) DO UPDATE SET body = excluded.body,"
        " client_ts = excluded.client_ts, version = lesson_notes.version + 1, updated_at = now()"
        " RETURNING version",
        uid,
        op.lesson_id,
        op.body,
        op.client_ts,
    )
    data = {"body": op.body, "version": version}
    return OpResult(key=op.key, type=kind, status="applied", data=data)
