"""Presence leases (gateway/presence_writer.py, workers/presence_leases.py): a gateway process
that is SIGKILLed sends no leaves, yet its live-room members leave the people list and their
attendance closes as of its last lease refresh; a live gateway's members are never expired; a
member who reconnects to another gateway stays present, without a leave or a join.

Timing is judged on recorded times and injected clocks, never on this test's wall clock:
waits are upper limits for failing, sleeps are lower bounds."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from config import keys, redisconn, streams
from config.settings import Settings, load_settings
from config.streams import LeasedSub, Presence, PresenceOp
from gateway import presence_writer
from gateway.presence_writer import PresenceWriter
from tests.conftest import RedisTarget
from tests.gateway.conftest import Starter
from tests.live.conftest import LEASE_INTERVAL_S, TEST_TIMINGS, LiveRoom, Person, worker
from tests.processes import copies
from workers import attendance
from workers.context import WorkerContext
from workers.live_state import Room, as_text
from workers.presence_leases import Reaper, run_presence_leases

#: The reaper of these tests: far above the live gateways' refresh interval (0.25 s).
LEASE_GRACE_S = 3.0
#: Lease lapse, a reaper round, the attendance grace, and room for a loaded machine.
EXPIRY_LIMIT_S = LEASE_GRACE_S + 2 * LEASE_INTERVAL_S + TEST_TIMINGS.presence_grace_ms / 1000 + 10


def _lease_settings(settings: Settings) -> Settings:
    return msgspec.structs.replace(
        settings, presence_lease_interval_s=LEASE_INTERVAL_S, presence_lease_grace_s=LEASE_GRACE_S
    )


@contextlib.asynccontextmanager
async def _reaper(live: LiveRoom) -> AsyncIterator[WorkerContext]:
    """One more worker, whose lease reaper has the short grace (the fixture's two keep the
    default, longer one)."""
    async with worker(_lease_settings(live.api.settings), "lease") as ctx:
        task = asyncio.get_running_loop().create_task(run_presence_leases(ctx))
        try:
            yield ctx
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def _leases(redis: aioredis.Redis, key: str = keys.PRESENCE_LEASES) -> set[str]:
    return {as_text(x) for x in await redis.zrange(key, 0, -1)}


async def _on_process(
    live: LiveRoom, start: Starter, redis: aioredis.Redis, person: Person
) -> tuple[int, str]:
    """Start ``python -m gateway`` (one process) and put ``person`` in the room there:
    the gateway process's pid and its lease id."""
    before = await _leases(redis)
    gw = await start(1, presence_lease_interval_s=LEASE_INTERVAL_S)
    await live.connect(person, ws_url=gw.ws_url)
    new: set[str] = set()

    async def leased() -> bool:
        new.update(await _leases(redis) - before)
        return bool(new)

    async with asyncio.timeout(10):
        while not await leased():
            await asyncio.sleep(0.05)
    assert not copies(gw.proc.pid)  # one process: the gateway itself, no supervisor
    (lease,) = new
    return gw.proc.pid, lease


async def _row(live: LiveRoom, user: int) -> Any:
    return await live.api.db.fetchrow(
        "SELECT joined_at, left_at FROM attendance WHERE session_id = $1 AND user_id = $2",
        live.session,
        user,
    )


async def test_a_killed_gateways_members_leave_as_of_its_last_refresh(
    live: LiveRoom, start_gateway_process: Starter
) -> None:
    (student,) = await live.people(1)
    teacher = await live.connect(live.instructor, topics=[live.staff_topic])
    async with _reaper(live) as ctx:
        pid, lease = await _on_process(live, start_gateway_process, ctx.redis, student)
        here = await teacher.event(
            "presence", lambda d: str(student.id) in d["users"], topic=live.staff_topic
        )
        assert here["data"]["count"] == 1
        killed = time.time()
        os.kill(pid, signal.SIGKILL)
        # The lease lapses, the reaper closes its subscriptions, the attendance grace runs out.
        gone = await teacher.event(
            "presence",
            lambda d: str(student.id) not in d["users"],
            wait=EXPIRY_LIMIT_S,
            topic=live.staff_topic,
        )
        assert gone["data"]["count"] == 0
        assert lease not in await _leases(ctx.redis) | await _leases(
            ctx.redis, keys.PRESENCE_REAPING
        )

    async with asyncio.timeout(10):
        while not ((row := await _row(live, student.id)) and row["left_at"]):
            await asyncio.sleep(0.05)
    # The stay ends when the dead gateway last refreshed its lease: after the join, before
    # the kill (the system's recorded times, not this test's sleeps).
    assert row["joined_at"] <= row["left_at"]
    assert row["left_at"].timestamp() <= killed + 0.001


