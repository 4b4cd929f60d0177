"""Live-room commands: Q&A, polls, chat, reactions, broadcast, recording and screen share.

Every command names its room in the frame's ``topic`` (``live:{cohort}:{session}``); the
gateway has already checked that the sender is a member or staff of that cohort and stamped
``user``/``role``/``staff``. Then, in this order:

1. :func:`dispatch` **authorizes** (instructor-only commands refuse students with
   ``forbidden``) and **validates** the arguments into the command's Struct
   (:mod:`workers.live_commands`: types, lengths, ids; ``invalid``), then calls the handler
   matching the Struct's type;
2. the handler, under the room lock (:func:`workers.live_state.locked_room`), in one
   transaction, checks that the session exists in that cohort (``not_found``) and is live
   (``session_not_live``), and applies the change: ``not_found`` for unknown or foreign
   question/poll/message ids;
3. in that transaction, records its result under the command's id (a redelivered command
   replies with it and changes nothing: :mod:`workers.live_once`) and its events in the
   outbox; after commit, publishes them (:func:`workers.live_state.publish_recorded`) and
   replies ok with a small result.

Commands (``data`` -> reply; (S) = staff only; other error codes besides ``invalid``,
``forbidden``, ``not_found``, ``session_not_live``, ``bad_topic``):

=====================  ==============================  =======================================
``qa.ask``             {body: 1-1000 chars,            {question_id}; ``rate_limited`` (per
                       anonymous?: bool}               user and room: qa_asks_per_minute)
``qa.similar``         {body: 1-1000 chars}            {matches: [{question_id, body, votes,
                                                       score}]}: read-only, best first
``qa.upvote``          {question_id}                   {question_id, votes}; ``already_voted``
``qa.unvote``          {question_id}                   {question_id, votes}; ``not_voted``
``qa.answer`` (S)      {question_id, answer?: <=2000}  {question_id, votes}
``qa.pin``/``unpin``   {question_id} (S)               {question_id, votes}
``qa.dismiss`` (S)     {question_id}                   {question_id, votes}
``qa.clear_answered``  {} (S): dismiss every answered  {cleared: count}
``poll.open`` (S)      {question: <=500, options:      {poll_id}; ``poll_already_open``
                       2-20 labels <=200, kind?,
                       anonymous?, results?,
                       duration_s?} (poll_rules)
``poll.vote``          {poll_id, option: index} or     {poll_id, option, options};
                       {poll_id, options: [indices]}   ``poll_closed``
                       (students; changeable while open)
``poll.close`` (S)     {poll_id}                       {poll_id, state}
``poll.reveal`` (S)    {poll_id}                       {poll_id, state}
``chat.send``          {body: 1-500 chars, plain text} {message_id}; ``rate_limited``
``chat.delete``        {message_id} (author or S)      {message_id}
``react``              {emoji: one of ALLOWED}         {emoji}; ``rate_limited``
``broadcast`` (S)      {text: 1-1000 chars}            {}
``broadcast.clear``    {} (S)                          {cleared: bool}
``recording.set`` (S)  {state: started|stopped,        {state}
                       url?: https <= 2048, stopped}
``screenshare.signal`` {kind: [a-z][a-z0-9_.-]{0,31},  {}
(S)                    payload: JSON <= 16 KiB}
``quiz.start`` (S)     {quiz_id, time_limit_s?: 1-600,  {live_quiz_id, count};
                       time_limits_s?: [per question],  ``quiz_already_running``
                       reveal?: bool}
``quiz.next`` (S)      {live_quiz_id}                  {live_quiz_id, index};
                                                       ``quiz_no_more_questions``
``quiz.end`` (S)       {live_quiz_id}                  {live_quiz_id, state}
``quiz.answer``        {live_quiz_id, question: index, {live_quiz_id, question, accepted};
(students)             answer}                         ``already_answered``,
                                                       ``quiz_deadline_passed``
                                                       (``quiz_not_running`` for all four)
=====================  ==============================  =======================================

Events (``live:{cohort}:{session}`` unless noted; payload views in :mod:`workers.live_rules`):

* ``qa.updated`` {question}; ``qa.ranked`` {order: [question ids]}, only when the board's order
  or membership changed (:mod:`workers.ranking`); ``qa.cleared`` {question_ids, by, at} when
  staff bulk-dismiss the answered questions (followed by ``qa.ranked``).
* ``poll.opened`` {poll}; ``poll.closed`` {poll, tally?}; ``poll.revealed`` {poll, tally};
  ``poll.votes`` {poll_id, total, tally?} (throttled). Staff get ``poll.tally``
  {session_id, poll_id, state, counts, total, percentages, voters?} on ``staff:{cohort}``,
  throttled to one per ``tally_interval_ms`` per poll (leading and trailing edge, so the last
  state of a burst always goes out), plus a final one on close. Students see the counts only
  as the poll's ``results`` setting allows (:mod:`workers.poll_rules`; by default when the
  instructor reveals, so early votes do not steer later ones).
* ``chat.message`` {message}; ``chat.deleted`` {message_id, deleted_by}.
* ``reactions`` {counts: {emoji: n}, window_ms}: one event per room per window, summed across
  every worker process in Redis (see :mod:`workers.live_state`).
* ``broadcast`` {text, by, at}; ``broadcast.cleared`` {by, at} (only when a banner was
  shown); ``recording.status`` {state, url, by, at} (url: null
  unless a stopped recording named where to watch it);
  ``screenshare.signal`` {kind, payload, from}.
* ``quiz.question``, ``quiz.results``, ``quiz.leaderboard``, ``quiz.ended`` (and
  ``quiz.answered`` {answered} on ``staff:{cohort}``): :mod:`workers.live_quiz`.
* From elsewhere: ``presence.count`` {session_id, count} (and ``presence`` {session_id, users,
  count} on ``staff:{cohort}``) from :mod:`workers.attendance`; ``session.state`` {session} from
  the API on start and end.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

from workers import events
from workers import live_commands as lc
from workers import live_rules as rules
from workers.command_consumer import HANDLERS, Command, CommandError
from workers.context import WorkerContext
from workers.live_polls import poll_close, poll_open, poll_reveal, poll_vote
from workers.live_quiz import quiz_answer, quiz_end, quiz_next, quiz_start
from workers.live_room import Ctx, in_room, room_of
from workers.live_state import (
    TIMINGS,
    Room,
    add_reaction,
    clear_meta,
    now_ms,
    publish_events,
    set_meta,
    take_reactions,
    within_rate,
)
from workers.ranking import Board
from workers.similarity import Candidate, similar

#: Display names come along (scalar subqueries work in RETURNING too), so every
#: ``qa.updated`` carries them; the view hides the asker of an anonymous question.
QCOLS = (
    "id, session_id, user_id, body, created_at, answer, answered_by, answered_at, pinned, "
    "dismissed, votes, anonymous, "
    "(SELECT display_name FROM users WHERE users.id = questions.user_id) AS name, "
    "(SELECT display_name FROM users WHERE users.id = questions.answered_by) AS answered_by_name"
)

# -- Q&A --------------------------------------------------------------------------------------


async def _question(s: Ctx, qid: int) -> asyncpg.Record:
    row = await s.conn.fetchrow(
        f"SELECT {QCOLS} FROM questions WHERE id = $1 AND session_id = $2 AND NOT dismissed "
        "FOR UPDATE",  # nosec B608  # constant SQL text
        qid,
        s.room.session_id,
    )
    if row is None:
        raise CommandError("not_found", f"no question {qid} in this session")
    return row


def _announce(s: Ctx, board: Board, row: asyncpg.Record) -> None:
    """``qa.updated`` for a question row just written, and ``qa.ranked`` when that moved it on
    the board (or onto or off it). The board was taken before the write."""
    s.board_changes += 1  # the write bumped the session's board_version (migration 0009)
    s.to_room(events.QaUpdated(question=rules.question_view(row)))
    if board.apply(rules.qa_item(row)):
        s.to_room(events.QaRanked(order=board.order()))


async def _update_question(s: Ctx, qid: int, sql: str, *args: Any) -> dict[str, Any]:
    """Apply ``sql`` (``UPDATE questions ... WHERE id = $1 RETURNING *``) to question ``qid``
    and announce it."""
    row = await _question(s, qid)
    board = await s.qa_board()
    new = await s.conn.fetchrow(sql.format(cols=QCOLS), row["id"], *args)
    _announce(s, board, new)
    return {"question_id": new["id"], "votes": new["votes"]}


async def qa_ask(ctx: WorkerContext, cmd: Command, args: lc.QaAsk) -> Any:
    """Ask; ``anonymous: true`` hides the asker from everyone in the room."""

    room = room_of(cmd)
    per_minute = ctx.settings.qa_asks_per_minute

    async def op(s: Ctx) -> Any:
        # Counted here, after the redelivery check: a redelivered ask is not counted twice.
        if not await within_rate(ctx.redis, "qa", f"{room.session}:{cmd.user}", per_minute, 60):
            raise CommandError("rate_limited", "too many questions; wait a minute")
        board = await s.qa_board()
        row = await s.conn.fetchrow(
            f"INSERT INTO questions (session_id, user_id, body, anonymous) "
            f"VALUES ($1, $2, $3, $4) RETURNING {QCOLS}",  # nosec B608  # constant SQL text
            s.room.session_id,
            s.user_id,
            args.body,
            args.anonymous,
        )
        _announce(s, board, row)
        return {"question_id": row["id"]}

    return await in_room(ctx, cmd, op)


async def qa_similar(ctx: WorkerContext, cmd: Command, args: lc.QaSimilar) -> Any:
    """Questions on the board (not dismissed) that look like ``body``: the "already asked?"
    hint shown while typing. Read-only: no lock, no event."""

    async def op(s: Ctx) -> Any:
        rows = await s.conn.fetch(
            "SELECT id, body, votes FROM questions WHERE session_id = $1 AND NOT dismissed "
            "ORDER BY id DESC LIMIT $2",
            s.room.session_id,
            rules.SIMILAR_SCAN,
        )
        candidates = (Candidate(id=r["id"], body=r["body"], votes=r["votes"]) for r in rows)
        return {
            "matches": [
                {"question_id": m.id, "body": m.body, "votes": m.votes, "score": m.score}
                for m in similar(args.body, candidates)
            ]
        }

    return await in_room(ctx, cmd, op, lock=False, once=False)


async def qa_upvote(ctx: WorkerContext, cmd: Command, args: lc.QaUpvote) -> Any:
    """One vote per user and question; a second one answers ``already_voted``."""

    async def op(s: Ctx) -> Any:
        row = await _question(s, args.question_id)
        added = await s.conn.fetchval(
            "INSERT INTO question_votes (question_id, user_id) VALUES ($1, $2) "
            "ON CONFLICT DO NOTHING RETURNING 1",
            row["id"],
            s.user_id,
        )
        if added is None:
            raise CommandError("already_voted", "you already upvoted this question")
        return await _update_question(
            s, row["id"], "UPDATE questions SET votes = votes + 1 WHERE id = $1 RETURNING {cols}"
        )

    return await in_room(ctx, cmd, op)


async def qa_unvote(ctx: WorkerContext, cmd: Command, args: lc.QaUnvote) -> Any:
    async def op(s: Ctx) -> Any:
        row = await _question(s, args.question_id)
        removed = await s.conn.fetchval(
            "DELETE FROM question_votes WHERE question_id = $1 AND user_id = $2 RETURNING 1",
            row["id"],
            s.user_id,
        )
        if removed is None:
            raise CommandError("not_voted", "you have not upvoted this question")
        return await _update_question(
            s,
            row["id"],
            "UPDATE questions SET votes = greatest(votes - 1, 0) WHERE id = $1 RETURNING {cols}",
        )

    return await in_room(ctx, cmd, op)


async def qa_answer(ctx: WorkerContext, cmd: Command, args: lc.QaAnswer) -> Any:
    """Mark a question answered; ``answer`` is optional (answered out loud)."""

    async def op(s: Ctx) -> Any:
        return await _update_question(
            s,
            args.question_id,
            "UPDATE questions SET answer = $2, answered_by = $3, "
            "answered_at = coalesce(answered_at, now()) WHERE id = $1 RETURNING {cols}",
            args.answer,
            s.user_id,
        )

    return await in_room(ctx, cmd, op)


_FLAG_SQL = "UPDATE questions SET {flag} = {value} WHERE id = $1 RETURNING {{cols}}"


async def qa_flag(ctx: WorkerContext, cmd: Command, qid: int, flag: str, value: bool) -> Any:
    """Pin, unpin or dismiss question ``qid``."""
    sql = _FLAG_SQL.format(flag=flag, value="true" if value else "false")

    async def op(s: Ctx) -> Any:
        return await _update_question(s, qid, sql)

    return await in_room(ctx, cmd, op)


async def qa_clear_answered(ctx: WorkerContext, cmd: Command) -> Any:
    """Dismiss every answered (and not yet dismissed) question of the room in one statement,
    pinned ones included; one ``qa.cleared`` event lists them, then ``qa.ranked`` if the board
    changed. Clearing an already-clear board answers ``{cleared: 0}`` and publishes nothing."""

    async def op(s: Ctx) -> Any:
        board = await s.qa_board()
        rows = await s.conn.fetch(
            "UPDATE questions SET dismissed = true WHERE session_id = $1 AND NOT dismissed "
            "AND answered_at IS NOT NULL RETURNING id",
            s.room.session_id,
        )
        ids = sorted(row["id"] for row in rows)
        s.board_changes += len(ids)
        if ids:
            s.to_room(events.QaCleared(question_ids=ids, by=cmd.user, at=rules.now_iso()))
            board.remove(ids)
            s.to_room(events.QaRanked(order=board.order()))
        return {"cleared": len(ids)}

    return await in_room(ctx, cmd, op)


# -- chat -------------------------------------------------------------------------------------


async def chat_send(ctx: WorkerContext, cmd: Command, args: lc.ChatSend) -> Any:
    room = room_of(cmd)
    ident = f"{room.session}:{cmd.user}"

    async def op(s: Ctx) -> Any:
        if not await within_rate(ctx.redis, "chat", ident, rules.CHAT_RATE, rules.CHAT_WINDOW_S):
            raise CommandError("rate_limited", "too many messages; slow down")
        row = await s.conn.fetchrow(
            "INSERT INTO chat_messages (session_id, user_id, body) VALUES ($1, $2, $3) "
            "RETURNING id, session_id, user_id, body, created_at, "
            "(SELECT display_name FROM users WHERE users.id = $2) AS name",
            s.room.session_id,
            s.user_id,
            args.body,
        )
        s.to_room(events.ChatMessage(message=rules.message_view(row)))
        return {"message_id": row["id"]}

    return await in_room(ctx, cmd, op)


async def chat_delete(ctx: WorkerContext, cmd: Command, args: lc.ChatDelete) -> Any:
    """Delete a message: its author, or staff (moderation). Soft delete."""
    mid = args.message_id

    async def op(s: Ctx) -> Any:
        author = await s.conn.fetchval(
            "SELECT user_id FROM chat_messages WHERE id = $1 AND session_id = $2 "
            "AND deleted_at IS NULL FOR UPDATE",
            mid,
            s.room.session_id,
        )
        if author is None:
            raise CommandError("not_found", f"no message {mid} in this session")
        if author != s.user_id and not cmd.staff:
            raise CommandError("forbidden", "only its author or an instructor may delete it")
        await s.conn.execute(
            "UPDATE chat_messages SET deleted_at = now(), deleted_by = $2 WHERE id = $1",
            mid,
            s.user_id,
        )
        s.to_room(events.ChatDeleted(message_id=mid, deleted_by=cmd.user))
        return {"message_id": mid}

    return await in_room(ctx, cmd, op)


# -- reactions --------------------------------------------------------------------------------


async def react(ctx: WorkerContext, cmd: Command, args: lc.React) -> Any:
    """Count a reaction in the room's current window (no lock: counting commutes)."""
    reaction = args.emoji
    room = room_of(cmd)
    timings = TIMINGS[0]

    async def op(s: Ctx) -> Any:
        # The count lives in Redis, outside the transaction: take the command id first, so a
        # concurrent redelivery waits and then finds it.
        await s.claim()
        if not await within_rate(
            ctx.redis, "react", f"{room.session}:{cmd.user}", rules.REACT_RATE, 1
        ):
            raise CommandError("rate_limited", "too many reactions; slow down")
        await add_reaction(ctx.redis, s.room, reaction, timings.reaction_window_ms, now_ms())
        return {"emoji": reaction}

    return await in_room(ctx, cmd, op, lock=False)


