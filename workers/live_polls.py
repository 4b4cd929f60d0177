"""Live polls: ``poll.open``, ``poll.vote``, ``poll.close``, ``poll.reveal``, the throttled
tallies, the timer and the room's poll history (settings and visibility rules in
:mod:`workers.poll_rules`; events in :mod:`workers.live`).

A poll is ``open`` (votes accepted and changeable), then ``closed``, then optionally
``revealed``; revealing an open poll closes it first. One open poll per session at a time.
Tallies are recomputed from ``poll_votes`` (never kept as counters), so a throttled or
repeated tally is always right.

The timer: a poll opened with ``duration_s`` gets ``closes_at``; a due entry
(``pclose|c|s|poll`` in :data:`workers.live_state.DUE_KEY`) makes the live flusher close it
then (:func:`close_expired`), and the scheduler's sweep (:func:`close_overdue`) closes any
whose entry was lost. Votes are refused from ``closes_at`` on, whether or not the close ran.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import asyncpg

from workers import events, poll_rules
from workers import live_commands as lc
from workers import live_rules as rules
from workers.command_consumer import Command, CommandError
from workers.context import WorkerContext
from workers.live_room import Ctx, in_room
from workers.live_state import (
    TIMINGS,
    DueQueue,
    Event,
    Room,
    TallyThrottle,
    locked_room,
    publish_events,
)
from workers.tallies import PollTally

PCOLS = (
    "id, session_id, question, options, state, kind, anonymous, results, opened_at, closes_at,"
    " closed_at, closed_by"
)


async def _poll(s: Ctx, pid: int, *, lock: bool = False) -> asyncpg.Record:
    row = await s.conn.fetchrow(
        f"SELECT {PCOLS}, closes_at <= clock_timestamp() AS expired FROM polls"  # nosec B608  # constant SQL text
        " WHERE id = $1 AND session_id = $2" + (" FOR UPDATE" if lock else ""),
        pid,
        s.room.session_id,
    )
    if row is None:
        raise CommandError("not_found", f"no poll {pid} in this session")
    return row


async def compute_tally(conn: asyncpg.Connection, poll: Mapping[str, Any]) -> PollTally:
    rows = await conn.fetch(
        "SELECT option, count(*) AS n, (SELECT count(DISTINCT user_id) FROM poll_votes"
        " WHERE poll_id = $1) AS voters FROM poll_votes WHERE poll_id = $1 GROUP BY option",
        poll["id"],
    )
    return poll_rules.tally(
        {r["option"]: r["n"] for r in rows},
        int(rows[0]["voters"]) if rows else 0,
        len(rules.json_list(poll["options"])),
        poll["kind"],
    )


async def voter_names(conn: asyncpg.Connection, poll: Mapping[str, Any]) -> list[list[str]]:
    """Per option, the display names of its voters (named polls; staff only)."""
    names: list[list[str]] = [[] for _ in rules.json_list(poll["options"])]
    rows = await conn.fetch(
        "SELECT v.option, u.display_name FROM poll_votes v JOIN users u ON u.id = v.user_id"
        " WHERE v.poll_id = $1 ORDER BY v.option, u.display_name, u.id",
        poll["id"],
    )
    for r in rows:
        if 0 <= r["option"] < len(names):
            names[r["option"]].append(r["display_name"])
    return names


async def tally_events(
    conn: asyncpg.Connection, room: Room, poll: Mapping[str, Any], tally: PollTally, state: str
) -> list[Event]:
    """The staff's ``poll.tally`` (with the voters of a named poll) and the room's
    ``poll.votes`` (with the counts when the poll's results are visible to students)."""
    staff = events.PollTally(
        session_id=room.session_id,
        poll_id=poll["id"],
        state=state,
        counts=list(tally.counts),
        total=tally.total,
        percentages=list(tally.percentages),
    )
    if not poll["anonymous"]:
        staff.voters = await voter_names(conn, poll)
    votes = events.PollVotes(poll_id=poll["id"], total=tally.total)
    if poll_rules.students_see(poll["results"], state):
        votes.tally = rules.tally_view(tally)
    return [events.to(room.staff_topic, staff), events.to(room.topic, votes)]


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
            "INSERT INTO polls (session_id, question, options, created_by, kind, anonymous,"
            " results, closes_at) VALUES ($1, $2, $3::text::jsonb, $4, $5, $6, $7,"  # nosec B608  # constant SQL text
            " now() + make_interval(secs => $8::float8)) RETURNING " + PCOLS,
            s.room.session_id,
            question,
            rules.json_dumps(options),
            s.user_id,
            args.kind,
            args.anonymous,
            args.results,
            args.duration_s,
        )
        if row["closes_at"] is not None:
            due = int(row["closes_at"].timestamp() * 1000)
            await DueQueue(ctx.redis).schedule(s.room.due_member("pclose", str(row["id"])), due)
        s.to_room(events.PollOpened(poll=rules.poll_view(row)))
        empty = poll_rules.tally({}, 0, len(options), args.kind)
        s.events.extend((await tally_events(s.conn, s.room, row, empty, "open"))[:1])
        return {"poll_id": row["id"]}

    return await in_room(ctx, cmd, op)


