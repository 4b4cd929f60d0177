"""The plumbing every live-room command shares: find the room, authorize, validate, lock,
check the session (and whether this command already ran), run the change in a transaction
that also records its result and its events, publish after commit.

**Batches.** The commands of one room that wait in one worker process are applied together
(:func:`in_room` -> :func:`_drain`): one pooled connection, one room lock, one transaction,
one live check, one outbox insert, one commit (so one WAL flush instead of one per command)
and one publish of all their events, in order. A busy room thus costs a few round trips per
command instead of a full lock-transaction-commit-publish cycle each, while a quiet room's
batches are of one command and behave as before. Guarantees, per command:

* **Order.** A process applies a room's commands in their arrival order (FIFO); their events
  reach the room's history in that order, after the commit that made them visible. Batches of
  different processes are ordered by the room lock, as single commands were.
* **Isolation of refusals and failures.** Each command runs under its own savepoint: a refusal
  (:class:`CommandError`, ``invalid``) or an unexpected error rolls back only that command,
  which gets its own error reply; the others of the batch commit. Only a failure of the batch
  as a whole (the connection, the commit) fails every command of it: then nothing of it
  committed and nothing was published.
* **Exactly once.** A command's result is recorded under its id in the batch's transaction
  (:mod:`workers.live_once`); the batch looks up every id's stored result in its first round
  trip, so a redelivered command (in this batch or any later one) gets the stored reply and
  applies nothing. A refused command records nothing and is evaluated again when redelivered.
* **Replies after publish**, as before: a command's reply is sent once its events are in
  Redis (or in the outbox for the relay).

See :mod:`workers.live` for the commands, :mod:`workers.live_once` for exactly-once
commands, and :mod:`workers.live_state` for the outbox path and why the lock is held across
commit and publish.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import asyncpg
import msgspec

from config.topics import parse_live
from workers import events, live_once, metrics, qa_board
from workers import live_rules as rules
from workers.command_consumer import Command, CommandError
from workers.context import WorkerContext
from workers.live_rules import Invalid
from workers.live_state import (
    Event,
    Room,
    locked_room,
    mark_later,
    publish_recorded,
    record_events,
)
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
    nothing (:mod:`workers.live_once`). With ``lock`` the command joins its room's queue and
    is applied in a batch (see the module's docstring)."""
    room = room_of(cmd)
    if ctx.db is None:
        raise CommandError("unavailable", "live rooms are not available on this worker")
    key = cmd.id if once else ""
    if lock:
        return await _submit(ctx, room, _Item(cmd, op, key))
    try:
        async with ctx.db.acquire() as conn:
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
        if await publish_recorded(ctx, state.events, ids):
            mark_later(ctx.db, ids)
    except Invalid as exc:
        raise CommandError("invalid", str(exc)) from None
    return result


# -- batches ------------------------------------------------------------------------------------

#: Most commands applied in one batch (one transaction); what waits beyond goes in the next.
MAX_BATCH = 50

_stored_decoder = msgspec.json.Decoder(dict[str, Any])


@dataclass(slots=True)
class _Item:
    cmd: Command
    op: Operation
    #: The command's id when its result is recorded (``once``), else "".
    key: str
    done: asyncio.Future[Any] = field(init=False)

    def __post_init__(self) -> None:
        self.done = asyncio.get_running_loop().create_future()

    def settle(self, outcome: Any) -> None:
        if self.done.done():
            return  # its handler was cancelled
        if isinstance(outcome, BaseException):
            self.done.set_exception(outcome)
        else:
            self.done.set_result(outcome)


@dataclass(slots=True)
class _Queue:
    items: deque[_Item] = field(default_factory=deque)
    task: asyncio.Task[None] | None = None


#: Session id -> the commands of that room waiting in this process, and the task applying them.
_ROOMS: dict[int, _Queue] = {}


async def _submit(ctx: WorkerContext, room: Room, item: _Item) -> Any:
    queue = _ROOMS.get(room.session_id)
    if queue is None or (queue.task is not None and queue.task.get_loop() is not _loop()):
        queue = _ROOMS[room.session_id] = _Queue()  # (a stale queue of a finished event loop)
    queue.items.append(item)
    if queue.task is None:
        queue.task = asyncio.create_task(_drain(ctx, room, queue))
    return await item.done


def _loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


async def _drain(ctx: WorkerContext, room: Room, queue: _Queue) -> None:
    """Apply the room's queued commands, batch after batch, until none is left. A separate
    task, so a cancelled handler never takes the others' commands down with it."""
    batch: list[_Item] = []
    try:
        while queue.items:
            batch = [queue.items.popleft() for _ in range(min(MAX_BATCH, len(queue.items)))]
            # A handler cancelled while waiting (shutdown) left its entry unacknowledged: the
            # command is redelivered and applied then.
            batch = [item for item in batch if not item.done.done()]
            if batch:
                await _apply(ctx, room, batch)
    except BaseException as exc:
        gone = CommandError("unavailable", "the worker stopped")
        for item in [*batch, *queue.items]:
            item.settle(gone)
        queue.items.clear()
        if not isinstance(exc, Exception):
            raise
    finally:
        queue.task = None
        if _ROOMS.get(room.session_id) is queue and not queue.items:
            del _ROOMS[room.session_id]


