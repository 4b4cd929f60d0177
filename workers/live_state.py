"""Live-room plumbing: the per-room lock, publishing after commit, and the room state kept in
Redis (throttle gates, reaction windows, banner and recording status, the due-work set).

Where things live, and why:

* **Durable room state** (questions, votes, polls, poll votes, chat) is in PostgreSQL and
  changes in a transaction. **Ephemeral room state** (reaction counts of the open window and of
  the session, the broadcast banner, the recording status, who is here) is in Redis under
  ``keys.room_key(kind, cohort, session)``, with a TTL: it means nothing once the room is over.
* **Throttle state is in Redis, not in a worker's memory**, because several worker processes
  consume the command stream and any of them may apply the votes of one poll. A throttled
  update is a member of one sorted set, :data:`DUE_KEY`, scored by the time it is due
  (``kind|cohort|session[|extra]``); every worker process runs
  :func:`workers.live_flush.run_live_flusher`, which pops due members atomically (one Lua
  script: each member goes to exactly one process) and does the work. Adding with ``ZADD NX``
  coalesces: while an update is pending, more changes ride along with it.

Ordering. Commands of one room are applied under a PostgreSQL advisory lock on the session
(:func:`room_lock`), held across *commit and publish*: the events of a room reach its history
stream in the order their transactions committed, so a client never sees a stale vote count
or board order overwrite a newer one, and the late-joiner argument of
``GET /api/v1/sessions/{id}/state`` holds (an event is published only after its change is
visible). The lock is per session, so rooms never wait for each other.

Publishing. The outbox is the path of record of a command's room events: they are inserted
into ``outbox`` in the command's transaction (:func:`record_events`), so they commit with the
change or not at all. Right after commit, still under the room lock, the worker publishes them
itself (:func:`publish_recorded`), command to room event must stay under ~50 ms and the relay
would add a poll interval, with the outbox rows' idempotency tokens (``outbox:<id>``), and
marks them published in the background, off the lock (:func:`mark_later`). A worker that
dies between commit and publish, or whose publish fails, leaves the rows unpublished and the
relay (:mod:`workers.outbox_relay`, polling every second) publishes them with the same
tokens: whichever publishes first wins and the other appends nothing, so each event reaches
Redis exactly once. Events that no command causes (throttled tallies, reaction windows,
presence) go out with :func:`publish_events`, the outbox as a fallback only: they are
recomputed from state that is already durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec
import redis.asyncio as aioredis
import redis.exceptions

from config import keys
from config.topics import live_topic, parse_live, staff_topic
from workers.context import WorkerContext
from workers.due_alarm import ALARMS
from workers.live_rules import DEFAULT_TIMINGS, LiveTimings, db_id
from workers.outbox_write import Addressed, emit_many

log = logging.getLogger("lectern.workers.live")

#: Every throttled or delayed piece of live-room work, scored by when it is due (ms). Global
#: rather than per room so one pop serves every room; ``keys.room_key`` names the rest.
DUE_KEY = keys.ROOM_DUE

#: Room keys in Redis expire this long after their last write.
ROOM_TTL_S = 2 * 24 * 3600

#: How long a publish may take before its events go to the outbox instead.
PUBLISH_TIMEOUT_S = 2.0

#: High bits of the advisory-lock key of a session's room (``"LV"``); the session id fills the
#: low 48 bits. Distinct from the migration lock (api.migrate.LOCK_ID).
LOCK_NAMESPACE = 0x4C56 << 48

#: An event addressed to a topic (``workers.events.to`` builds them).
Event = Addressed

#: The timings in force in this process; tests swap in shorter ones with :func:`configure`.
TIMINGS: list[LiveTimings] = [DEFAULT_TIMINGS]


def configure(timings: LiveTimings) -> None:
    TIMINGS[0] = timings


def now_ms() -> int:
    return int(time.time() * 1000)


def as_text(value: Any) -> str:
    """A Redis reply value as ``str`` (the clients here do not decode responses)."""
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, slots=True)
class Room:
    """A live room: the topic's parts as strings and as row ids."""

    cohort: str
    session: str
    cohort_id: int
    session_id: int

    @classmethod
    def from_topic(cls, topic: str) -> Room | None:
        parsed = parse_live(topic)
        if parsed is None:
            return None
        cohort_id, session_id = db_id(parsed.cohort), db_id(parsed.session)
        if cohort_id is None or session_id is None:
            return None
        return cls(parsed.cohort, parsed.session, cohort_id, session_id)

    @property
    def topic(self) -> str:
        return live_topic(self.cohort, self.session)

    @property
    def staff_topic(self) -> str:
        return staff_topic(self.cohort)

    def key(self, kind: str) -> str:
        return keys.room_key(kind, self.cohort, self.session)

    def due_member(self, kind: str, extra: str = "") -> str:
        member = f"{kind}|{self.cohort}|{self.session}"
        return f"{member}|{extra}" if extra else member


