"""Attendance: who is in a live room, and how long each user stayed.

Input: the gateways append :class:`config.streams.Presence` entries to
``keys.PRESENCE_STREAM`` whenever a connection's subscription to a ``live:`` topic starts or
ends (unsubscribe or disconnect). ``conn`` names one subscription (connection id and a
sequence number), so a join and a leave pair up even when a connection re-subscribes.

:func:`run_presence` consumes it in the ``keys.PRESENCE_GROUP`` group, so every worker process
takes a share. The state therefore lives in Redis, in three keys per room
(``keys.presence_key(part, cohort, session)``, one hash tag, :func:`presence_keys`), changed
only by the Lua scripts below, which make every step atomic and idempotent:

* ``state`` (hash): ``c:{conn}`` -> user: open subscriptions; ``n:{user}``: the user's open
  subscriptions; ``j:{user}``: when the stay began; ``g:{user}``: when the user's last
  subscription ended, while the grace period runs;
* ``here`` (hash): user -> the start of the not yet credited part of the stay (ms), for every
  user here or in grace;
* ``gone`` (sorted set): subscriptions that ended, scored by the leave time, so that a join
  arriving after its own leave, or redelivered, is ignored. Each leave prunes the ones older
  than :data:`TOMBSTONE_MS` and keeps at most :data:`MAX_TOMBSTONES`.

Bounded: every field of ``state`` and ``here`` is removed when its subscription or stay ends,
so subscribe/unsubscribe churn never grows them, and ``gone`` is pruned as above; a checkpoint
credits :data:`CHECKPOINT_BATCH` users per script call (``HSCAN`` over ``here``), never the
whole room inside one script.

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

A gateway that crashes sends no leaves: its presence lease lapses and the workers close its
subscriptions as of the lease's last refresh (workers/presence_leases.py), through
:func:`apply` like any leave, so the grace period and credit rules above hold for them too.

What can go wrong: a worker that dies between a Redis step and its database
write can lose or repeat one slice of credit.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import redis.exceptions

from config import keys, streams
from config.retry import Backoff
from config.streams import Presence, PresenceOp
from workers import events, metrics
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

# KEYS: the room's state hash, its "here" hash, its tombstones (see the module docstring).
_TOUCH = """
local function touch(ttl)
  for i = 1, #KEYS do redis.call('EXPIRE', KEYS[i], ttl) end
end
"""

_JOIN_LUA = (
    _TOUCH
    + """
local h, here, gone = KEYS[1], KEYS[2], KEYS[3]
local conn, user, ts = ARGV[1], ARGV[2], ARGV[3]
local outcome = 'new'
if redis.call('ZSCORE', gone, conn) or redis.call('HSETNX', h, 'c:' .. conn, user) == 0 then
  outcome = 'dup'
elseif redis.call('HINCRBY', h, 'n:' .. user, 1) > 1 then
  outcome = 'more'
elseif redis.call('HDEL', h, 'g:' .. user) == 1 then
  outcome = 'back'
else
  redis.call('HSET', here, user, ts)
  redis.call('HSET', h, 'j:' .. user, ts)
end
touch(ARGV[4])
return outcome
"""
)

# The tombstone of an ended subscription is kept ARGV[5] ms (and at most ARGV[6] per room):
# long enough for any redelivery of its join to find it.
_LEAVE_LUA = (
    _TOUCH
    + """
local h, gone = KEYS[1], KEYS[2]
local conn, user, ts = ARGV[1], ARGV[2], tonumber(ARGV[3])
redis.call('ZADD', gone, ts, conn)
redis.call('ZREMRANGEBYSCORE', gone, '-inf', '(' .. string.format('%d', ts - tonumber(ARGV[5])))
local extra = redis.call('ZCARD', gone) - tonumber(ARGV[6])
if extra > 0 then redis.call('ZREMRANGEBYRANK', gone, 0, extra - 1) end
local outcome = 'gone'
if redis.call('HDEL', h, 'c:' .. conn) == 0 then
  outcome = 'dup'
elseif redis.call('HINCRBY', h, 'n:' .. user, -1) > 0 then
  outcome = 'more'
else
  redis.call('HDEL', h, 'n:' .. user)
  redis.call('HSET', h, 'g:' .. user, ARGV[3])
end
touch(ARGV[4])
return outcome
"""
)

# Ends a stay whose grace ran out: {'done', left, since, joined}, {'wait', left} or nil.
_FINALIZE_LUA = """
local h, here = KEYS[1], KEYS[2]
local user, now, grace = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local left = redis.call('HGET', h, 'g:' .. user)
if not left then return nil end
if now < tonumber(left) + grace then return {'wait', left} end
local since = redis.call('HGET', here, user) or left
local joined = redis.call('HGET', h, 'j:' .. user) or since
redis.call('HDEL', h, 'g:' .. user, 'j:' .. user)
redis.call('HDEL', here, user)
return {'done', left, since, joined}
"""

# Credits the open stays of the users ARGV[3..] up to now (or to their leave time, in grace):
# returns {{user, seconds, joined, ...}, {users whose grace ran out}}. The checkpoint calls it
# for one batch of the "here" hash at a time, so no call walks a whole room.
_CREDIT_LUA = """
local h, here = KEYS[1], KEYS[2]
local now, grace = tonumber(ARGV[1]), tonumber(ARGV[2])
local credits, expired = {}, {}
for i = 3, #ARGV do
  local user = ARGV[i]
  local since = tonumber(redis.call('HGET', here, user))
  if since then
    local stop = now
    local left = redis.call('HGET', h, 'g:' .. user)
    if left then
      stop = math.min(now, tonumber(left))
      if now >= tonumber(left) + grace then table.insert(expired, user) end
    end
    if stop - since >= 1000 then
      local secs = math.floor((stop - since) / 1000)
      redis.call('HSET', here, user, string.format('%d', since + secs * 1000))
      table.insert(credits, user)
      table.insert(credits, secs)
      table.insert(credits, redis.call('HGET', h, 'j:' .. user) or string.format('%d', since))
    end
  end
