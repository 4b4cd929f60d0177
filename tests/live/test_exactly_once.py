"""Exactly-once live commands: a redelivered or reclaimed command changes nothing and gets the
same reply (workers/live_once.py), and a command's room events reach Redis exactly once even
when its worker dies between commit and publish (the outbox path, workers/live_state.py)."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

import pytest

from config import keys
from config.streams import Command, Reply
from tests.live.conftest import LiveRoom, Person
from workers import command_consumer, live_state
from workers.command_consumer import execute
from workers.consumer import GroupReader
from workers.context import WorkerContext
from workers.live_state import Room, reaction_totals

_ids = itertools.count(1)


def command(live: LiveRoom, person: Person, name: str, data: dict[str, Any]) -> Command:
    """A command entry as the consumer sees it, with a fresh entry ID."""
    staff = person.role == "instructor"
    return Command(
        gateway="",
        conn="test",
        ref=str(next(_ids)),
        name=name,
        topic=live.topic,
        user=str(person.id),
        role=person.role,
        staff=staff,
        data=data,
        ts_ms=int(time.time() * 1000),
        id=f"{int(time.time() * 1000)}-{next(_ids)}",
    )


async def twice(ctx: WorkerContext, cmd: Command) -> Reply:
    """Deliver ``cmd`` twice; both replies must be ok and the same."""
    first = await execute(ctx, cmd)
    second = await execute(ctx, cmd)
    assert first.ok, first
    assert second == first
    return first


async def history(live: LiveRoom, ctx: WorkerContext, type_: str) -> list[dict[str, Any]]:
    """The data of every ``type_`` event in the room's history stream."""
    entries = await ctx.redis.xrange(keys.history_key(live.topic, live.settings.bus_shards))
    return [json.loads(f[b"d"]) for _, f in entries if f[b"t"].decode() == type_]


async def count(live: LiveRoom, sql: str, *args: Any) -> int:
    return int(await live.api.db.fetchval(sql, *args))


async def test_redelivered_commands_apply_once(live: LiveRoom, ctx: WorkerContext) -> None:
    student = await live.student()

    asked = await twice(ctx, command(live, student, "qa.ask", {"body": "Why twice?"}))
    qid = asked.data["question_id"]
    assert (
        await count(live, "SELECT count(*) FROM questions WHERE session_id = $1", live.session) == 1
    )
    updates = await history(live, ctx, "qa.updated")
    assert [u["question"]["id"] for u in updates] == [qid]

    voter = await live.student()
    voted = await twice(ctx, command(live, voter, "qa.upvote", {"question_id": qid}))
    assert voted.data == {"question_id": qid, "votes": 1}
    assert await count(live, "SELECT votes FROM questions WHERE id = $1", qid) == 1

    sent = await twice(ctx, command(live, student, "chat.send", {"body": "hello"}))
    assert (
        await count(live, "SELECT count(*) FROM chat_messages WHERE session_id = $1", live.session)
        == 1
    )
    messages = await history(live, ctx, "chat.message")
    assert [m["message"]["id"] for m in messages] == [sent.data["message_id"]]

    opened = await twice(
        ctx, command(live, live.instructor, "poll.open", {"question": "?", "options": ["a", "b"]})
    )
    pid = opened.data["poll_id"]
    assert await count(live, "SELECT count(*) FROM polls WHERE session_id = $1", live.session) == 1
    await twice(ctx, command(live, student, "poll.vote", {"poll_id": pid, "option": 1}))
    assert await count(live, "SELECT count(*) FROM poll_votes WHERE poll_id = $1", pid) == 1

    await twice(ctx, command(live, student, "react", {"emoji": "👍"}))
    room = Room.from_topic(live.topic)
    assert room is not None
    window = 2 * live_state.TIMINGS[0].reaction_window_ms / 1000
    await asyncio.sleep(window)  # the live flusher closes the window
    assert await reaction_totals(ctx.redis, room) == {"👍": 1}


async def test_redelivery_after_the_session_ended_gets_the_stored_reply(
    live: LiveRoom, ctx: WorkerContext
) -> None:
    student = await live.student()
    cmd = command(live, student, "qa.ask", {"body": "Still there?"})
    first = await execute(ctx, cmd)
    ended = "UPDATE live_sessions SET state = 'ended' WHERE id = $1"
    await live.api.db.execute(ended, live.session)
    assert await execute(ctx, cmd) == first
    assert (
        await count(live, "SELECT count(*) FROM questions WHERE session_id = $1", live.session) == 1
    )