def parse_due_member(member: str) -> tuple[str, Room, str] | None:
    """``(kind, room, extra)`` of a :data:`DUE_KEY` member, else None."""
    parts = member.split("|", 3)
    if len(parts) < 3:
        return None
    room = Room.from_topic(live_topic(parts[1], parts[2]))
    if room is None:
        return None
    return parts[0], room, parts[3] if len(parts) == 4 else ""


# -- the room lock ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def room_lock(conn: asyncpg.Connection, session_id: int) -> AsyncIterator[None]:
    """Hold the session's advisory lock (session-level, so it outlives the transaction and
    covers the publish). asyncpg's pool runs ``pg_advisory_unlock_all()`` when a connection is
    released, so even a cancelled handler cannot leak the lock."""
    key = LOCK_NAMESPACE | session_id
    await conn.execute("SELECT pg_advisory_lock($1)", key)
    try:
        yield
    finally:
        with contextlib.suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            await conn.execute("SELECT pg_advisory_unlock($1)", key)


#: In-process queues per room: session id -> (lock, users). See :func:`locked_room`.
_LOCAL: dict[int, tuple[asyncio.Lock, list[int]]] = {}


@contextlib.asynccontextmanager
async def locked_room(pool: asyncpg.Pool, session_id: int) -> AsyncIterator[asyncpg.Connection]:
    """A connection holding the room's lock. Commands of one room first queue on an
    in-process lock (FIFO, so one process applies them in arrival order), and only the one at
    the head takes a pooled connection and the advisory lock (which orders it against other
    processes). A busy room thus holds at most one pooled connection per process and never
    starves the other rooms of connections."""
    entry = _LOCAL.get(session_id)
    if entry is None:
        entry = _LOCAL[session_id] = (asyncio.Lock(), [0])
    entry[1][0] += 1
    try:
        async with entry[0], pool.acquire() as conn, room_lock(conn, session_id):
            yield conn
    finally:
        entry[1][0] -= 1
        if not entry[1][0]:
            del _LOCAL[session_id]


# -- publishing -------------------------------------------------------------------------------


async def publish_events(
    ctx: WorkerContext, events: Sequence[Event], conn: asyncpg.Connection | None = None
) -> None:
    """Publish ``events`` in order (call after commit); on a Redis failure or timeout, write
    them to the outbox for the relay. Never raises for Redis trouble."""
    if not events:
        return
    try:
        async with asyncio.timeout(PUBLISH_TIMEOUT_S):
            if len(events) == 1:
                await ctx.publisher.publish(*events[0])
            else:
                await ctx.publisher.publish_many(events)
        return
    except (
        redis.exceptions.RedisError,
        redis.exceptions.RedisClusterException,
        OSError,
        TimeoutError,
    ) as exc:
        log.warning("live publish failed, using the outbox: %s", exc)
    try:
        if conn is not None:
            await _to_outbox(conn, events)
        elif ctx.db is not None:
            async with ctx.db.acquire() as own:
                await _to_outbox(own, events)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        log.exception("live events lost: neither Redis nor the outbox took them")


_RECORD_SQL = """
INSERT INTO outbox (topic, type, data)
SELECT topic, type, data::jsonb FROM unnest($1::text[], $2::text[], $3::text[])
    WITH ORDINALITY AS e(topic, type, data, n)
ORDER BY n
RETURNING id
"""

# Rows the relay holds (it is publishing them with the same tokens) are skipped: it marks them.
MARK_SQL = """
UPDATE outbox SET published_at = now() WHERE id IN (
    SELECT id FROM outbox WHERE id = ANY($1::bigint[]) AND published_at IS NULL
    FOR UPDATE SKIP LOCKED)
"""


async def record_events(conn: asyncpg.Connection, events: Sequence[Event]) -> list[int]:
    """Insert ``events`` into the outbox in the caller's transaction, in order, in one round
    trip; their row ids, in the same order (identity values follow the insert order). No
    NOTIFY: the direct publish after commit normally gets there first, and the relay's poll
    catches what it missed."""
    if not events:
        return []
    if not conn.is_in_transaction():
        raise RuntimeError("record_events must run inside the transaction of the change")
    rows = await conn.fetch(
        _RECORD_SQL,
        [topic for topic, _, _ in events],
        [type_ for _, type_, _ in events],
        [_json.encode(data).decode() for _, _, data in events],
    )
    return sorted(row["id"] for row in rows)


