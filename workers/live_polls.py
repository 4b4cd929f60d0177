"""Live polls: ``poll.open``, ``poll.vote``, ``poll.close``, ``poll.reveal`` and the throttled
tallies (see :mod:`workers.live` for the events and the visibility rule).

A poll is ``open`` (votes accepted and changeable), then ``closed``, then optionally
``revealed``; revealing an open poll closes it first. One open poll per session at a time.
Tallies are recomputed from ``poll_votes`` (never kept as counters), so a throttled or
repeated tally is always right.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from workers import live_commands as lc
from workers import live_rules as rules
from workers.command_consumer import Command, CommandError
from workers.context import WorkerContext
from workers.live_room import Ctx, in_room
from workers.live_state import (
    TIMINGS,
    Event,
    Room,
    TallyThrottle,
    locked_room,
    publish_events,
)
from workers.tallies import PollTally

PCOLS = "id, session_id, question, options, state, opened_at, closed_at"


async def _poll(s: Ctx, pid: int, *, lock: bool = False) -> asyncpg.Record:
    row = await s.conn.fetchrow(
        f"SELECT {PCOLS} FROM polls WHERE id = $1 AND session_id = $2"
        + (" FOR UPDATE" if lock else ""),
        pid,
        s.room.session_id,
    )
    if row is None:
        raise CommandError("not_found", f"no poll {pid} in this session")
    return row


async def compute_tally(conn: asyncpg.Connection, poll_id: int, option_count: int) -> PollTally:
    rows = await conn.fetch(
        "SELECT option, count(*) AS n FROM poll_votes WHERE poll_id = $1 GROUP BY option", poll_id
    )
    return rules.poll_tally({r["option"]: r["n"] for r in rows}, option_count)


def tally_events(room: Room, poll: asyncpg.Record, tally: PollTally, state: str) -> list[Event]:
    """The staff's ``poll.tally`` and the room's ``poll.votes`` for one tally."""
    staff = {
        "session_id": room.session_id,
        "poll_id": poll["id"],
        "state": state,
        **rules.tally_view(tally),
    }
    return [
        (room.staff_topic, "poll.tally", staff),
        (room.topic, "poll.votes", {"poll_id": poll["id"], "total": tally.total}),
    ]


async def poll_open(ctx: WorkerContext, cmd: Command, args: lc.PollOpen) -> Any:
    """Open a poll; one open poll per session at a time (``poll_already_open``)."""
    question, options = args.question, args.options

    async def op(s: Ctx) -> Any:
        open_id = await s.conn.fetchval(
            "SELECT id FROM polls WHERE session_id = $1 AND state = 'open'", s.room.session_id
        )
        if open_id is not None:
            raise CommandError("poll_already_open", f"poll {open_id} is still open; close it")
        row = await s.conn.fetchrow(
            f"INSERT INTO polls (session_id, question, options, created_by) "
            f"VALUES ($1, $2, $3::text::jsonb, $4) RETURNING {PCOLS}",
            s.room.session_id,
            question,
            rules.json_dumps(options),
            s.user_id,
        )
        s.to_room("poll.opened", {"poll": rules.poll_view(row)})
        empty = rules.poll_tally({}, len(options))
        s.to_staff("poll.tally", tally_events(s.room, row, empty, "open")[0][2])
        return {"poll_id": row["id"]}

    return await in_room(ctx, cmd, op)


async def poll_vote(ctx: WorkerContext, cmd: Command, args: lc.PollVote) -> Any:
    """Vote, or change one's vote, while the poll is open. Tallies are throttled."""
    timings = TIMINGS[0]

    async def op(s: Ctx) -> Any:
        poll = await _poll(s, args.poll_id)
        if poll["state"] != "open":
            raise CommandError("poll_closed", "this poll is closed")
        options = rules.json_list(poll["options"])
        option = args.option
        if option >= len(options):
            raise CommandError("invalid", f"option must be between 0 and {len(options) - 1}")
        changed = await s.conn.fetchval(
            "INSERT INTO poll_votes (poll_id, user_id, option) VALUES ($1, $2, $3) "
            "ON CONFLICT (poll_id, user_id) DO UPDATE SET option = EXCLUDED.option, "
            "voted_at = now() WHERE poll_votes.option <> EXCLUDED.option RETURNING 1",
            poll["id"],
            s.user_id,
            option,
        )
        if changed is not None:
            throttle = TallyThrottle(ctx.redis)
            now = await throttle.offer(s.room, poll["id"], timings.tally_interval_ms)
            if now:
                tally = await compute_tally(s.conn, poll["id"], len(options))
                s.events.extend(tally_events(s.room, poll, tally, "open"))
        return {"poll_id": poll["id"], "option": option}

    return await in_room(ctx, cmd, op)


async def flush_tally(ctx: WorkerContext, room: Room, poll_id: int) -> None:
    """The trailing tally of a burst of votes (run by the live flusher when due)."""
    assert ctx.db is not None
    timings = TIMINGS[0]
    async with locked_room(ctx.db, room.session_id) as conn:
        poll = await conn.fetchrow(
            f"SELECT {PCOLS} FROM polls WHERE id = $1 AND session_id = $2", poll_id, room.session_id
        )
        if poll is None or poll["state"] != "open":
            return  # closing published the final tally
        if not await TallyThrottle(ctx.redis).trailing(room, poll_id, timings.tally_interval_ms):
            return  # a tally published since then already covers every vote
        tally = await compute_tally(conn, poll_id, len(rules.json_list(poll["options"])))
        await publish_events(ctx, tally_events(room, poll, tally, "open"), conn)


async def _close(s: Ctx, poll: asyncpg.Record, state: str) -> asyncpg.Record:
    row = await s.conn.fetchrow(
        f"UPDATE polls SET state = $2, closed_at = coalesce(closed_at, now()) WHERE id = $1 "
        f"RETURNING {PCOLS}",
        poll["id"],
        state,
    )
    tally = await compute_tally(s.conn, poll["id"], len(rules.json_list(poll["options"])))
    if poll["state"] == "open":
        s.to_room("poll.closed", {"poll": rules.poll_view({**dict(row), "state": "closed"})})
        s.events.extend(tally_events(s.room, row, tally, "closed"))
    if state == "revealed":
        s.to_room("poll.revealed", {"poll": rules.poll_view(row), "tally": rules.tally_view(tally)})
    return row


async def poll_close(ctx: WorkerContext, cmd: Command, pid: int) -> Any:
    """Close voting (idempotent: closing a closed poll changes nothing)."""

    async def op(s: Ctx) -> Any:
        poll = await _poll(s, pid, lock=True)
        if poll["state"] == "open":
            poll = await _close(s, poll, "closed")
        return {"poll_id": poll["id"], "state": poll["state"]}

    return await in_room(ctx, cmd, op)


async def poll_reveal(ctx: WorkerContext, cmd: Command, pid: int) -> Any:
    """Show the final tally to the room (closing the poll first if it is open)."""

    async def op(s: Ctx) -> Any:
        poll = await _poll(s, pid, lock=True)
        if poll["state"] != "revealed":
            poll = await _close(s, poll, "revealed")
        return {"poll_id": poll["id"], "state": poll["state"]}

    return await in_room(ctx, cmd, op)