async def test_a_refused_command_records_nothing(live: LiveRoom, ctx: WorkerContext) -> None:
    student = await live.student()
    cmd = command(live, student, "qa.upvote", {"question_id": 2**40})
    assert (await execute(ctx, cmd)).code == "not_found"
    assert (
        await count(live, "SELECT count(*) FROM live_command_results WHERE command_id = $1", cmd.id)
        == 0
    )


async def test_reclaimed_command_after_a_crash_replies_once(
    live: LiveRoom, ctx: WorkerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker that took the command commits it and dies before replying (its entry stays
    pending); another consumer reclaims it: the sender gets the first run's result, and there
    is one question."""
    crashed = asyncio.Event()
    send_reply = command_consumer.send_reply

    async def crash_once(*args: Any) -> None:
        if not crashed.is_set():
            crashed.set()
            raise RuntimeError("worker died after commit, before its reply")
        await send_reply(*args)

    monkeypatch.setattr(command_consumer, "send_reply", crash_once)
    member = await live.connect(await live.student())
    question = f"Will this be asked twice? (session {live.session})"
    body = json.dumps({"body": question}, separators=(",", ":")).encode()
    ref = await member.send_cmd("qa.ask", {"body": question})
    await asyncio.wait_for(crashed.wait(), 5)
    assert (
        await count(live, "SELECT count(*) FROM questions WHERE session_id = $1", live.session) == 1
    )

    rescuer = GroupReader(
        ctx.redis,
        keys.CMD_GROUP,
        "rescuer",
        [keys.CMD_STREAM],
        start_id="$",
        claim_idle_ms=0,
        block_ms=100,
    )
    # Only this test's command: the session's Redis may hold other tests' pending commands
    # (crashed on purpose too), which the rescuer claims as well.
    batch = await rescuer.next_batch(10)
    reclaimed = [d for d in batch if d.id and d.fields.get(b"data") == body]
    assert len(reclaimed) == 1
    await command_consumer._handle(ctx, rescuer, reclaimed[0])

    reply = await member.reply(ref)
    assert reply["ok"], reply
    qid = await live.api.db.fetchval("SELECT id FROM questions WHERE session_id = $1", live.session)
    assert reply["data"] == {"question_id": qid}
    assert (
        await count(live, "SELECT count(*) FROM questions WHERE session_id = $1", live.session) == 1
    )
    assert [u["question"]["id"] for u in await history(live, ctx, "qa.updated")] == [qid]


async def _relayed(live: LiveRoom, ctx: WorkerContext, type_: str) -> list[dict[str, Any]]:
    """``type_`` events once the outbox has no unpublished row of this room left."""
    async with asyncio.timeout(10):
        while await count(
            live,
            "SELECT count(*) FROM outbox WHERE topic = $1 AND published_at IS NULL",
            live.topic,
        ):
            await asyncio.sleep(0.1)
    return await history(live, ctx, type_)


async def test_worker_dying_between_commit_and_publish_loses_no_event(
    live: LiveRoom, ctx: WorkerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def die(*args: Any, **kwargs: Any) -> list[str]:
        raise RuntimeError("worker died after commit, before publishing")

    monkeypatch.setattr(ctx.publisher, "publish_many", die)
    student = await live.student()
    reply = await execute(ctx, command(live, student, "chat.send", {"body": "lost?"}))
    assert reply.code == "internal"  # the reply is what a dead worker never sends
    mid = await live.api.db.fetchval(
        "SELECT id FROM chat_messages WHERE session_id = $1", live.session
    )
    assert mid is not None
    messages = await _relayed(live, ctx, "chat.message")
    await asyncio.sleep(1.5)  # another relay poll: still once
    assert [m["message"]["id"] for m in messages] == [mid]
    assert [m["message"]["id"] for m in await history(live, ctx, "chat.message")] == [mid]


async def test_published_but_unmarked_events_are_not_published_again(
    live: LiveRoom, ctx: WorkerContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker publishes and dies before marking the rows: the relay publishes them with
    the same tokens and appends nothing."""
    monkeypatch.setattr(live_state, "MARK_SQL", "SELECT $1::bigint[]")
    student = await live.student()
    sent = await execute(ctx, command(live, student, "chat.send", {"body": "once"}))
    assert sent.ok, sent
    messages = await _relayed(live, ctx, "chat.message")
    assert [m["message"]["id"] for m in messages] == [sent.data["message_id"]]


def test_command_id_is_not_written_by_the_gateway() -> None:
    """The id is the stream entry's: a Command without one still decodes (old gateways)."""
    from config.streams import COMMAND

    fields = COMMAND.encode(
        Command("gw", "c", "1", "qa.ask", "live:1:2", "3", "student", False, {}, 0)
    )
    decoded = COMMAND.decode({k.encode(): _bytes(v) for k, v in fields.items() if k != "id"})
    assert decoded.id == ""


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
