"""The plumbing every live-room command shares: find the room, authorize, validate, lock,
check the session, run the change in a transaction, publish after commit.

See :mod:`workers.live` for the commands and :mod:`workers.live_state` for why the lock is
held across commit and publish.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from config.topics import parse_live
from workers import live_rules as rules
from workers import qa_board
from workers.command_consumer import Command, CommandError
from workers.context import WorkerContext
from workers.live_rules import Invalid
from workers.live_state import Event, Room, locked_room, publish_events
from workers.ranking import Board


class Ctx:
    """What a room operation sees: the connection (in its transaction), the room, the sender,
    and the events to publish after commit."""

    __slots__ = (
        "board",
        "board_changes",
        "board_version",
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

    async def qa_board(self) -> Board:
        """The room's Q&A board as of the start of this command (cached between commands)."""
        if self.board is None:
            self.board = await qa_board.take(self.conn, self.room.session_id, self.board_version)
        return self.board

    def to_room(self, type_: str, data: Any) -> None:
        self.events.append((self.room.topic, type_, data))

    def to_staff(self, type_: str, data: Any) -> None:
        self.events.append((self.room.staff_topic, type_, data))


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


async def check_live(conn: asyncpg.Connection, room: Room) -> int:
    """Refuse unless the room's session exists in its cohort and is live; return its Q&A
    ``board_version``."""
    row = await conn.fetchrow(
        "SELECT cohort_id, state, board_version FROM live_sessions WHERE id = $1",
        room.session_id,
    )
    if row is None or row["cohort_id"] != room.cohort_id:
        raise CommandError("not_found", "no such session")
    if row["state"] != "live":
        raise CommandError("session_not_live", f"the session is {row['state']}, not live")
    return int(row["board_version"])


async def in_room(ctx: WorkerContext, cmd: Command, op: Operation, *, lock: bool = True) -> Any:
    """Run ``op`` for the command's room: lock, transaction, live check, publish after commit."""
    room = room_of(cmd)
    if ctx.db is None:
        raise CommandError("unavailable", "live rooms are not available on this worker")
    try:
        opened = locked_room(ctx.db, room.session_id) if lock else ctx.db.acquire()
        async with opened as conn:
            state = Ctx(ctx, conn, room, cmd)
            async with conn.transaction():
                state.board_version = await check_live(conn, room)
                result = await op(state)
            if state.board is not None:
                version = state.board_version + state.board_changes
                qa_board.keep(room.session_id, version, state.board)
            await publish_events(ctx, state.events, conn)
    except Invalid as exc:
        raise CommandError("invalid", str(exc)) from None
    return result
