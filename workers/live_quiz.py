"""Live quiz mode: ``quiz.start``, ``quiz.next``, ``quiz.end`` (staff) and ``quiz.answer``
(students), the deadline timer, and the room state's quiz (rules and scoring in
:mod:`workers.live_quiz_rules`; table in migration 0012).

A live quiz runs one of the cohort's quizzes one question at a time. Each question has a
deadline set by the server when it goes out (``quiz.question`` carries it, never the answer
key). Guarantees:

* **One answer per student and question**, accepted only while that question is the current
  one and before its deadline as the server's clock has it when the answer is applied (under
  the room lock): ``already_answered``, ``quiz_deadline_passed``, ``quiz_not_running``.
* **Results go out once per question**, when the first of these happens: the deadline (the
  live flusher's ``qclose|c|s|quiz.index`` due entry, with the scheduler's sweep
  :func:`close_overdue` as the safety net), ``quiz.next``, ``quiz.end``, the session's end.
  ``live_quizzes.closed`` records it, under the room lock, so the distribution in
  ``quiz.results`` holds exactly the answers that were accepted.
* After each question's results, ``quiz.leaderboard`` (the top rows; ``final`` after the
  last), so the room sees the standings move.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg
import msgspec

from workers import events, grading
from workers import live_commands as lc
from workers import live_quiz_rules as quiz_rules
from workers import live_rules as rules
from workers.command_consumer import Command, CommandError
from workers.context import WorkerContext
from workers.live_room import Ctx, in_room
from workers.live_state import DueQueue, Event, Room, locked_room, now_ms, publish_events

#: Columns of a ``live_quizzes`` row, with the server's clock judged in the same statement
#: (``expired``: the deadline has passed; ``elapsed_ms``: since the question went out).
QZCOLS = (
    "id, session_id, quiz_id, title, questions, time_limits, reveal, state, current,"
    " question_at, deadline, closed, ended_by, deadline <= clock_timestamp() AS expired,"
    " greatest(0, (extract(epoch FROM clock_timestamp() - question_at) * 1000))::bigint"
    " AS elapsed_ms"
)

_QUESTIONS: dict[int, tuple[grading.Question, ...]] = {}
_QUESTIONS_KEPT = 64
_answer_decoder = msgspec.json.Decoder()


def questions_of(row: Mapping[str, Any]) -> tuple[grading.Question, ...]:
    """The questions of a live quiz (decoded once per process: they never change)."""
    found = _QUESTIONS.get(row["id"])
    if found is None:
        if len(_QUESTIONS) >= _QUESTIONS_KEPT:
            _QUESTIONS.pop(next(iter(_QUESTIONS)))
        found = _QUESTIONS[row["id"]] = grading.questions_from_json(row["questions"])
    return found


def _limits(row: Mapping[str, Any]) -> list[int]:
    return [int(x) for x in rules.json_list(row["time_limits"])]


def _due_member(room: Room, live_quiz_id: int, index: int) -> str:
    return room.due_member("qclose", f"{live_quiz_id}.{index}")


def parse_due_extra(extra: str) -> tuple[int, int] | None:
    """``(live_quiz_id, index)`` of a ``qclose`` due member's extra part, else None."""
    quiz, _, index = extra.partition(".")
    if not (quiz.isdigit() and index.isdigit()):
        return None
    return int(quiz), int(index)


async def _schedule_close(ctx: WorkerContext, room: Room, row: Mapping[str, Any]) -> None:
    due = int(row["deadline"].timestamp() * 1000)
    await DueQueue(ctx.redis).schedule(_due_member(room, row["id"], row["current"]), due)


def question_event(row: Mapping[str, Any]) -> dict[str, Any]:
    """``quiz.question``: the current question without its answer key, and its deadline."""
    questions = questions_of(row)
    index = row["current"]
    return {
        "live_quiz_id": row["id"],
        "quiz_id": row["quiz_id"],
        "title": row["title"],
        "index": index,
        "count": len(questions),
        "question": quiz_rules.public(questions[index]),
        "time_limit_s": _limits(row)[index],
        "started_at": rules.iso(row["question_at"]),
        "deadline": rules.iso(row["deadline"]),
    }


async def results(conn: asyncpg.Connection, row: Mapping[str, Any], index: int) -> dict[str, Any]:
    """``quiz.results`` of question ``index``: the distribution of the accepted answers, and
    the right options of a choice question when the quiz reveals them."""
    question = questions_of(row)[index]
    # Grouped here: the room lock is held while this runs, and a big room answers alike.
    answers = await conn.fetch(
        "SELECT answer::text AS answer, outcome, count(*)::int AS n FROM live_quiz_answers"
        " WHERE live_quiz_id = $1 AND question = $2 GROUP BY answer::text, outcome",
        row["id"],
        index,
    )
    triples = ((_answer_decoder.decode(a["answer"]), a["outcome"], a["n"]) for a in answers)
    out: dict[str, Any] = {
        "live_quiz_id": row["id"],
        "index": index,
        "question_id": question.id,
        **quiz_rules.counted_distribution(question, triples),
    }
    if row["reveal"]:
        out["correct"] = quiz_rules.correct_options(question)
    return out


