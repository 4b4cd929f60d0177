"""Presence leases: the live-room subscriptions of a gateway that died are closed.

A gateway that crashes sends no presence leaves. So every gateway process holds a lease in
``keys.PRESENCE_LEASES`` (lease id -> last refresh, ms), refreshed every
``presence_lease_interval_s``, and indexes its open subscriptions under it
(``keys.presence_subs_key``; gateway/presence_writer.py). Every worker process runs
:func:`run_presence_leases`, which every interval:

1. **claims** the leases not refreshed for ``presence_lease_grace_s``: one script moves them
   to ``keys.PRESENCE_REAPING``, keeping the last refresh as the score (both keys share the
   ``{presence}`` hash tag), so a lease is claimed once however many workers run;
2. **closes** every subscription indexed under each lease being reaped: a leave dated at the
   lease's last refresh (never before the subscription's own join) goes through
   :func:`workers.attendance.apply`, exactly like a leave from the stream, so the attendance
   grace period follows: a user who reconnected to another gateway meanwhile holds another
   subscription and stays (no leave, no join published), the others leave the people list
   ``presence_grace_ms`` after the last refresh, and their stay ends at the last refresh;
3. forgets the lease once its index is empty.

Guarantees: the subscriptions of a gateway process that stops refreshing are closed within
about grace + interval of its last refresh (plus the attendance grace before the people list
changes); a live gateway is never reaped while it refreshes in time, and one that is reaped
anyway joins again under a new lease (gateway/presence_writer.py). Every step is idempotent: a
worker that dies mid-way leaves the lease in ``PRESENCE_REAPING`` for the next round, and two
workers closing the same lease at once apply each leave once (the leave script ignores a
subscription already closed). Clocks: lease times are the gateways' wall clocks compared
with the workers'; the grace must exceed the clock skew between hosts.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

import msgspec
from prometheus_client import Counter

from config import keys, redisconn, streams
from config.retry import Backoff
from config.streams import Presence, PresenceOp
from workers import attendance, metrics
from workers.context import WorkerContext
from workers.live_rules import LiveTimings
from workers.live_state import TIMINGS, as_text, now_ms

log = logging.getLogger("lectern.workers.presence_leases")

#: Leases claimed per script call; subscriptions read per HSCAN step.
CLAIM_BATCH = 100
SUBS_BATCH = 500

# KEYS: the leases, the leases being reaped. ARGV: the cutoff (ms), the batch size.
_CLAIM_LUA = """
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0,
  tonumber(ARGV[2]))
for i = 1, #lapsed, 2 do
  redis.call('ZREM', KEYS[1], lapsed[i])
  redis.call('ZADD', KEYS[2], lapsed[i + 1], lapsed[i])
end
return #lapsed / 2
"""

reaped = Counter(
    "lectern_worker_presence_leases_reaped_total",
    "Gateway presence leases that lapsed (the gateway died) and whose subscriptions closed.",
    registry=metrics.registry,
)
closed = Counter(
    "lectern_worker_presence_lease_leaves_total",
    "Live-room subscriptions closed because their gateway's presence lease lapsed.",
    registry=metrics.registry,
)


class Reaper:
    def __init__(self, ctx: WorkerContext, grace_s: float) -> None:
        self.redis = ctx.redis
        self.grace_ms = int(grace_s * 1000)
        self.claim = ctx.redis.register_script(_CLAIM_LUA)
        self.scripts = attendance.Scripts(ctx)

    async def reap(self, now: int, timings: LiveTimings) -> int:
        """Claim the leases lapsed at ``now`` (ms) and close the subscriptions of every lease
        being reaped; returns how many subscriptions were closed."""
        while (
            await self.claim(
                keys=[keys.PRESENCE_LEASES, keys.PRESENCE_REAPING],
                args=[now - self.grace_ms, CLAIM_BATCH],
            )
            == CLAIM_BATCH
        ):
            pass
        count = 0
        lapsed = await self.redis.zrange(keys.PRESENCE_REAPING, 0, CLAIM_BATCH - 1, withscores=True)
        for lease, last in cast(list[tuple[bytes, float]], lapsed):
            name = as_text(lease)
            count += await self.close(name, int(last), timings)
            if await self.redis.zrem(keys.PRESENCE_REAPING, name):  # one worker counts it
                reaped.inc()
                log.warning("presence lease %s lapsed: its subscriptions left", name)
        return count

    async def close(self, lease: str, last: int, timings: LiveTimings) -> int:
        """Leave every subscription indexed under ``lease`` as of ``last`` (ms)."""
        index = keys.presence_subs_key(lease)
        count = 0
        cursor = 0
        while True:
            cursor, page = await self.redis.hscan(index, cursor, count=SUBS_BATCH)
            found = cast(dict[bytes, bytes], page)
            for sub, raw in found.items():
                try:
                    held = streams.LEASED_SUB_DECODER.decode(raw)
                except msgspec.DecodeError:
                    metrics.bad_entries.labels("LeasedSub").inc()
                    continue
                at = max(last, held.ts)
                leave = Presence(PresenceOp.LEAVE, held.user, held.topic, as_text(sub), at)
                if await attendance.apply(self.scripts, leave, timings) != "dup":
                    count += 1
            if found:
                await self.redis.hdel(index, *found)
            if int(cursor) == 0:
                break
        closed.inc(count)
        return count


async def run_presence_leases(ctx: WorkerContext) -> None:
    """Reap lapsed gateway leases every ``presence_lease_interval_s`` until cancelled."""
    reaper = Reaper(ctx, ctx.settings.presence_lease_grace_s)
    backoff = Backoff()
    while True:
        try:
            await reaper.reap(now_ms(), TIMINGS[0])
            backoff.reset()
        except redisconn.ERRORS as exc:
            log.warning("presence leases: %s", exc)
            await backoff.wait()
            continue
        await asyncio.sleep(ctx.settings.presence_lease_interval_s)
