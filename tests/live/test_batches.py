"""Live-room commands applied in batches (workers/live_room.py): the commands of one room that
wait in a worker process share one lock, one transaction and one commit, and still keep their
order, their exactly-once replies, and their own refusals and failures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import asyncpg
import pytest

from config.streams import Reply
from tests.live.conftest import LiveRoom
from tests.live.test_exactly_once import command, count, history
from workers import events, metrics
from workers.command_consumer import CommandError, execute
from workers.context import WorkerContext
from workers.live_room import Ctx, in_room
from workers.live_state import LOCK_NAMESPACE


def _batches() -> tuple[float, float]:
    """(batches, commands) applied in this process so far."""
    get = metrics.registry.get_sample_value
    return (
        get("lectern_worker_live_batch_commands_count") or 0.0,
        get("lectern_worker_live_batch_commands_sum") or 0.0,
    )


class Held:
    """Another process taking the room lock: commands queue up behind it, and go through in
    one batch once it lets go (:meth:`release`)."""

    def __init__(self, conn: asyncpg.Connection, key: int) -> None:
        self.conn = conn
        self.key = key

    async def release(self, *calls: Awaitable[Any]) -> list[Any]:
        """Take the lock, start ``calls`` (queued in this order), let go of the lock, gather
        the outcomes."""
        await self.conn.execute("SELECT pg_advisory_lock($1)", self.key)
        tasks = [asyncio.ensure_future(c) for c in calls]
        await asyncio.sleep(0.2)  # every call is queued, the batch waits on the lock
        await self.conn.execute("SELECT pg_advisory_unlock($1)", self.key)
        return await asyncio.gather(*tasks, return_exceptions=True)


@pytest.fixture
async def held(live: LiveRoom) -> AsyncIterator[Held]:
    conn = await asyncpg.connect(live.settings.database_url)
    try:
        yield Held(conn, LOCK_NAMESPACE | live.session)
    finally:
        await conn.close()


async def test_a_batch_keeps_the_arrival_order(
    live: LiveRoom, ctx: WorkerContext, held: Held
) -> None:
    student = await live.student()
    before = _batches()
    cmds = [command(live, student, "chat.send", {"body": f"m{i}"}) for i in range(8)]
    replies: list[Reply] = await held.release(*(execute(ctx, c) for c in cmds))
    assert all(r.ok for r in replies), replies
    after = _batches()
    assert (after[0] - before[0], after[1] - before[1]) == (1, 8)  # one batch of eight
    ids = [r.data["message_id"] for r in replies]
    assert ids == sorted(ids)  # applied in arrival order
    bodies = await live.api.db.fetch(
        "SELECT body FROM chat_messages WHERE session_id = $1 ORDER BY id", live.session
    )
    assert [b["body"] for b in bodies] == [f"m{i}" for i in range(8)]
    events = await history(live, ctx, "chat.message")
    assert [e["message"]["id"] for e in events] == ids  # published in the same order


async def test_a_failing_command_does_not_lose_the_others(
    live: LiveRoom, ctx: WorkerContext, held: Held
) -> None:
    """Between good commands: one that writes and then refuses, one that breaks the
    transaction with a database error. Each gets its own outcome; what they wrote is undone;
    the others commit and publish."""
    student = await live.student()
    sql = "INSERT INTO chat_messages (session_id, user_id, body) VALUES ($1, $2, $3) RETURNING id"

    def writing(body: str, then: str = "") -> Any:
        async def op(s: Ctx) -> Any:
            mid = await s.conn.fetchval(sql, s.room.session_id, s.user_id, body)
            s.to_room(events.ChatMessage(message={"id": mid}))
            if then == "refuse":
                raise CommandError("poll_closed", "refused after writing")
            if then == "break":
                await s.conn.execute("SELECT 1 / 0")
            return {"message_id": mid}

        return op

    names = ["good-1", "refused", "broken", "good-2"]
    thens = ["", "refuse", "break", ""]
    cmds = [command(live, student, "chat.send", {"body": n}) for n in names]
    outcomes = await held.release(
        *(in_room(ctx, c, writing(n, t)) for c, n, t in zip(cmds, names, thens, strict=True))
    )
    assert isinstance(outcomes[1], CommandError) and outcomes[1].code == "poll_closed"
    assert isinstance(outcomes[2], asyncpg.DivisionByZeroError)
    good = [outcomes[0]["message_id"], outcomes[3]["message_id"]]
    rows = await live.api.db.fetch(
        "SELECT id, body FROM chat_messages WHERE session_id = $1 ORDER BY id", live.session
    )
    assert [(r["id"], r["body"]) for r in rows] == list(zip(good, ["good-1", "good-2"]))
    assert [e["message"]["id"] for e in await history(live, ctx, "chat.message")] == good
    for cmd, recorded in zip(cmds, [1, 0, 0, 1], strict=True):
        assert (
            await count(
                live, "SELECT count(*) FROM live_command_results WHERE command_id = $1", cmd.id
            )
            == recorded
        )


async def test_redelivery_within_and_after_a_batch_applies_once(
    live: LiveRoom, ctx: WorkerContext, held: Held
) -> None:
    """The same command twice in one batch (a reclaim racing the first delivery), and once
    more later: one question, one event, the same reply every time."""
    student = await live.student()
    ask = command(live, student, "qa.ask", {"body": "Asked three times?"})
    other = command(live, student, "chat.send", {"body": "in between"})
    first, _, second = await held.release(execute(ctx, ask), execute(ctx, other), execute(ctx, ask))
    assert first.ok, first
    assert second == first
    assert await execute(ctx, ask) == first
    qid = first.data["question_id"]
    assert (
        await count(live, "SELECT count(*) FROM questions WHERE session_id = $1", live.session) == 1
    )
    assert [u["question"]["id"] for u in await history(live, ctx, "qa.updated")] == [qid]


async def test_a_refused_command_is_evaluated_again_in_a_later_batch(
    live: LiveRoom, ctx: WorkerContext, held: Held
) -> None:
    """A refusal records nothing: redelivered once the reason is gone, the command applies."""
    student = await live.student()
    asked = await execute(ctx, command(live, student, "qa.ask", {"body": "Vote for me"}))
    voter = await live.student()
    vote = command(live, voter, "qa.upvote", {"question_id": asked.data["question_id"]})
    unvote = command(live, voter, "qa.unvote", {"question_id": asked.data["question_id"]})
    refused, voted = await held.release(execute(ctx, unvote), execute(ctx, vote))
    assert refused.code == "not_voted"
    assert voted.ok and voted.data["votes"] == 1
    again = await execute(ctx, unvote)  # redelivered: now there is a vote to take back
    assert again.ok and again.data["votes"] == 0