async def flush_reactions(ctx: WorkerContext, room: Room) -> None:
    counts = await take_reactions(ctx.redis, room)
    if counts:
        window = TIMINGS[0].reaction_window_ms
        await publish_events(
            ctx, [events.to(room.topic, events.Reactions(counts=counts, window_ms=window))]
        )


# -- instructor controls ----------------------------------------------------------------------


async def broadcast(ctx: WorkerContext, cmd: Command, args: lc.Broadcast) -> Any:
    """Show a banner to the room; it stays in the room's state for late joiners."""

    async def op(s: Ctx) -> Any:
        banner = events.Broadcast(text=args.text, by=cmd.user, at=rules.now_iso())
        await set_meta(ctx.redis, s.room, "banner", msgspec.structs.asdict(banner))
        s.to_room(banner)
        return {}

    return await in_room(ctx, cmd, op)


async def broadcast_clear(ctx: WorkerContext, cmd: Command) -> Any:
    """Take the banner down for everyone, late joiners included (the state route drops it)."""

    async def op(s: Ctx) -> Any:
        cleared = await clear_meta(ctx.redis, s.room, "banner")
        if cleared:
            s.to_room(events.BroadcastCleared(by=cmd.user, at=rules.now_iso()))
        return {"cleared": cleared}

    return await in_room(ctx, cmd, op)


