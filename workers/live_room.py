"""The plumbing every live-room command shares: find the room, authorize, validate, lock,
check the session (and whether this command already ran), run the change in a transaction
that also records its result and its events, publish after commit.

See :mod:`workers.live` for the commands, :mod:`workers.live_once` for exactly-once
commands, and :mod:`workers.live_state` for the outbox path and why the lock is held across
commit and publish.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

import asyncpg
import msgspec

from config.topics import parse_live
from workers import events, live_once, qa_board
from workers import live_rules as rules
from workers.command_consumer import Command, CommandError
from workers.context import WorkerContext
from workers.live_rules import Invalid
from workers.live_state import Event, Room, locked_room, publish_recorded, record_events
from workers.ranking import Board


class Ctx:
    """What a room operation sees: the connection (in its transaction), the room, the sender,
    and the events to publish after commit."""

    __slots__ = (
        "board",
        "board_changes",
        "board_version",
        "claimed",
        "cmd",
        "conn",
        "events",
        "room",
        "user_id",
        "worker",
    )

    def __init__(
        self, worker: WorkerContext, conn: asyncpg.Connection, room: Room, cmd: Command
    ) -> None:
        self.worker = worker
        self.conn = conn
        self.room = room
        self.cmd = cmd
        self.user_id = user_id_of(cmd)
        self.events: list[Event] = []
        #: The Q&A board while a command works on it (workers/qa_board.py): the session's
        #: ``board_version`` when the command began, and the ``questions`` rows it changed.
        self.board: Board | None = None
        self.board_version = 0
        self.board_changes = 0
        self.claimed = False

    async def claim(self) -> None:
        """Take the command's id before an effect outside PostgreSQL (Redis), so a concurrent
        delivery of the same command cannot apply it too (:func:`live_once.claim`)."""
        if self.cmd.id and not self.claimed:
            await live_once.claim(self.conn, self.cmd.id)
            self.claimed = True

    async def qa_board(self) -> Board:
        """The room's Q&A board as of the start of this command (cached between commands)."""
        if self.board is None:
            self.board = await qa_board.take(self.conn, self.room.session_id, self.board_version)
        return self.board

    def to_room(self, event: msgspec.Struct) -> None:
        """Publish ``event`` (a Struct of :mod:`workers.events`) to the room after commit."""
        self.events.append(events.to(self.room.topic, event))

    def to_staff(self, event: msgspec.Struct) -> None:
        """Publish ``event`` to the cohort's staff topic after commit."""
        self.events.append(events.to(self.room.staff_topic, event))


Operation = Callable[[Ctx], Awaitable[Any]]


def user_id_of(cmd: Command) -> int:
    uid = rules.db_id(cmd.user)
    if uid is None:
        raise CommandError("forbidden", "live rooms need a registered user")
    return uid


def room_of(cmd: Command) -> Room:
    if parse_live(cmd.topic) is None:
        raise CommandError("bad_topic", "live-room commands need a live:{cohort}:{session} topic")
    room = Room.from_topic(cmd.topic)
    if room is None:
        raise CommandError("not_found", "no such session")
    return room


class Live(NamedTuple):
    board_version: int
    #: The result this command already recorded (JSON), None when it has not run yet.
    stored: str | None


async def check_live(conn: asyncpg.Connection, room: Room, command_id: str = "") -> Live:
    """Refuse unless the room's session exists in its cohort and is live, or the command
    already ran (then its stored result, whatever the session's state is now)."""
    row = await conn.fetchrow(
        "SELECT cohort_id, state, board_version, "
        "(SELECT reply::text FROM live_command_results WHERE command_id = $2) AS stored "
        "FROM live_sessions WHERE id = $1",
        room.session_id,
        command_id,
    )
    if row is not None and row["stored"] is not None:
        return Live(0, row["stored"])
    if row is None or row["cohort_id"] != room.cohort_id:
        raise CommandError("not_found", "no such session")
    if row["state"] != "live":
        raise CommandError("session_not_live", f"the session is {row['state']}, not live")
    return Live(int(row["board_version"]), None)


async def in_room(
    ctx: WorkerContext, cmd: Command, op: Operation, *, lock: bool = True, once: bool = True
) -> Any:
    """Run ``op`` for the command's room: lock, transaction, live check, publish after commit.

    With ``once`` (every command that changes something; read-only ones pass False), the
    result is recorded under the command's id in the same transaction as the change and its
    events go to the outbox in it too; a redelivery returns the recorded result and applies
    nothing (:mod:`workers.live_once`)."""
    room = room_of(cmd)
    if ctx.db is None:
        raise CommandError("unavailable", "live rooms are not available on this worker")
    key = cmd.id if once else ""
    try:
        opened = locked_room(ctx.db, room.session_id) if lock else ctx.db.acquire()
        async with opened as conn:
            state = Ctx(ctx, conn, room, cmd)
            try:
                async with conn.transaction():
                    live = await check_live(conn, room, key)
                    if live.stored is not None:
                        return live_once.decode(live.stored)
                    state.board_version = live.board_version
                    result = await op(state)
                    if key:
                        await live_once.record(conn, key, result, claimed=state.claimed)
                    ids = await record_events(conn, state.events)
            except live_once.Duplicate:
                return await live_once.stored(conn, key)
            if state.board is not None:
                version = state.board_version + state.board_changes
                qa_board.keep(room.session_id, version, state.board)
            await publish_recorded(ctx, conn, state.events, ids)
    except Invalid as exc:
        raise CommandError("invalid", str(exc)) from None
    return result