async def publish_recorded(ctx: WorkerContext, events: Sequence[Event], ids: Sequence[int]) -> bool:
    """Publish events committed by :func:`record_events` (call right after commit) with their
    rows' tokens; True when they reached Redis (then :func:`mark_later` the rows). On failure
    the rows stay for the relay; never raises for Redis trouble."""
    if not events:
        return False
    try:
        async with asyncio.timeout(PUBLISH_TIMEOUT_S):
            await ctx.publisher.publish_many(events, [f"outbox:{i}" for i in ids])
    except (
        redis.exceptions.RedisError,
        redis.exceptions.RedisClusterException,
        OSError,
        TimeoutError,
    ) as exc:
        log.warning("live publish failed, the outbox relay will publish: %s", exc)
        return False
    return True


#: Mark tasks in flight (strong references: the loop keeps only weak ones).
_MARKING: set[asyncio.Task[None]] = set()


def mark_later(pool: asyncpg.Pool, ids: Sequence[int]) -> None:
    """Mark published outbox rows, in the background and off the room lock. Not durable on
    its own (``synchronous_commit`` off: no WAL flush to wait for): a mark lost in a crash only
    makes the relay publish those rows again with the same tokens, which appends nothing."""
    if ids:
        task = asyncio.create_task(_mark(pool, list(ids)))
        _MARKING.add(task)
        task.add_done_callback(_MARKING.discard)


async def _mark(pool: asyncpg.Pool, ids: list[int]) -> None:
    try:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL synchronous_commit TO off")
            await conn.execute(MARK_SQL, ids)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        # Published but not marked: the relay publishes them again, appending nothing.
        log.warning("live events published but not marked: %s", exc)


async def _to_outbox(conn: asyncpg.Connection, events: Sequence[Event]) -> None:
    async with conn.transaction():
        await emit_many(conn, events)


# -- due work ---------------------------------------------------------------------------------

_POP_DUE_LUA = """
local items = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
if #items > 0 then redis.call('ZREM', KEYS[1], unpack(items)) end
return items
"""


class DueQueue:
    """The :data:`DUE_KEY` sorted set: schedule work, pop what is due."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._pop = redis.register_script(_POP_DUE_LUA)

    async def schedule(self, member: str, due_ms: int, *, replace: bool = False) -> bool:
        """Add ``member`` due at ``due_ms``; unless ``replace``, keep an earlier entry (NX).
        This process's flushers wake at ``due_ms`` (:class:`workers.due_alarm.DueAlarm`)."""
        added = await self.redis.zadd(DUE_KEY, {member: due_ms}, nx=not replace)
        if added or replace:
            for alarm in ALARMS:
                alarm.add(due_ms)
        return bool(added)

    async def pop(self, now: int, limit: int = 100) -> list[str]:
        """Remove and return the members due by ``now``: each goes to exactly one caller."""
        items = await self._pop(keys=[DUE_KEY], args=[now, limit])
        return [as_text(m) for m in items]


# -- throttled tallies -----------------------------------------------------------------------

# One hash per poll: ``ver`` counts vote changes, ``pub`` is the ``ver`` the last published
# tally reflected, ``until`` is when the next tally may go out (ms, worker clock).
_OFFER_LUA = """
local now, interval = tonumber(ARGV[1]), tonumber(ARGV[2])
local ver = redis.call('HINCRBY', KEYS[1], 'ver', 1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
local open_at = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
if now >= open_at then
  redis.call('HSET', KEYS[1], 'until', string.format('%d', now + interval), 'pub', ver)
  return -1
end
return open_at - now
"""

_TRAIL_LUA = """
local now, interval = tonumber(ARGV[1]), tonumber(ARGV[2])
local ver = redis.call('HGET', KEYS[1], 'ver')
if not ver or ver == redis.call('HGET', KEYS[1], 'pub') then return 0 end
local open_at = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
if now < open_at then return open_at - now end
redis.call('HSET', KEYS[1], 'until', string.format('%d', now + interval), 'pub', ver)
return -1
"""