async def _apply(ctx: WorkerContext, room: Room, batch: list[_Item]) -> None:
    """One batch: lock, one transaction, every command under its savepoint, one commit, one
    publish; then every command's reply. A failure of the whole batch fails each command."""
    assert ctx.db is not None
    metrics.live_batch.observe(len(batch))
    board = _Board()
    try:
        async with locked_room(ctx.db, room.session_id) as conn:
            async with conn.transaction():
                outcomes, events = await _run_batch(ctx, conn, room, batch, board)
                ids = await record_events(conn, events)
            if board.board is not None:
                qa_board.keep(room.session_id, board.version, board.board)
            published = await publish_recorded(ctx, events, ids)
    except _Alone as alone:
        batch[0].settle(alone.outcome)
        return
    except Exception as exc:
        for item in batch:
            item.settle(exc)
        return
    if published:
        mark_later(ctx.db, ids)  # after the lock: the next batch need not wait for it
    for item, outcome in zip(batch, outcomes, strict=True):
        item.settle(outcome)


class _Alone(Exception):
    """The outcome of a batch's only command, which failed: raised through the transaction
    (rolling it back whole, which is that command's rollback) to :func:`_apply`."""

    def __init__(self, outcome: Any) -> None:
        super().__init__()
        self.outcome = outcome


@dataclass(slots=True)
class _Board:
    """The room's Q&A board as the batch's committed-so-far commands left it."""

    version: int = 0
    board: Board | None = None


_BATCH_LIVE_SQL = (
    "SELECT cohort_id, state, board_version, "
    "(SELECT json_object_agg(command_id, reply)::text FROM live_command_results "
    "WHERE command_id = ANY($2::text[])) AS stored "
    "FROM live_sessions WHERE id = $1"
)


async def _run_batch(
    ctx: WorkerContext, conn: asyncpg.Connection, room: Room, batch: list[_Item], board: _Board
) -> tuple[list[Any], list[Event]]:
    """Every command of ``batch`` in the open transaction: its outcome (result or exception),
    in order, and the events of those that succeeded, in order."""
    row = await conn.fetchrow(
        _BATCH_LIVE_SQL, room.session_id, [item.key for item in batch if item.key]
    )
    done: dict[str, Any] = {}
    if row is not None and row["stored"] is not None:
        done = _stored_decoder.decode(row["stored"])
    refusal: CommandError | None = None
    if row is None or row["cohort_id"] != room.cohort_id:
        refusal = CommandError("not_found", "no such session")
    elif row["state"] != "live":
        refusal = CommandError("session_not_live", f"the session is {row['state']}, not live")
    else:
        board.version = int(row["board_version"])
    outcomes: list[Any] = []
    events: list[Event] = []
    results: dict[str, Any] = {}  # recorded together, in one round trip, before commit
    # A batch of one needs no savepoint: its transaction is the command's (see _Alone).
    savepoint = "SAVEPOINT cmd" if len(batch) > 1 else ""
    for item in batch:
        if item.key in done:  # ran before (an earlier delivery, or earlier in this batch)
            outcomes.append(done[item.key])
        elif refusal is not None:
            outcomes.append(refusal)
        else:
            if savepoint:
                await conn.execute(savepoint)
                savepoint = "RELEASE SAVEPOINT cmd; SAVEPOINT cmd"  # one round trip from now on
            outcome, ok = await _run_one(ctx, conn, room, item, board, events, bool(savepoint))
            if ok and item.key and item.key not in done:
                done[item.key] = outcome
                results[item.key] = outcome
            outcomes.append(outcome)
    await live_once.record_many(conn, results)
    return outcomes, events


async def _run_one(
    ctx: WorkerContext,
    conn: asyncpg.Connection,
    room: Room,
    item: _Item,
    board: _Board,
    events: list[Event],
    savepoint: bool,
) -> tuple[Any, bool]:
    """One command under the savepoint just taken: (result, True) when it applied; else (its
    exception, or a duplicate's stored reply, False) after rolling back to the savepoint (what
    it changed is undone, the batch goes on); without a savepoint, :class:`_Alone`. The
    caller records the results (:func:`live_once.record_many`)."""
    state = Ctx(ctx, conn, room, item.cmd)
    state.board, state.board_version = board.board, board.version
    try:
        result = await item.op(state)
    except Exception as exc:
        if savepoint:
            await conn.execute("ROLLBACK TO SAVEPOINT cmd")
        board.board = None  # it may hold the undone change: the next command reloads it
        outcome: Any = exc
        if isinstance(exc, Invalid):
            outcome = CommandError("invalid", str(exc))
        elif isinstance(exc, live_once.Duplicate):  # its claim found another delivery's row
            outcome = await live_once.stored(conn, item.key)
        if not savepoint:
            raise _Alone(outcome) from None
        return outcome, False
    board.board = state.board
    board.version = state.board_version + state.board_changes
    events.extend(state.events)
    return result, True