async def totals(conn: asyncpg.Connection, live_quiz_id: int) -> dict[int, tuple[str, int]]:
    rows = await conn.fetch(
        "SELECT a.user_id, u.display_name, sum(a.score)::bigint AS total"
        " FROM live_quiz_answers a JOIN users u ON u.id = a.user_id"
        " WHERE a.live_quiz_id = $1 GROUP BY a.user_id, u.display_name",
        live_quiz_id,
    )
    return {r["user_id"]: (r["display_name"], int(r["total"])) for r in rows}


async def leaderboard(
    conn: asyncpg.Connection, row: Mapping[str, Any], *, final: bool
) -> dict[str, Any]:
    board = await totals(conn, row["id"])
    return {
        "live_quiz_id": row["id"],
        "after": row["current"],
        "final": final,
        "players": len(board),
        "top": quiz_rules.ranked(board),
    }


async def _close_current(
    conn: asyncpg.Connection, room: Room, row: Mapping[str, Any], *, final: bool
) -> tuple[asyncpg.Record | Mapping[str, Any], list[Event]]:
    """Close the current question if its results have not gone out: end its deadline now (if
    still ahead), mark it closed, and return ``quiz.results`` and ``quiz.leaderboard``. A
    closed question returns no events (unless ``final``: the last standings)."""
    if row["closed"] < row["current"]:
        row = await conn.fetchrow(
            "UPDATE live_quizzes SET closed = current, deadline = least(deadline,"
            f" clock_timestamp()) WHERE id = $1 RETURNING {QZCOLS}",  # nosec B608  # constant SQL text
            row["id"],
        )
        return row, await _closed_events(conn, room, row, final=final)
    if final:
        standings = events.QuizLeaderboard(**await leaderboard(conn, row, final=True))
        return row, [events.to(room.topic, standings)]
    return row, []


async def _closed_events(
    conn: asyncpg.Connection, room: Room, row: Mapping[str, Any], *, final: bool
) -> list[Event]:
    """``quiz.results`` and ``quiz.leaderboard`` of the question ``row`` just closed."""
    shown = events.QuizResults(**await results(conn, row, row["current"]))
    standings = events.QuizLeaderboard(**await leaderboard(conn, row, final=final))
    return [events.to(room.topic, shown), events.to(room.topic, standings)]


async def _running(s: Ctx, live_quiz_id: int) -> asyncpg.Record:
    row = await s.conn.fetchrow(
        f"SELECT {QZCOLS} FROM live_quizzes WHERE id = $1 AND session_id = $2"  # nosec B608  # constant SQL text
        " FOR UPDATE",
        live_quiz_id,
        s.room.session_id,
    )
    if row is None or row["state"] != "running":
        raise CommandError("quiz_not_running", f"quiz {live_quiz_id} is not running in this room")
    return row


# -- commands ---------------------------------------------------------------------------------


async def quiz_start(ctx: WorkerContext, cmd: Command, args: lc.QuizStart) -> Any:
    """Start quiz ``quiz_id`` of the room's cohort at its first question; one running quiz
    per room (``quiz_already_running``)."""

    async def op(s: Ctx) -> Any:
        running = await s.conn.fetchval(
            "SELECT id FROM live_quizzes WHERE session_id = $1 AND state = 'running'",
            s.room.session_id,
        )
        if running is not None:
            raise CommandError("quiz_already_running", f"quiz {running} is running; end it")
        quiz = await s.conn.fetchrow(
            "SELECT id, title, questions::text AS questions FROM quizzes"
            " WHERE id = $1 AND cohort_id = $2",
            args.quiz_id,
            s.room.cohort_id,
        )
        if quiz is None:
            raise CommandError("not_found", f"no quiz {args.quiz_id} in this cohort")
        count = len(grading.questions_from_json(quiz["questions"]))
        try:
            limits = quiz_rules.time_limits(count, args.time_limit_s, args.time_limits_s)
        except ValueError as exc:
            raise CommandError("invalid", str(exc)) from None
        row = await s.conn.fetchrow(
            "INSERT INTO live_quizzes (session_id, quiz_id, title, questions, time_limits,"
            " reveal, question_at, deadline, started_by) VALUES ($1, $2, $3, $4::jsonb,"
            " $5::text::jsonb, $6, clock_timestamp(),"
            f" clock_timestamp() + make_interval(secs => $7::float8), $8) RETURNING {QZCOLS}",  # nosec B608  # constant SQL text
            s.room.session_id,
            quiz["id"],
            quiz["title"],
            quiz["questions"],
            rules.json_dumps(limits),
            args.reveal,
            limits[0],
            s.user_id,
        )
        await _schedule_close(ctx, s.room, row)
        s.to_room(events.QuizQuestion(**question_event(row)))
        return {"live_quiz_id": row["id"], "count": count}

    return await in_room(ctx, cmd, op)


