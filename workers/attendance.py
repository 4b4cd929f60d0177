"""Attendance: who is in a live room, and how long each user stayed.

Input: the gateways append :class:`config.streams.Presence` entries to
``keys.PRESENCE_STREAM`` whenever a connection's subscription to a ``live:`` topic starts or
ends (unsubscribe or disconnect). ``conn`` names one subscription (connection id and a
sequence number), so a join and a leave pair up even when a connection re-subscribes.

:func:`run_presence` consumes it in the ``keys.PRESENCE_GROUP`` group, so every worker process
takes a share. The state therefore lives in Redis, one hash per room
(``keys.room_key("presence", cohort, session)``), changed only by the Lua scripts below, which
make every step atomic and idempotent:

* ``c:{conn}`` -> user: open subscriptions; ``x:{conn}``: subscriptions that ended (a join
  that arrives after its own leave, or a redelivered one, is ignored);
* ``n:{user}``: the user's open subscriptions; ``h:{user}``: the start of the not yet
  credited part of the user's stay (ms); ``j:{user}``: when the stay began;
* ``g:{user}``: when the user's last subscription ended, while the grace period runs.

**Grace.** When a user's last subscription ends, the user stays "here" for
``presence_grace_ms``; a join within it continues the same stay, gap included (a reconnect is
not an absence). When the grace runs out (:func:`finalize`, scheduled in the due set), the
stay ends at the leave time.

**Credit.** Stays are credited to ``attendance.seconds_attended`` in whole seconds (the
remainder carries over) at least every ``checkpoint_ms`` (:func:`checkpoint`) and when a stay
ends. A slice is credited only if the session is live at that moment, so time in the room
before the start or after the end does not count (to within one checkpoint interval).

**Publishing.** Changes to who is here (a first join, an ended stay) schedule one coalesced
publish per room and ``presence_coalesce_ms``: ``presence`` {session_id, users, count} to
``staff:{cohort}`` and ``presence.count`` {session_id, count} to the room.

What can go wrong: a gateway that crashes sends no leaves, so its users stay listed (their
credit stops when the session ends); a worker that dies between a Redis step and its database
write can lose or repeat one slice of credit.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import redis.exceptions

from config import keys, streams
from config.retry import Backoff
from config.streams import PresenceOp
from workers import metrics
from workers.consumer import GroupReader
from workers.context import WorkerContext
from workers.live_rules import LiveTimings, db_id
from workers.live_state import (
    ROOM_TTL_S,
    TIMINGS,
    DueQueue,
    Room,
    as_text,
    now_ms,
    publish_events,
)

log = logging.getLogger("lectern.workers.attendance")

_JOIN_LUA = """
local h = KEYS[1]
local conn, user, ts = ARGV[1], ARGV[2], ARGV[3]
redis.call('EXPIRE', h, ARGV[4])
if redis.call('HEXISTS', h, 'x:' .. conn) == 1 then return 'dup' end
if redis.call('HSETNX', h, 'c:' .. conn, user) == 0 then return 'dup' end
if redis.call('HINCRBY', h, 'n:' .. user, 1) > 1 then return 'more' end
if redis.call('HDEL', h, 'g:' .. user) == 1 then return 'back' end
redis.call('HSET', h, 'h:' .. user, ts, 'j:' .. user, ts)
return 'new'
"""

_LEAVE_LUA = """
local h = KEYS[1]
local conn, user, ts = ARGV[1], ARGV[2], ARGV[3]
redis.call('EXPIRE', h, ARGV[4])
redis.call('HSET', h, 'x:' .. conn, '1')
if redis.call('HDEL', h, 'c:' .. conn) == 0 then return 'dup' end
if redis.call('HINCRBY', h, 'n:' .. user, -1) > 0 then return 'more' end
redis.call('HDEL', h, 'n:' .. user)
redis.call('HSET', h, 'g:' .. user, ts)
return 'gone'
"""

# Ends a stay whose grace ran out: {'done', left, since, joined}, {'wait', left} or nil.
_FINALIZE_LUA = """
local h = KEYS[1]
local user, now, grace = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local left = redis.call('HGET', h, 'g:' .. user)
if not left then return nil end
if now < tonumber(left) + grace then return {'wait', left} end
local since = redis.call('HGET', h, 'h:' .. user) or left
local joined = redis.call('HGET', h, 'j:' .. user) or since
redis.call('HDEL', h, 'g:' .. user, 'h:' .. user, 'j:' .. user)
return {'done', left, since, joined}
"""

# Credits every open stay up to now (or to its leave time, in grace): returns
# {present, {user, seconds, joined, ...}, {users whose grace ran out}}.
_CHECKPOINT_LUA = """
local h = KEYS[1]
local now, grace = tonumber(ARGV[1]), tonumber(ARGV[2])
local all = redis.call('HGETALL', h)
local credits, expired, present = {}, {}, 0
for i = 1, #all, 2 do
  local f = all[i]
  if string.sub(f, 1, 2) == 'h:' then
    present = present + 1
    local user = string.sub(f, 3)
    local since = tonumber(all[i + 1])
    local stop = now
    local left = redis.call('HGET', h, 'g:' .. user)
    if left then
      stop = math.min(now, tonumber(left))
      if now >= tonumber(left) + grace then table.insert(expired, user) end
    end
    if stop - since >= 1000 then
      local secs = math.floor((stop - since) / 1000)
      redis.call('HSET', h, f, string.format('%d', since + secs * 1000))
      table.insert(credits, user)
      table.insert(credits, secs)
      table.insert(credits, redis.call('HGET', h, 'j:' .. user) or string.format('%d', since))
    end
  end