end
return {credits, expired}
"""

#: How long (ms) and how many ended subscriptions a room remembers, to ignore late joins.
TOMBSTONE_MS = 10 * 60 * 1000
MAX_TOMBSTONES = 10_000
#: Users credited per script call by a checkpoint.
CHECKPOINT_BATCH = 500


def presence_keys(room: Room) -> tuple[str, str, str]:
    """The room's state hash, "here" hash and tombstones (one hash tag: one script slot)."""
    return tuple(  # type: ignore[return-value]
        keys.presence_key(part, room.cohort, room.session) for part in ("state", "here", "gone")
    )


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
        self.credit = r.register_script(_CREDIT_LUA)
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
    return await apply(scripts, entry, timings)


async def apply(scripts: Scripts, entry: Presence, timings: LiveTimings) -> str:
    """Apply one join or leave (from the stream, or synthesized for a dead gateway's lease by
    workers/presence_leases.py): idempotent, returns the script's outcome."""
    room = Room.from_topic(entry.topic)
    user, conn, ts = entry.user, entry.conn, entry.ts
    if room is None or not user or not conn or ts < 0:
        return "ignored"
    state, here, gone = presence_keys(room)
    if entry.op is PresenceOp.JOIN:
        result = await scripts.join(keys=[state, here, gone], args=[conn, user, ts, ROOM_TTL_S])
    else:
        args: list[str | int] = [conn, user, ts, ROOM_TTL_S, TOMBSTONE_MS, MAX_TOMBSTONES]
        result = await scripts.leave(keys=[state, gone], args=args)
    outcome = as_text(result)
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
    result = await scripts.finalize(keys=list(presence_keys(room)[:2]), args=args)
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


async def checkpoint(
    ctx: WorkerContext, room: Room, timings: LiveTimings, scripts: Scripts | None = None
) -> None:
    """Credit the open stays of a room, at most :data:`CHECKPOINT_BATCH` users per script call
    (so a large room never holds Redis for long); reschedule while anyone is here."""
    scripts = scripts or Scripts(ctx)
    state, here, _ = presence_keys(room)
    now = now_ms()
    cursor = 0
    while True:
        cursor, found = await ctx.redis.hscan(here, cursor, count=CHECKPOINT_BATCH)
        names = [as_text(user) for user in found]
        for at in range(0, len(names), CHECKPOINT_BATCH):
            users = names[at : at + CHECKPOINT_BATCH]
            args: list[str | int] = [now, timings.presence_grace_ms, *users]
            credits, expired = await scripts.credit(keys=[state, here], args=args)
            rows: list[tuple[int, int, int | None, int]] = []
            for i in range(0, len(credits), 3):
                uid = db_id(as_text(credits[i]))
                if uid is not None:
                    rows.append((uid, int(as_text(credits[i + 2])), None, int(credits[i + 1])))
            await _credit(ctx, room, rows)
            for user in expired:  # a finalize that was lost (e.g. a crash): schedule it again
                await scripts.due.schedule(room.due_member("leave", as_text(user)), now_ms())
        if int(cursor) == 0:
            break
    if await ctx.redis.hlen(here) > 0:
        await scripts.due.schedule(room.due_member("ckpt"), now_ms() + timings.checkpoint_ms)


async def present_users(redis: Any, room: Room) -> list[str]:
    """Who is here (stays in their grace period included), sorted."""
    users = [as_text(user) for user in await redis.hkeys(presence_keys(room)[1])]
    return sorted(users, key=lambda u: (len(u), u))


async def publish_presence(ctx: WorkerContext, room: Room) -> None:
    users = await present_users(ctx.redis, room)
    await publish_events(
        ctx,
        [
            events.to(
                room.staff_topic,
                events.Presence(session_id=room.session_id, users=users, count=len(users)),
            ),
            events.to(
                room.topic, events.PresenceCount(session_id=room.session_id, count=len(users))
            ),
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
        except (
            redis.exceptions.RedisError,
            redis.exceptions.RedisClusterException,
            OSError,
            asyncpg.PostgresError,
        ) as exc:
            # Unacknowledged: the batch is reclaimed after job_claim_idle_ms and applied again
            # (the scripts are idempotent).
            log.warning("presence consumer: %s", exc)
            await backoff.wait()