async def poll_vote(ctx: WorkerContext, cmd: Command, args: lc.PollVote) -> Any:
    """Vote, or change one's vote, while the poll is open and before its timer ends.
    ``option`` (an index), or ``options`` (a list) in a multiple-choice poll. Tallies are
    throttled."""
    timings = TIMINGS[0]

    async def op(s: Ctx) -> Any:
        poll = await _poll(s, args.poll_id)
        if poll["state"] != "open" or poll["expired"]:
            raise CommandError("poll_closed", "this poll is closed")
        options = rules.json_list(poll["options"])
        picked = poll_rules.choices(args.option, args.options, len(options), poll["kind"])
        # One round trip: drop the voter's options that are no longer picked, add the new
        # ones; the two touch disjoint rows, and the room lock serializes the voter's votes.
        changed = await s.conn.fetchval(
            "WITH gone AS (DELETE FROM poll_votes WHERE poll_id = $1 AND user_id = $2"
            " AND NOT (option = ANY($3::int[])) RETURNING 1),"
            " added AS (INSERT INTO poll_votes (poll_id, user_id, option)"
            " SELECT $1, $2, o FROM unnest($3::int[]) AS o ON CONFLICT DO NOTHING RETURNING 1)"
            " SELECT (SELECT count(*) FROM gone) + (SELECT count(*) FROM added)",
            poll["id"],
            s.user_id,
            list(picked),
        )
        if changed:
            throttle = TallyThrottle(ctx.redis)
            now = await throttle.offer(s.room, poll["id"], timings.tally_interval_ms)
            if now:
                tally = await compute_tally(s.conn, poll)
                s.events.extend(await tally_events(s.conn, s.room, poll, tally, "open"))
        return {"poll_id": poll["id"], "option": picked[0], "options": list(picked)}

    return await in_room(ctx, cmd, op)


async def flush_tally(ctx: WorkerContext, room: Room, poll_id: int) -> None:
    """The trailing tally of a burst of votes (run by the live flusher when due)."""
    assert ctx.db is not None
    timings = TIMINGS[0]
    async with locked_room(ctx.db, room.session_id) as conn:
        poll = await conn.fetchrow(
            f"SELECT {PCOLS} FROM polls WHERE id = $1 AND session_id = $2",  # nosec B608  # constant SQL text
            poll_id,
            room.session_id,
        )
        if poll is None or poll["state"] != "open":
            return  # closing published the final tally
        if not await TallyThrottle(ctx.redis).trailing(room, poll_id, timings.tally_interval_ms):
            return  # a tally published since then already covers every vote
        tally = await compute_tally(conn, poll)
        await publish_events(ctx, await tally_events(conn, room, poll, tally, "open"), conn)


async def close(
    conn: asyncpg.Connection, room: Room, poll: Mapping[str, Any], state: str, by: str
) -> tuple[asyncpg.Record, list[Event]]:
    """Close (or reveal) ``poll``; returns the new row and the events to publish. A timer
    closes at ``closes_at``, anyone else now."""
    row = await conn.fetchrow(
        "UPDATE polls SET state = $2, closed_at = coalesce(closed_at,"
        " CASE WHEN $3 = 'timer' THEN least(closes_at, now()) ELSE now() END),"  # nosec B608  # constant SQL text
        " closed_by = coalesce(closed_by, $3) WHERE id = $1 RETURNING " + PCOLS,
        poll["id"],
        state,
        by,
    )
    tally = await compute_tally(conn, row)
    sent: list[Event] = []
    if poll["state"] == "open":
        closed = events.PollClosed(poll=rules.poll_view({**dict(row), "state": "closed"}))
        if poll_rules.students_see(row["results"], "closed"):
            closed.tally = rules.tally_view(tally)
        sent.append(events.to(room.topic, closed))
        sent.extend(await tally_events(conn, room, row, tally, "closed"))
    if state == "revealed":
        view = events.PollRevealed(poll=rules.poll_view(row), tally=rules.tally_view(tally))
        sent.append(events.to(room.topic, view))
    return row, sent


async def close_open(conn: asyncpg.Connection, room: Room, by: str) -> list[Event]:
    """Close the session's open poll, if any (the API's session end); returns the events."""
    poll = await conn.fetchrow(
        f"SELECT {PCOLS} FROM polls WHERE session_id = $1 AND state = 'open'"  # nosec B608  # constant SQL text
        " FOR UPDATE",
        room.session_id,
    )
    if poll is None:
        return []
    return (await close(conn, room, poll, "closed", by))[1]


