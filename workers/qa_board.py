"""Q&A boards kept in a worker process's memory between the commands of their room.

A room's commands run one at a time under the room lock (workers/live_state.py), and every
change to a ``questions`` row bumps its session's ``live_sessions.board_version`` (a trigger,
migration 0009). So a process may keep the board it built for a session and reuse it for the
next command of that room as long as the version it reads under the lock is the one its copy
was left at; otherwise (another process applied a command, something else wrote the table, or
the copy was evicted) it loads the board once more.

Guarantees: a board is only reused at exactly the version it reflects; a copy is taken out of
the cache while a command works on it and put back only after that command committed, so a
rolled-back change never survives in memory; at most :data:`MAX_BOARDS` boards are kept.
"""

from __future__ import annotations

from collections import OrderedDict

import asyncpg

from workers import live_rules as rules
from workers.ranking import Board

#: Boards kept per process (least recently used ones go first).
MAX_BOARDS = 256

_CACHE: OrderedDict[int, tuple[int, Board]] = OrderedDict()


async def take(conn: asyncpg.Connection, session_id: int, version: int) -> Board:
    """The session's board at ``version`` (read under the room lock): this process's copy
    when it is at that version, else loaded from ``conn``. Either way it leaves the cache."""
    cached = _CACHE.pop(session_id, None)
    if cached is not None and cached[0] == version:
        return cached[1]
    rows = await conn.fetch(
        "SELECT id, votes, created_at, pinned, answered_at, dismissed FROM questions "
        "WHERE session_id = $1 AND NOT dismissed",
        session_id,
    )
    return Board(rules.qa_item(row) for row in rows)


def keep(session_id: int, version: int, board: Board) -> None:
    """Keep ``board`` as the session's board at ``version`` (after the command committed)."""
    _CACHE[session_id] = (version, board)
    _CACHE.move_to_end(session_id)
    while len(_CACHE) > MAX_BOARDS:
        _CACHE.popitem(last=False)


def cached_version(session_id: int) -> int | None:
    """The version this process's copy of the board is at (``None`` without one)."""
    cached = _CACHE.get(session_id)
    return None if cached is None else cached[0]