async def test_a_reconnect_to_another_gateway_keeps_the_member_present(
    live: LiveRoom, start_gateway_process: Starter
) -> None:
    """And the live gateway (the fixture's, holding the teacher and then the student) is
    never reaped, through several lease graces."""
    (student,) = await live.people(1)
    teacher = await live.connect(live.instructor, topics=[live.staff_topic])
    lost_before = presence_writer.leases_lost._value.get()
    async with _reaper(live) as ctx:
        pid, lease = await _on_process(live, start_gateway_process, ctx.redis, student)
        first = await teacher.event(
            "presence", lambda d: str(student.id) in d["users"], topic=live.staff_topic
        )
        live_lease = f"{live.gateway.hub.gateway_id}.0"
        assert live_lease in await _leases(ctx.redis)
        os.kill(pid, signal.SIGKILL)
        await live.connect(student)  # back at once, on the fixture's gateway

        async def reaped() -> bool:
            dead = await _leases(ctx.redis) | await _leases(ctx.redis, keys.PRESENCE_REAPING)
            return lease not in dead

        async with asyncio.timeout(EXPIRY_LIMIT_S):
            while not await reaped():
                await asyncio.sleep(0.05)
        # Past any finalize the reaped subscription could have scheduled, and more lease graces.
        await asyncio.sleep(max(TEST_TIMINGS.presence_grace_ms / 1000, LEASE_GRACE_S) + 1)
        assert live_lease in await _leases(ctx.redis)

    room = Room.from_topic(live.topic)
    assert room is not None
    assert await attendance.present_users(ctx.redis, room) == [str(student.id)]
    people = [first["data"]["users"]] + [
        f["data"]["users"]
        for f in teacher.frames + await teacher.drain(0.3)
        if f.get("event") == "presence" and f.get("topic") == live.staff_topic
    ]
    # Listed from the first presence event on, never dropped: no leave, no second join.
    assert people and all(str(student.id) in users for users in people), people
    assert presence_writer.leases_lost._value.get() == lost_before
    row = await _row(live, student.id)
    assert row is None or row["left_at"] is None


@pytest.mark.redis_modes
async def test_reaper_closes_a_lapsed_lease_on_an_injected_clock(
    redis_target: RedisTarget,
) -> None:
    """Pure timing on a real Redis: not reaped one ms before the grace, reaped at it; each
    subscription left at the last refresh, or at its own join when that came later."""
    settings = load_settings(
        {},
        redis_url=redis_target.url,
        redis_cluster=redis_target.cluster,
        presence_lease_interval_s=1,
        presence_lease_grace_s=5,
    )
    ctx = await WorkerContext.open(settings, with_db=False)
    try:
        cohort = uuid.uuid4().int % 10**9 + 1
        room = Room(str(cohort), "1", cohort, 1)
        lease, alive = f"dead-{cohort}.0", f"alive-{cohort}.0"
        scripts = attendance.Scripts(ctx)
        refreshed = 1_000_000
        subs = {"s1": ("u1", refreshed - 500), "s2": ("u2", refreshed + 200)}
        for sub, (user, ts) in subs.items():
            join = Presence(PresenceOp.JOIN, user, room.topic, sub, ts)
            assert await attendance.apply(scripts, join, TEST_TIMINGS) == "new"
            held = streams.LEASED_SUB_ENCODER.encode(LeasedSub(room.topic, user, ts))
            await ctx.redis.hset(keys.presence_subs_key(lease), sub, held)
        await ctx.redis.zadd(keys.PRESENCE_LEASES, {lease: refreshed, alive: refreshed + 4000})
        reaper = Reaper(ctx, settings.presence_lease_grace_s)

        assert await reaper.reap(refreshed + 4999, TEST_TIMINGS) == 0
        assert {lease, alive} <= await _leases(ctx.redis)
        assert await reaper.reap(refreshed + 5000, TEST_TIMINGS) == 2
        assert lease not in await _leases(ctx.redis) | await _leases(
            ctx.redis, keys.PRESENCE_REAPING
        )
        assert alive in await _leases(ctx.redis)
        assert not await ctx.redis.exists(keys.presence_subs_key(lease))
        state = attendance.presence_keys(room)[0]
        assert as_text(await ctx.redis.hget(state, "g:u1")) == str(refreshed)
        assert as_text(await ctx.redis.hget(state, "g:u2")) == str(refreshed + 200)
        assert await reaper.reap(refreshed + 9000, TEST_TIMINGS) == 0  # nothing twice
        await ctx.redis.zrem(keys.PRESENCE_LEASES, alive)
    finally:
        await ctx.close()


@pytest.mark.redis_modes
async def test_a_gateway_whose_lease_was_reaped_joins_again(redis_target: RedisTarget) -> None:
    """The writer notices a reaped lease on its next refresh: a new lease id, every open
    subscription joined again under it (new subscription ids), queued records of the old
    lease dropped."""
    redis = redisconn.connect(redis_target.url, cluster=redis_target.cluster)
    gid = f"gw-{uuid.uuid4().hex[:8]}"
    writer = PresenceWriter(redis, gid, 1.0)
    conn = SimpleNamespace(id=1, conn_id=f"{gid}.1", claims=SimpleNamespace(sub="9"))
    try:
        writer.joined(conn, "live:1:2")  # type: ignore[arg-type]
        assert await writer.flush()
        await writer.refresh()
        first = writer.lease
        assert first == f"{gid}.0" and first in await _leases(redis)
        old_subs = await redis.hkeys(keys.presence_subs_key(first))
        assert len(old_subs) == 1
        await writer.refresh()  # still ours: nothing happens
        assert writer.lease == first and writer.queue == []
        lost = presence_writer.leases_lost._value.get()

        await redis.zrem(keys.PRESENCE_LEASES, first)  # what the reaper's claim does
        # Queued under the old lease:
        writer.joined(conn, "live:1:3")  # type: ignore[arg-type]
        await writer.refresh()
        assert writer.lease == f"{gid}.1" and writer.lease in await _leases(redis)
        assert presence_writer.leases_lost._value.get() == lost + 1
        queued = [(e.op, e.topic) for e, _ in writer.queue]
        assert sorted(queued) == [(PresenceOp.JOIN, "live:1:2"), (PresenceOp.JOIN, "live:1:3")]
        assert await writer.flush()
        new_subs = await redis.hkeys(keys.presence_subs_key(writer.lease))
        assert len(new_subs) == 2 and not set(new_subs) & set(old_subs)
        await writer.release()
        assert writer.lease not in await _leases(redis)
        assert not await redis.exists(keys.presence_subs_key(writer.lease))
    finally:
        await redis.delete(keys.presence_subs_key(f"{gid}.0"))
        await redis.aclose()