async def poll_close(ctx: WorkerContext, cmd: Command, pid: int) -> Any:
    """Close voting (idempotent: closing a closed poll changes nothing)."""

    async def op(s: Ctx) -> Any:
        poll = await _poll(s, pid, lock=True)
        if poll["state"] == "open":
            poll, closing = await close(s.conn, s.room, poll, "closed", "staff")
            s.events.extend(closing)
        return {"poll_id": poll["id"], "state": poll["state"]}

    return await in_room(ctx, cmd, op)


async def poll_reveal(ctx: WorkerContext, cmd: Command, pid: int) -> Any:
    """Show the final tally to the room (closing the poll first if it is open); refused
    (``results_private``) for a poll whose results students never see."""

    async def op(s: Ctx) -> Any:
        poll = await _poll(s, pid, lock=True)
        if not poll_rules.may_reveal(poll["results"]):
            raise CommandError("results_private", "this poll's results are for staff only")
        if poll["state"] != "revealed":
            poll, closing = await close(s.conn, s.room, poll, "revealed", "staff")
            s.events.extend(closing)
        return {"poll_id": poll["id"], "state": poll["state"]}

    return await in_room(ctx, cmd, op)


async def close_expired(ctx: WorkerContext, room: Room, poll_id: int) -> bool:
    """Close the poll if its timer has run out (the live flusher's ``pclose`` work, and the
    scheduler's sweep); returns whether it closed it. Early or repeated calls do nothing."""
    assert ctx.db is not None
    async with locked_room(ctx.db, room.session_id) as conn:
        async with conn.transaction():
            poll = await conn.fetchrow(
                f"SELECT {PCOLS}, closes_at <= clock_timestamp() AS expired FROM polls"
                " WHERE id = $1 AND session_id = $2 FOR UPDATE",  # nosec B608  # constant SQL text
                poll_id,
                room.session_id,
            )
            if poll is None or poll["state"] != "open" or not poll["expired"]:
                return False
            _, closing = await close(conn, room, poll, "closed", "timer")
        await publish_events(ctx, closing, conn)
    return True


async def close_overdue(ctx: WorkerContext) -> int:
    """Close open polls whose timer ran out more than a second ago (their due entry was
    lost); returns how many were closed."""
    assert ctx.db is not None
    rows = await ctx.db.fetch(
        "SELECT p.id, s.cohort_id, p.session_id FROM polls p"
        " JOIN live_sessions s ON s.id = p.session_id"
        " WHERE p.state = 'open' AND p.closes_at < now() - interval '1 second' LIMIT 100"
    )
    closed = 0
    for r in rows:
        room = Room(str(r["cohort_id"]), str(r["session_id"]), r["cohort_id"], r["session_id"])
        closed += await close_expired(ctx, room, r["id"])
    return closed


async def history(
    conn: asyncpg.Connection, session_id: int, user_id: int, staff: bool
) -> list[dict[str, Any]]:
    """The session's polls, newest first (at most :data:`workers.poll_rules.HISTORY`), each
    with the caller's choices and, when the caller may see it, its tally (and, for staff of
    a named poll, its voters)."""
    polls = await conn.fetch(
        f"SELECT {PCOLS} FROM polls WHERE session_id = $1"  # nosec B608  # constant SQL text
        " ORDER BY opened_at DESC, id DESC LIMIT $2",
        session_id,
        poll_rules.HISTORY,
    )
    ids = [p["id"] for p in polls]
    counts = await conn.fetch(
        "SELECT poll_id, option, count(*) AS n FROM poll_votes WHERE poll_id = ANY($1::bigint[])"
        " GROUP BY poll_id, option",
        ids,
    )
    voters = await conn.fetch(
        "SELECT poll_id, count(DISTINCT user_id) AS n FROM poll_votes"
        " WHERE poll_id = ANY($1::bigint[]) GROUP BY poll_id",
        ids,
    )
    mine = await conn.fetch(
        "SELECT poll_id, option FROM poll_votes WHERE poll_id = ANY($1::bigint[])"
        " AND user_id = $2 ORDER BY option",
        ids,
        user_id,
    )
    by_poll: dict[int, dict[int, int]] = {}
    for r in counts:
        by_poll.setdefault(r["poll_id"], {})[r["option"]] = r["n"]
    voter_count = {r["poll_id"]: r["n"] for r in voters}
    choices: dict[int, list[int]] = {}
    for r in mine:
        choices.setdefault(r["poll_id"], []).append(r["option"])
    out = []
    for p in polls:
        view = rules.poll_view(p)
        tally = poll_rules.tally(
            by_poll.get(p["id"], {}), voter_count.get(p["id"], 0), len(view["options"]), p["kind"]
        )
        view["total"] = tally.total
        if staff or poll_rules.students_see(p["results"], p["state"]):
            view["tally"] = rules.tally_view(tally)
        if staff and not p["anonymous"]:
            view["voters"] = await voter_names(conn, p)
        mine_here = choices.get(p["id"], [])
        view["my_choices"] = mine_here
        view["my_vote"] = mine_here[0] if mine_here else None
        out.append(view)
    return out
