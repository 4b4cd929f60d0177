"""Issue 8 item 15: only open live sessions can be subscribed (gateway/sessions.py), and a
room's attendance state stays bounded however often its topic is subscribed and left
(workers/attendance.py)."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest

from config import keys, streams
from config.streams import Presence, PresenceOp
from gateway.publish import Publisher
from gateway.sessions import register, register_open
from tests.live.conftest import LiveRoom
from workers import attendance
from workers.context import WorkerContext
from workers.live_state import TIMINGS, Room


def _base(live: LiveRoom) -> str:
    return live.gateway.ws_url.replace("ws://", "http://").removesuffix("/ws")


async def _presence_topics(live: LiveRoom, since_ms: int) -> set[str]:
    entries = await live.api.redis.xrange(keys.PRESENCE_STREAM, min=f"{since_ms}-0")
    return {fields[b"topic"].decode() for _, fields in entries}


async def test_only_open_sessions_of_the_cohort_can_be_subscribed(live: LiveRoom) -> None:
    since = int(time.time() * 1000)
    student = await live.student()
    member = await live.connect(student, [])
    other_cohort = await live.new_cohort()
    elsewhere = await live.api.db.fetchval(
        "INSERT INTO live_sessions (cohort_id, title, starts_at, ends_at)"
        " VALUES ($1, 'x', now(), now() + interval '1 hour') RETURNING id",
        other_cohort,
    )
    await register(live.api.redis, other_cohort, elsewhere, "scheduled")
    made_up = [
        f"live:{live.cohort}:999999999",  # no such session
        f"live:{live.cohort}:{elsewhere}",  # a session, but of another cohort
        f"live:{live.cohort}:not-a-number",
    ]
    for topic in made_up:
        refused = await member.subscribe(topic)
        assert refused["type"] == "error" and refused["code"] == "forbidden", refused
        assert "no such live session" in refused["message"]
    scheduled = await live.new_session(start=False)
    for topic in (live.topic, f"live:{live.cohort}:{scheduled}"):
        assert (await member.subscribe(topic))["type"] == "subscribed"
    headers = student.headers
    for path in ("/poll", "/sse"):
        url = f"{_base(live)}{path}?topics={made_up[0]}"
        async with live.http.get(url, headers=headers) as resp:
            assert resp.status == 403, path
            assert "no such live session" in (await resp.json())["error"]["message"]
    # Nothing was started for the made-up rooms: no presence records, no history.
    await asyncio.sleep(0.3)
    assert not set(made_up) & await _presence_topics(live, since)
    for topic in made_up:
        assert not await live.api.redis.exists(keys.history_key(topic, live.settings.bus_shards))


async def test_an_ended_session_stays_subscribable_for_its_grace(live: LiveRoom) -> None:
    status, data, _ = await live.api.request(
        "POST", f"/api/v1/sessions/{live.session}/end", headers=live.instructor.headers
    )
    assert status == 200, data
    key = keys.live_session_key(str(live.cohort), str(live.session))
    assert 0 < await live.api.redis.ttl(key) <= 3600
    member = await live.connect(await live.student())  # subscribes to the room: acked
    assert member.topic == live.topic


async def test_sessions_scheduled_before_the_registry_are_registered_at_start(
    live: LiveRoom,
) -> None:
    """The API registers the open sessions it finds when it starts (older data, a flushed
    Redis): here the key of the fixture's session is dropped, as if it never existed."""
    key = keys.live_session_key(str(live.cohort), str(live.session))
    await live.api.redis.delete(key)
    async with live.api.db.acquire() as conn:
        assert await register_open(conn, live.api.redis) >= 1
    assert await live.api.redis.get(key) == b"live"


def _ctx(live: LiveRoom) -> WorkerContext:
    redis = live.api.redis
    return WorkerContext(live.settings, redis, live.api.db, Publisher(redis, live.settings))


def _entry(op: PresenceOp, user: str, room: Room, conn: str, ts: int) -> dict[bytes, bytes]:
    fields = streams.PRESENCE.encode(Presence(op, user, room.topic, conn, ts))
    return {k.encode(): v.encode() if isinstance(v, str) else v for k, v in fields.items()}


_rooms = itertools.count(900_000_000)


async def test_subscribe_churn_leaves_a_bounded_presence_state(
    live: LiveRoom, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attendance, "MAX_TOMBSTONES", 50)
    ctx = _ctx(live)
    scripts = attendance.Scripts(ctx)
    room = Room(str(live.cohort), str(next(_rooms)), live.cohort, 0)
    state, here, gone = attendance.presence_keys(room)
    now = int(time.time() * 1000)
    timings = TIMINGS[0]
    for i in range(400):  # one user subscribing and leaving, over and over
        conn = f"gw.1.{i}"
        assert await attendance.apply_entry(
            ctx, scripts, _entry(PresenceOp.JOIN, "7", room, conn, now + i), timings
        ) in ("new", "back")
        assert (
            await attendance.apply_entry(
                ctx, scripts, _entry(PresenceOp.LEAVE, "7", room, conn, now + i), timings
            )
            == "gone"
        )
    # A redelivered join of an ended subscription is still recognised.
    redelivered = _entry(PresenceOp.JOIN, "7", room, "gw.1.399", now)
    assert await attendance.apply_entry(ctx, scripts, redelivered, timings) == "dup"
    fields: dict[Any, Any] = await ctx.redis.hgetall(state)
    assert set(fields) == {b"g:7", b"j:7"}  # in grace: when it left, when the stay began
    assert await ctx.redis.hlen(here) == 1
    assert await ctx.redis.zcard(gone) == 50
    # Tombstones older than TOMBSTONE_MS go with the next leave.
    later = now + attendance.TOMBSTONE_MS + 10_000
    for op in (PresenceOp.JOIN, PresenceOp.LEAVE):
        await attendance.apply_entry(ctx, scripts, _entry(op, "8", room, "x", later), timings)
    assert await ctx.redis.zrange(gone, 0, -1) == [b"x"]


async def test_checkpoint_credits_a_large_room_in_bounded_batches(
    live: LiveRoom, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attendance, "CHECKPOINT_BATCH", 50)
    ctx = _ctx(live)
    scripts = attendance.Scripts(ctx)
    batches: list[int] = []
    credit = scripts.credit

    async def counted(*, keys: list[str], args: list[Any]) -> Any:
        batches.append(len(args) - 2)
        return await credit(keys=keys, args=args)

    scripts.credit = counted  # type: ignore[method-assign]
    room = Room(str(live.cohort), str(next(_rooms)), live.cohort, 0)
    start = int(time.time() * 1000) - 5_000
    users = [str(u) for u in range(1, 401)]
    for user in users:
        entry = _entry(PresenceOp.JOIN, user, room, f"gw.{user}", start)
        assert await attendance.apply_entry(ctx, scripts, entry, TIMINGS[0]) == "new"
    await attendance.checkpoint(ctx, room, TIMINGS[0], scripts)
    assert batches and max(batches) <= 50 and sum(batches) >= len(users)
    here = await ctx.redis.hgetall(attendance.presence_keys(room)[1])
    # Every stay was credited (its uncredited start moved forward by whole seconds).
    assert {k.decode() for k in here} == set(users)
    assert all(int(v) >= start + 4_000 for v in here.values())