async def recording_set(ctx: WorkerContext, cmd: Command, args: lc.RecordingSet) -> Any:
    state, url = args.state, args.url

    async def op(s: Ctx) -> Any:
        status = events.RecordingStatus(state=state, url=url, by=cmd.user, at=rules.now_iso())
        await set_meta(ctx.redis, s.room, "recording", msgspec.structs.asdict(status))
        s.to_room(status)
        return {"state": state}

    return await in_room(ctx, cmd, op)


async def screenshare_signal(ctx: WorkerContext, cmd: Command, args: lc.ScreenshareSignal) -> Any:
    """Relay a screen-share signalling message (offer, candidate...) to the room, in order."""
    kind, payload = args.kind, args.payload

    async def op(s: Ctx) -> Any:
        s.to_room(events.ScreenshareSignal(kind=kind, payload=payload, sender=cmd.user))
        return {}

    return await in_room(ctx, cmd, op)


# -- dispatch ---------------------------------------------------------------------------------


async def dispatch(ctx: WorkerContext, cmd: Command) -> Any:
    """Run a live-room command: its typed arguments (:func:`live_commands.decode`, which also
    checks the sender's audience), then its handler, chosen by the arguments' type."""
    match lc.decode(cmd):
        case lc.QaAsk() as args:
            return await qa_ask(ctx, cmd, args)
        case lc.QaSimilar() as args:
            return await qa_similar(ctx, cmd, args)
        case lc.QaUpvote() as args:
            return await qa_upvote(ctx, cmd, args)
        case lc.QaUnvote() as args:
            return await qa_unvote(ctx, cmd, args)
        case lc.QaAnswer() as args:
            return await qa_answer(ctx, cmd, args)
        case lc.QaPin(question_id=qid):
            return await qa_flag(ctx, cmd, qid, "pinned", True)
        case lc.QaUnpin(question_id=qid):
            return await qa_flag(ctx, cmd, qid, "pinned", False)
        case lc.QaDismiss(question_id=qid):
            return await qa_flag(ctx, cmd, qid, "dismissed", True)
        case lc.QaClearAnswered():
            return await qa_clear_answered(ctx, cmd)
        case lc.PollOpen() as args:
            return await poll_open(ctx, cmd, args)
        case lc.PollVote() as args:
            return await poll_vote(ctx, cmd, args)
        case lc.PollClose(poll_id=pid):
            return await poll_close(ctx, cmd, pid)
        case lc.PollReveal(poll_id=pid):
            return await poll_reveal(ctx, cmd, pid)
        case lc.ChatSend() as args:
            return await chat_send(ctx, cmd, args)
        case lc.ChatDelete() as args:
            return await chat_delete(ctx, cmd, args)
        case lc.React() as args:
            return await react(ctx, cmd, args)
        case lc.Broadcast() as args:
            return await broadcast(ctx, cmd, args)
        case lc.BroadcastClear():
            return await broadcast_clear(ctx, cmd)
        case lc.RecordingSet() as args:
            return await recording_set(ctx, cmd, args)
        case lc.ScreenshareSignal() as args:
            return await screenshare_signal(ctx, cmd, args)
        case lc.QuizStart() as args:
            return await quiz_start(ctx, cmd, args)
        case lc.QuizNext() as args:
            return await quiz_next(ctx, cmd, args)
        case lc.QuizEnd() as args:
            return await quiz_end(ctx, cmd, args)
        case lc.QuizAnswer() as args:
            return await quiz_answer(ctx, cmd, args)
    raise CommandError("internal", f"{cmd.name} has no handler")  # a Struct without a case


for _name in lc.BY_NAME:
    HANDLERS[_name] = dispatch