async def quiz_next(ctx: WorkerContext, cmd: Command, args: lc.QuizNext) -> Any:
    """Close the current question (results now, if its deadline had not passed) and show the
    next; ``quiz_no_more_questions`` on the last one (send ``quiz.end``)."""

    async def op(s: Ctx) -> Any:
        row = await _running(s, args.live_quiz_id)
        if row["current"] + 1 >= len(questions_of(row)):
            raise CommandError("quiz_no_more_questions", "that was the last question; end the quiz")
        row, closing = await _close_current(s.conn, s.room, row, final=False)
        s.events.extend(closing)
        row = await s.conn.fetchrow(
            "UPDATE live_quizzes SET current = current + 1, question_at = clock_timestamp(),"
            " deadline = clock_timestamp() + make_interval(secs =>"
            " (time_limits ->> (current + 1))::float8)"
            f" WHERE id = $1 RETURNING {QZCOLS}",  # nosec B608  # constant SQL text
            row["id"],
        )
        await _schedule_close(ctx, s.room, row)
        s.to_room(events.QuizQuestion(**question_event(row)))
        return {"live_quiz_id": row["id"], "index": row["current"]}

    return await in_room(ctx, cmd, op)


async def _end(
    conn: asyncpg.Connection, room: Room, row: Mapping[str, Any], by: str
) -> list[Event]:
    row, sent = await _close_current(conn, room, row, final=True)
    await conn.execute(
        "UPDATE live_quizzes SET state = 'ended', ended_at = now(), ended_by = $2 WHERE id = $1",
        row["id"],
        by,
    )
    sent.append(events.to(room.topic, events.QuizEnded(live_quiz_id=row["id"], by=by)))
    return sent


async def quiz_end(ctx: WorkerContext, cmd: Command, args: lc.QuizEnd) -> Any:
    """End the quiz: the open question's results, the final leaderboard, ``quiz.ended``."""

    async def op(s: Ctx) -> Any:
        row = await _running(s, args.live_quiz_id)
        s.events.extend(await _end(s.conn, s.room, row, "staff"))
        return {"live_quiz_id": row["id"], "state": "ended"}

    return await in_room(ctx, cmd, op)


async def quiz_answer(ctx: WorkerContext, cmd: Command, args: lc.QuizAnswer) -> Any:
    """Answer the current question, once, before its deadline. An answer that does not fit
    the question (an option that does not exist, a text for a choice question) is ``invalid``
    and not recorded, so the student may still answer."""

    async def op(s: Ctx) -> Any:
        row = await _running(s, args.live_quiz_id)
        index = args.question
        if index > row["current"]:
            raise CommandError("not_found", f"question {index} has not been asked yet")
        if index < row["current"] or row["closed"] >= index or row["expired"]:
            raise CommandError("quiz_deadline_passed", f"question {index} is closed")
        question = questions_of(row)[index]
        result = quiz_rules.graded(question, args.answer)
        if result.outcome in ("invalid", "missing"):
            raise CommandError("invalid", f"answer: {result.feedback}")
        limit_ms = _limits(row)[index] * 1000
        elapsed = min(int(row["elapsed_ms"]), limit_ms)
        points = quiz_rules.score(question.points, quiz_rules.fraction(result), elapsed, limit_ms)
        added = await s.conn.fetchval(
            "INSERT INTO live_quiz_answers (live_quiz_id, question, user_id, answer, outcome,"
            " elapsed_ms, score) VALUES ($1, $2, $3, $4::text::jsonb, $5, $6, $7)"
            " ON CONFLICT DO NOTHING RETURNING 1",
            row["id"],
            index,
            s.user_id,
            rules.json_dumps(args.answer),
            result.outcome,
            elapsed,
            points,
        )
        if added is None:
            raise CommandError("already_answered", f"you already answered question {index}")
        answered = await s.conn.fetchval(
            "SELECT count(*) FROM live_quiz_answers WHERE live_quiz_id = $1 AND question = $2",
            row["id"],
            index,
        )
        s.to_staff(
            events.QuizAnswered(
                session_id=s.room.session_id,
                live_quiz_id=row["id"],
                index=index,
                answered=int(answered),
            )
        )
        return {"live_quiz_id": row["id"], "question": index, "accepted": True}

    return await in_room(ctx, cmd, op)


# -- the deadline -----------------------------------------------------------------------------


