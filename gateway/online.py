"""Who is online in each cohort: every gateway's live connections, leased in Redis.

A user is *online in a cohort* while at least one of their WebSocket or SSE connections, on any
gateway, claims the cohort (as a member or as staff). The hub calls :meth:`OnlineWriter.up`
when a connection claims cohorts no other connection of its user on this gateway claims, and
:meth:`OnlineWriter.down` when the last connection claiming a cohort ends; both only queue,
and one writer task (:meth:`OnlineWriter.run`) applies the queue to Redis, so the hot path
never waits on Redis.

**Leases.** Each cohort has one sorted set (``keys.online_key``): members ``<user>@<gateway>``,
scored by when the lease ends (ms). Every gateway renews the leases of its users every
:data:`RENEW_S` for :data:`LEASE_S`, so a gateway that crashes (no ``down`` ever sent) stops
listing its users within :data:`LEASE_S`. Readers count only unexpired members
(:func:`read_online`), so the answer is right even before anyone sweeps.

**Changes.** Beside the set, a hash (``keys.online_count_key``) counts each user's unexpired
members, so one Lua script (:data:`APPLY_LUA`) adds, removes and sweeps expired members in time
proportional to the change, never to the cohort: a user *comes* when their count goes from 0
to 1 and *goes* when it drops to 0. When anyone came or went, the script increments the
cohort's version (same hash tag) and the writer publishes ``online`` ``{cohort_id, version,
online: [ids], offline: [ids], count}`` on ``staff:{cohort}``: the change, not the list, so a
storm of connections to a 20,000-member cohort costs no more per event than to a small one.
The version orders the changes however the publishes of two gateways interleave: a client
applies version N + 1 on top of N, ignores what is not newer than what it has, and reloads the
list (the dashboard route returns it with its version) when it sees a gap. Expired leases of a
crashed gateway are swept by every other gateway's renewal round, for the cohorts in
``keys.ONLINE_INDEX`` (cohorts that had someone online). Changes are applied at most every
:data:`COALESCE_S`, so a burst of connections makes one event per cohort and round.

Contract: best effort like attendance. When Redis is down the queued changes are kept (the
newest per user wins) and retried with the next round; the leases lapse meanwhile, so an
outage longer than :data:`LEASE_S` shows people offline until the next renewal.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import msgspec
import redis.asyncio as aioredis
from prometheus_client import Counter

from config import keys, redisconn
from config.topics import staff_topic
from gateway import metrics
from gateway.auth import Claims
from gateway.publish import Publisher

log = logging.getLogger("lectern.gateway.online")

#: How long a lease lasts, and how often a gateway renews its users' leases.
LEASE_S = 30.0
RENEW_S = 10.0
#: Changes queued within this long of the first are applied (and published) together.
COALESCE_S = 0.1
#: Script calls sent at once in a round, and the most changes one call applies.
CONCURRENCY = 64
MAX_OPS = 1000
EVENT = "online"


class Online(msgspec.Struct, kw_only=True, gc=False):
    """Data of ``online`` on ``staff:{cohort}`` (listed in workers/events.py's registry; the
    gateway defines it because the gateway publishes it)."""

    cohort_id: int
    version: int
    #: Who came and who went since version - 1.
    online: list[int]
    offline: list[int]
    count: int


_ID = re.compile(r"[0-9]{1,18}")

failures = Counter(
    "lectern_gateway_online_failures_total",
    "Rounds of who-is-online changes or lease renewals that Redis refused (retried next round).",
    registry=metrics.registry,
)

# KEYS: the cohort's lease set, its per-user counts, its version. ARGV: now (ms), lease end (ms),
# then ops ("+member" / "-member"). Returns {version (0 when nobody came or went), count,
# n, the n users who came..., the users who went...}: each user's state at the end.
APPLY_LUA = """
local set, cnt, ver = KEYS[1], KEYS[2], KEYS[3]
local now, until_ms = tonumber(ARGV[1]), ARGV[2]
local touched, order = {}, {}
local function user_of(m) return string.match(m, '^([^@]*)@') end
local function touch(u)
  if not touched[u] then touched[u] = true; order[#order + 1] = u end
end
local function gone(m)
  local u = user_of(m)
  if not u then return end
  if redis.call('HINCRBY', cnt, u, -1) <= 0 then redis.call('HDEL', cnt, u); touch(u) end
end
for _, m in ipairs(redis.call('ZRANGEBYSCORE', set, '-inf', '(' .. ARGV[1], 'LIMIT', 0, 1000)) do
  redis.call('ZREM', set, m)
  gone(m)
end
for i = 3, #ARGV do
  local op, m = string.sub(ARGV[i], 1, 1), string.sub(ARGV[i], 2)
  if op == '+' then
    local u = user_of(m)
    if redis.call('ZADD', set, until_ms, m) == 1 and u then
      if redis.call('HINCRBY', cnt, u, 1) == 1 then touch(u) end
    end
  elseif redis.call('ZREM', set, m) == 1 then
    gone(m)
  end
end
if redis.call('ZCARD', set) > 0 then
  local ttl = math.floor(tonumber(until_ms) - now) + 1000
  redis.call('PEXPIRE', set, ttl)
  redis.call('PEXPIRE', cnt, ttl)
end
if #order == 0 then return {0, redis.call('HLEN', cnt), 0} end
local v = redis.call('INCR', ver)
redis.call('EXPIRE', ver, 86400 * 30)
local on, off = {}, {}
for _, u in ipairs(order) do
  if redis.call('HEXISTS', cnt, u) == 1 then on[#on + 1] = u else off[#off + 1] = u end
end
local out = {v, redis.call('HLEN', cnt), #on}
for _, u in ipairs(on) do out[#out + 1] = u end
for _, u in ipairs(off) do out[#out + 1] = u end
return out
"""

# KEYS: the cohort's lease set, its version. ARGV: now (ms). Returns {version, users...}.
READ_LUA = """
local seen, out = {}, {tonumber(redis.call('GET', KEYS[2]) or '0')}
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')) do
  local u = string.match(m, '^([^@]*)@')
  if u and not seen[u] then seen[u] = true; out[#out + 1] = u end
end
return out
"""


def cohorts_of(claims: Claims) -> frozenset[str]:
    """The cohorts a connection counts in (members and staff alike)."""
    return claims.cohorts | claims.staff


def _counted(user: str, cohorts: frozenset[str]) -> list[str]:
    """The cohorts to lease for ``user``: none for a token that names no database user (a
    diagnostic or test token), and only database cohort ids."""
    if not _ID.fullmatch(user):
        return []
    return [c for c in cohorts if _ID.fullmatch(c)]


def _ids(raw: list[Any]) -> list[int]:
    texts = (u.decode() if isinstance(u, bytes) else str(u) for u in raw)
    return sorted(int(u) for u in texts if _ID.fullmatch(u))


def _decode(reply: list[Any]) -> tuple[int, list[int]]:
    return int(reply[0]), _ids(reply[1:])


def change_event(cohort: str, reply: list[Any]) -> Online | None:
    """The ``online`` event for an :data:`APPLY_LUA` reply; None when nobody came or went."""
    version, count, n = int(reply[0]), int(reply[1]), int(reply[2])
    if not version:
        return None
    came, went = _ids(reply[3 : 3 + n]), _ids(reply[3 + n :])
    return Online(cohort_id=int(cohort), version=version, online=came, offline=went, count=count)


async def read_online(redis: aioredis.Redis, cohort: int | str) -> tuple[int, list[int]]:
    """``(version, user ids)`` online in ``cohort`` now (unexpired leases only)."""
    cohort = str(cohort)
    script = redis.register_script(READ_LUA)  # EVALSHA: the script is sent once per server
    reply = await script(
        keys=[keys.online_key(cohort), keys.online_version_key(cohort)],
        args=[int(time.time() * 1000)],
    )
    return _decode(reply)


class OnlineWriter:
    """This gateway's side of the cohort presence (see the module docstring)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        publisher: Publisher,
        gateway_id: str,
        local: Callable[[], dict[str, frozenset[str]]],
        *,
        lease_s: float = LEASE_S,
        renew_s: float = RENEW_S,
    ) -> None:
        self.redis = redis
        self.publisher = publisher
        self.gateway_id = gateway_id
        #: Every user connected here now and their cohorts (for the renewals).
        self._local = local
        self.lease_s = lease_s
        self.renew_s = renew_s
        #: (user, cohort) -> True for up, False for down: the newest change of each.
        self._queue: dict[tuple[str, str], bool] = {}
        self._wake = asyncio.Event()
        self._apply = redis.register_script(APPLY_LUA)

    def up(self, user: str, cohorts: frozenset[str]) -> None:
        """``user`` is online here in ``cohorts`` (their first connection claiming them)."""
        self._put(user, cohorts, True)

    def down(self, user: str, cohorts: frozenset[str]) -> None:
        """``user`` is no longer online here in ``cohorts`` (no connection claims them)."""
        self._put(user, cohorts, False)

    def _put(self, user: str, cohorts: frozenset[str], online: bool) -> None:
        for cohort in _counted(user, cohorts):
            self._queue[(user, cohort)] = online
            self._wake.set()

    async def flush(self) -> None:
        """Apply the queued ups and downs (kept for the next round if Redis refuses)."""
        batch, self._queue = self._queue, {}
        ops: dict[str, list[str]] = {}
        for (user, cohort), online in batch.items():
            ops.setdefault(cohort, []).append(f"{'+' if online else '-'}{user}@{self.gateway_id}")
        try:
            await self._run(ops)
        except redisconn.ERRORS as exc:
            for key, change in batch.items():
                self._queue.setdefault(key, change)  # a newer change of the same wins
            failures.inc()
            log.warning("online presence not written: %s", exc)

    async def renew(self) -> None:
        """Renew the leases of everyone connected here, and sweep the cohorts of the index
        (a crashed gateway's users lapse there)."""
        ops: dict[str, list[str]] = {}
        for user, cohorts in self._local().items():
            for cohort in _counted(user, cohorts):
                ops.setdefault(cohort, []).append(f"+{user}@{self.gateway_id}")
        for raw in await self.redis.smembers(keys.ONLINE_INDEX):
            ops.setdefault(raw.decode() if isinstance(raw, bytes) else str(raw), [])
        await self._run(ops)

    async def _run(self, ops: dict[str, list[str]]) -> None:
        if not ops:
            return
        now = int(time.time() * 1000)
        until = now + int(self.lease_s * 1000)
        adds = {c for c, o in ops.items() if any(x.startswith("+") for x in o)}
        if adds:
            await self.redis.sadd(keys.ONLINE_INDEX, *adds)
        # A cohort with many users here goes in several calls, each short for Redis.
        items = [
            (cohort, cohort_ops[i : i + MAX_OPS])
            for cohort, cohort_ops in ops.items()
            for i in range(0, max(1, len(cohort_ops)), MAX_OPS)
        ]
        replies: list[Any] = []
        for start in range(0, len(items), CONCURRENCY):
            replies += await asyncio.gather(
                *(
                    self._apply(
                        keys=[
                            keys.online_key(cohort),
                            keys.online_count_key(cohort),
                            keys.online_version_key(cohort),
                        ],
                        args=[now, until, *cohort_ops],
                    )
                    for cohort, cohort_ops in items[start : start + CONCURRENCY]
                )
            )
        events: list[tuple[str, str, Online]] = []
        idle: list[str] = []
        for (cohort, _), reply in zip(items, replies, strict=True):
            data = change_event(cohort, reply)
            if data is not None:
                events.append((staff_topic(cohort), EVENT, data))
            if not int(reply[1]) and cohort not in adds:
                idle.append(cohort)
        if idle:  # a concurrent first arrival re-adds its cohort at its next renewal at worst
            await self.redis.srem(keys.ONLINE_INDEX, *idle)
        if events:  # a cohort's changes in version order (its chunks may run in any order)
            events.sort(key=lambda e: e[2].version)
            await self.publisher.publish_many(events)

    async def run(self) -> None:
        """Apply changes at most every ``COALESCE_S`` and renew every ``renew_s``; until
        cancelled."""
        loop = asyncio.get_running_loop()
        next_renew = loop.time()
        while True:
            timeout = max(0.0, next_renew - loop.time())
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns when the wake-up
                # and a cancel land in the same loop turn, losing the cancel, and the gateway's
                # cleanup then waited for this task forever.
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
                await asyncio.sleep(COALESCE_S)  # the rest of a burst joins this round
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.flush()
                if loop.time() >= next_renew:
                    next_renew = loop.time() + self.renew_s
                    await self.renew()
            except redisconn.ERRORS as exc:
                failures.inc()
                log.warning("online presence renewal failed: %s", exc)