end
return {present, credits, expired}
"""

# Credit only registered users, only while the session is live, only in the topic's cohort.
_UPSERT = """
INSERT INTO attendance (session_id, user_id, joined_at, left_at, seconds_attended)
SELECT $1, $2, to_timestamp($3::bigint / 1000.0), to_timestamp($4::bigint / 1000.0), $5
WHERE EXISTS (SELECT 1 FROM live_sessions WHERE id = $1 AND cohort_id = $6 AND state = 'live')
  AND EXISTS (SELECT 1 FROM users WHERE id = $2)
ON CONFLICT (session_id, user_id) DO UPDATE SET
    seconds_attended = attendance.seconds_attended + EXCLUDED.seconds_attended,
    joined_at = least(attendance.joined_at, EXCLUDED.joined_at),
    left_at = EXCLUDED.left_at
"""


class Scripts:
    def __init__(self, ctx: WorkerContext) -> None:
        r = ctx.redis
        self.join = r.register_script(_JOIN_LUA)
        self.leave = r.register_script(_LEAVE_LUA)
        self.finalize = r.register_script(_FINALIZE_LUA)
        self.checkpoint = r.register_script(_CHECKPOINT_LUA)
        self.due = DueQueue(r)


async def apply_entry(
    ctx: WorkerContext, scripts: Scripts, fields: dict[bytes, bytes], timings: LiveTimings
) -> str:
    """Apply one presence record; returns the script's outcome (for tests and logs)."""
    try:
        entry = streams.PRESENCE.decode(fields)
    except streams.BadEntry:
        metrics.bad_entries.labels("Presence").inc()
        return "ignored"
    room = Room.from_topic(entry.topic)
    user, conn, ts = entry.user, entry.conn, entry.ts
    if room is None or not user or not conn or ts < 0:
        return "ignored"
    script = scripts.join if entry.op is PresenceOp.JOIN else scripts.leave
    outcome = as_text(await script(keys=[room.key("presence")], args=[conn, user, ts, ROOM_TTL_S]))
    now = now_ms()
    if outcome == "new":
        await scripts.due.schedule(room.due_member("pres"), now + timings.presence_coalesce_ms)
        await scripts.due.schedule(room.due_member("ckpt"), now + timings.checkpoint_ms)
    elif outcome == "gone":
        due = ts + timings.presence_grace_ms
        await scripts.due.schedule(room.due_member("leave", user), due, replace=True)
    return outcome