class TallyThrottle:
    """At most one tally per poll per interval, leading and trailing edge: the
    :class:`workers.tallies.Throttle` contract, with its state in Redis so that every worker
    process shares it. Both calls run under the room lock, so "the tally published at version
    V" really covers every vote change up to V.

    * :meth:`offer` (after each vote change): True means "publish the tally now"; False means
      a trailing publish is scheduled for when the interval ends (coalesced in the due set).
    * :meth:`trailing` (the flusher, when that is due): True means "publish now". False
      means an earlier publish already covered every change (no redundant tally), or one went
      out less than an interval ago (a leading one that overtook this trailing one): then the
      trailing publish is scheduled again for the end of that interval.
    """

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self.due = DueQueue(redis)
        self._offer = redis.register_script(_OFFER_LUA)
        self._trail = redis.register_script(_TRAIL_LUA)

    async def offer(self, room: Room, poll_id: int, interval_ms: int) -> bool:
        now = now_ms()
        args = [now, interval_ms, ROOM_TTL_S]
        wait = int(await self._offer(keys=[tally_key(room, poll_id)], args=args))
        if wait < 0:
            return True
        await self.due.schedule(room.due_member("tally", str(poll_id)), now + max(wait, 1))
        return False

    async def trailing(self, room: Room, poll_id: int, interval_ms: int) -> bool:
        now = now_ms()
        wait = int(await self._trail(keys=[tally_key(room, poll_id)], args=[now, interval_ms]))
        if wait > 0:
            await self.due.schedule(room.due_member("tally", str(poll_id)), now + wait)
        return wait < 0


def tally_key(room: Room, poll_id: int) -> str:
    return f"{room.key('tally')}:{poll_id}"


# -- rate limits ------------------------------------------------------------------------------


async def within_rate(
    redis: aioredis.Redis, scope: str, ident: str, limit: int, window_s: int
) -> bool:
    """Fixed-window counter: True while ``ident`` made at most ``limit`` calls this window."""
    window = int(time.time()) // window_s
    key = keys.ratelimit_key(scope, f"{ident}:{window}")
    pipe = redis.pipeline(transaction=False)
    pipe.incr(key)
    pipe.expire(key, window_s + 1)
    count, _ = await pipe.execute()
    return int(count) <= limit


# -- reactions --------------------------------------------------------------------------------


async def add_reaction(
    redis: aioredis.Redis, room: Room, emoji: str, window_ms: int, now: int
) -> None:
    """Count one reaction in the room's open window and schedule the window's flush at its
    (aligned) end. Count first, schedule second: a flush that races in between takes the count
    and the new schedule finds nothing, never the reverse."""
    window_end = now - now % window_ms + window_ms
    pipe = redis.pipeline(transaction=False)
    pipe.hincrby(room.key("react"), emoji, 1)
    pipe.expire(room.key("react"), ROOM_TTL_S)
    pipe.zadd(DUE_KEY, {room.due_member("react"): window_end}, nx=True)
    await pipe.execute()


async def take_reactions(redis: aioredis.Redis, room: Room) -> dict[str, int]:
    """Atomically read and clear the open window; add it to the session's totals."""
    pipe = redis.pipeline(transaction=True)
    pipe.hgetall(room.key("react"))
    pipe.delete(room.key("react"))
    raw, _ = await pipe.execute()
    counts = {as_text(k): int(v) for k, v in raw.items()}
    if counts:
        pipe = redis.pipeline(transaction=False)
        for emoji, n in counts.items():
            pipe.hincrby(room.key("reacttotal"), emoji, n)
        pipe.expire(room.key("reacttotal"), ROOM_TTL_S)
        await pipe.execute()
    return dict(sorted(counts.items()))


async def reaction_totals(redis: aioredis.Redis, room: Room) -> dict[str, int]:
    raw = await redis.hgetall(room.key("reacttotal"))
    return dict(sorted((as_text(k), int(v)) for k, v in raw.items()))


# -- banner and recording status --------------------------------------------------------------

_meta_decoder = msgspec.json.Decoder(dict[str, Any])
_json = msgspec.json.Encoder()


async def set_meta(redis: aioredis.Redis, room: Room, field: str, value: dict[str, Any]) -> None:
    pipe = redis.pipeline(transaction=False)
    pipe.hset(room.key("meta"), field, _json.encode(value))
    pipe.expire(room.key("meta"), ROOM_TTL_S)
    await pipe.execute()


async def clear_meta(redis: aioredis.Redis, room: Room, field: str) -> bool:
    """Remove one field; True when it was set (so a second clear publishes nothing)."""
    return bool(await redis.hdel(room.key("meta"), field))


async def get_meta(redis: aioredis.Redis, room: Room) -> dict[str, dict[str, Any]]:
    """``{"banner": {...}, "recording": {...}}`` (each absent when never set)."""
    raw = await redis.hgetall(room.key("meta"))
    return {as_text(k): _meta_decoder.decode(v) for k, v in raw.items()}