async def close_expired(ctx: WorkerContext, room: Room, live_quiz_id: int, index: int) -> bool:
    """Publish question ``index``'s results once its deadline has passed (the live flusher's
    ``qclose`` work, and the scheduler's sweep); returns whether it did. Early calls schedule
    themselves again for the deadline; calls for a closed question do nothing."""
    assert ctx.db is not None
    async with locked_room(ctx.db, room.session_id) as conn:
        async with conn.transaction():
            # The usual case, one statement: the question is open and its deadline passed.
            row = await conn.fetchrow(_CLOSE_DUE, live_quiz_id, room.session_id, index)
            if row is None:
                await _not_due(ctx, conn, room, live_quiz_id, index)
                return False
            closing = await _closed_events(conn, room, row, final=False)
        await publish_events(ctx, closing, conn)
    return True


_CLOSE_DUE = (
    "UPDATE live_quizzes SET closed = current WHERE id = $1 AND session_id = $2"
    " AND state = 'running' AND current = $3 AND closed < $3 AND deadline <= clock_timestamp()"
    f" RETURNING {QZCOLS}"  # nosec B608  # constant SQL text
)


async def _not_due(
    ctx: WorkerContext, conn: asyncpg.Connection, room: Room, live_quiz_id: int, index: int
) -> None:
    """Question ``index`` was not closed: if it is still open with its deadline ahead (the
    worker's clock ran ahead of the database's), try again at the deadline."""
    row = await conn.fetchrow(
        f"SELECT {QZCOLS} FROM live_quizzes WHERE id = $1 AND session_id = $2",  # nosec B608  # constant SQL text
        live_quiz_id,
        room.session_id,
    )
    if row is None or row["state"] != "running" or row["current"] != index:
        return
    if row["closed"] >= index or row["expired"]:
        return
    due = max(int(row["deadline"].timestamp() * 1000), now_ms() + 5)
    await DueQueue(ctx.redis).schedule(_due_member(room, live_quiz_id, index), due, replace=True)


async def close_overdue(ctx: WorkerContext) -> int:
    """Close the questions whose deadline passed more than a second ago without results
    (their due entry was lost); returns how many."""
    assert ctx.db is not None
    rows = await ctx.db.fetch(
        "SELECT q.id, q.current, s.cohort_id, q.session_id FROM live_quizzes q"
        " JOIN live_sessions s ON s.id = q.session_id WHERE q.state = 'running'"
        " AND q.closed < q.current AND q.deadline < now() - interval '1 second' LIMIT 100"
    )
    closed = 0
    for r in rows:
        room = Room(str(r["cohort_id"]), str(r["session_id"]), r["cohort_id"], r["session_id"])
        closed += await close_expired(ctx, room, r["id"], r["current"])
    return closed


async def end_running(conn: asyncpg.Connection, room: Room, by: str) -> list[Event]:
    """End the room's running quiz, if any (the API's session end); returns the events."""
    row = await conn.fetchrow(
        f"SELECT {QZCOLS} FROM live_quizzes WHERE session_id = $1 AND state = 'running'"  # nosec B608  # constant SQL text
        " FOR UPDATE",
        room.session_id,
    )
    return [] if row is None else await _end(conn, room, row, by)


# -- the late joiner --------------------------------------------------------------------------


async def room_quiz(
    conn: asyncpg.Connection, session_id: int, user_id: int
) -> dict[str, Any] | None:
    """The session's newest quiz as the state route shows it: the current question with the
    time left on the server's clock, its results once closed, the standings, and the caller's
    answer and score."""
    row = await conn.fetchrow(
        f"SELECT {QZCOLS}, greatest(0, extract(epoch FROM deadline - clock_timestamp()) * 1000)"  # nosec B608  # constant SQL text
        "::bigint AS left_ms FROM live_quizzes WHERE session_id = $1 ORDER BY id DESC LIMIT 1",
        session_id,
    )
    if row is None:
        return None
    index = row["current"]
    open_now = row["state"] == "running" and row["closed"] < index and not row["expired"]
    mine = await conn.fetchrow(
        "SELECT answer::text AS answer FROM live_quiz_answers"
        " WHERE live_quiz_id = $1 AND question = $2 AND user_id = $3",
        row["id"],
        index,
        user_id,
    )
    board = await totals(conn, row["id"])
    mine_total = board.get(user_id)
    return {
        **question_event(row),
        "state": row["state"],
        "open": open_now,
        "time_left_ms": int(row["left_ms"]) if open_now else 0,
        "results": None if open_now else await results(conn, row, index),
        "leaderboard": {
            "players": len(board),
            "top": quiz_rules.ranked(board),
            "final": row["state"] == "ended",
        },
        "my_answer": None if mine is None else _answer_decoder.decode(mine["answer"]),
        "my_score": mine_total[1] if mine_total else 0,
        "my_rank": quiz_rules.rank_of(board, user_id),
    }