async def _credit(
    ctx: WorkerContext, room: Room, rows: list[tuple[int, int, int | None, int]]
) -> None:
    """Upsert ``(user, joined_ms, left_ms or None, seconds)`` rows of attendance."""
    if not rows or ctx.db is None:
        return
    args = [
        (room.session_id, user, joined, left, seconds, room.cohort_id)
        for user, joined, left, seconds in rows
    ]
    async with ctx.db.acquire() as conn:
        await conn.executemany(_UPSERT, args)


async def finalize(ctx: WorkerContext, room: Room, user: str, timings: LiveTimings) -> None:
    """End ``user``'s stay if the grace ran out without a new join."""
    scripts = Scripts(ctx)
    args: list[str | int] = [user, now_ms(), timings.presence_grace_ms]
    result = await scripts.finalize(keys=[room.key("presence")], args=args)
    if not result:
        return  # back within the grace period
    outcome, left = as_text(result[0]), int(result[1])
    if outcome == "wait":
        await scripts.due.schedule(
            room.due_member("leave", user), left + timings.presence_grace_ms, replace=True
        )
        return
    since, joined = int(result[2]), int(result[3])
    uid = db_id(user)
    if uid is not None:
        seconds = max(0, (left - since) // 1000)
        await _credit(ctx, room, [(uid, joined, left, seconds)])
    await scripts.due.schedule(room.due_member("pres"), now_ms() + timings.presence_coalesce_ms)


async def checkpoint(ctx: WorkerContext, room: Room, timings: LiveTimings) -> None:
    """Credit the open stays of a room; reschedule while anyone is here."""
    scripts = Scripts(ctx)
    args = [now_ms(), timings.presence_grace_ms]
    present, credits, expired = await scripts.checkpoint(keys=[room.key("presence")], args=args)
    rows: list[tuple[int, int, int | None, int]] = []
    for i in range(0, len(credits), 3):
        uid = db_id(as_text(credits[i]))
        if uid is not None:
            rows.append((uid, int(as_text(credits[i + 2])), None, int(credits[i + 1])))
    await _credit(ctx, room, rows)
    for user in expired:  # a finalize that was lost (e.g. a crash): schedule it again
        await scripts.due.schedule(room.due_member("leave", as_text(user)), now_ms())
    if int(present) > 0:
        await scripts.due.schedule(room.due_member("ckpt"), now_ms() + timings.checkpoint_ms)


async def present_users(redis: Any, room: Room) -> list[str]:
    """Who is here (stays in their grace period included), sorted."""
    raw = await redis.hgetall(room.key("presence"))
    users = [as_text(k)[2:] for k in raw if as_text(k).startswith("h:")]
    return sorted(users, key=lambda u: (len(u), u))


async def publish_presence(ctx: WorkerContext, room: Room) -> None:
    users = await present_users(ctx.redis, room)
    await publish_events(
        ctx,
        [
            (
                room.staff_topic,
                "presence",
                {"session_id": room.session_id, "users": users, "count": len(users)},
            ),
            (room.topic, "presence.count", {"session_id": room.session_id, "count": len(users)}),
        ],
    )


async def run_presence(ctx: WorkerContext) -> None:
    """Consume the presence stream until cancelled (see the module docstring)."""
    scripts = Scripts(ctx)
    reader = GroupReader(
        ctx.redis,
        keys.PRESENCE_GROUP,
        ctx.consumer,
        [keys.PRESENCE_STREAM],
        # From the start of the stream (not its end, like the command group): joins appended
        # before the first worker started still count.
        start_id="0",
        claim_idle_ms=ctx.settings.job_claim_idle_ms,
        name="presence",
    )
    backoff = Backoff()
    while True:
        batch = await reader.next_batch(500)
        try:
            for delivery in batch:
                await apply_entry(ctx, scripts, delivery.fields, TIMINGS[0])
            await reader.ack(keys.PRESENCE_STREAM, *(d.id for d in batch))
            backoff.reset()
        except (redis.exceptions.RedisError, OSError, asyncpg.PostgresError) as exc:
            # Unacknowledged: the batch is reclaimed after job_claim_idle_ms and applied again
            # (the scripts are idempotent).
            log.warning("presence consumer: %s", exc)
            await backoff.wait()
