"""``publish(topic, type, data)``: the one way any process sends an event to clients.

Contract (DESIGN.md section 3):

* **Atomic.** One Lua script appends the event to the topic's history stream and announces it
  on the topic's bus shard. Either both happen or neither does.
* **Ordered per topic.** The history entry ID is the event ID: unique and increasing within a
  topic. A topic always maps to the same bus shard, so the bus preserves that order.
* **Bounded.** History keeps the newest ``history_maxlen`` events (trimmed exactly, in steps of
  about 10 %, so the cost is amortised) and expires ``history_ttl_s`` after the last publish.
  When events are trimmed, the ID of the newest trimmed one is stored as the topic's *floor*:
  a client whose cursor is older than the floor gets a ``reset``. Bus shards are capped at
  about ``bus_maxlen`` entries (``MAXLEN ~``).
* **Once per token.** A publish may carry an idempotency token (the outbox relay passes the
  outbox row's id): the first publish with it records the event ID for ``publish_once_ttl_s``,
  and a later one with the same token returns that ID and appends nothing, so a relay that
  died between publishing and marking its rows cannot publish them twice.
* **Cluster-legal.** History, floor, once and bus shard keys share the shard's hash tag.
* **Durable on request.** With ``publish_wait_replicas`` > 0 a publish returns once that many
  replicas have the event, or after ``publish_wait_timeout_ms`` with the shortfall counted and
  logged (:mod:`gateway.durable`).
* **Encoded once.** ``data`` is encoded here to JSON and to MessagePack; gateways splice those
  bytes into frames and never decode them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
import redis.asyncio as aioredis

from config import keys, redisconn
from config.settings import Settings
from gateway.durable import Waiter

PUBLISH_LUA = """
if KEYS[4] then
  local prior = redis.call('GET', KEYS[4])
  if prior then return prior end
end
local id = redis.call('XADD', KEYS[1], '*', 't', ARGV[2], 'd', ARGV[3], 'm', ARGV[4])
local maxlen = tonumber(ARGV[5])
local ttl = tonumber(ARGV[6])
local len = redis.call('XLEN', KEYS[1])
if len > maxlen + math.max(1, math.floor(maxlen / 10)) then
  local old = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', len - maxlen)
  redis.call('XTRIM', KEYS[1], 'MAXLEN', maxlen)
  redis.call('SET', KEYS[3], old[#old][1], 'EX', ttl)
elseif redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('EXPIRE', KEYS[3], ttl)
end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*',
  'p', ARGV[1], 'i', id, 't', ARGV[2], 'd', ARGV[3], 'm', ARGV[4])
if KEYS[4] then redis.call('SET', KEYS[4], id, 'EX', ARGV[8]) end
return id
"""

_json = msgspec.json.Encoder()
_msgpack = msgspec.msgpack.Encoder()

MAX_TYPE_LEN = 64


def publish_args(
    settings: Settings, topic: str, type_: str, data: Any, once: str | None = None
) -> tuple[list[str], list[Any]]:
    """The keys and arguments of :data:`PUBLISH_LUA` for one event (for any Redis client,
    sync or async, that runs the script); ``once``: the idempotency token, if any."""
    if not type_ or len(type_) > MAX_TYPE_LEN:
        raise ValueError("event type must be 1-64 characters")
    shard = keys.shard_of(topic, settings.bus_shards)
    key_list = [
        keys.history_key(topic, settings.bus_shards),
        keys.bus_key(shard),
        keys.floor_key(topic, settings.bus_shards),
    ]
    args = [
        topic,
        type_,
        _json.encode(data),
        _msgpack.encode(data),
        settings.history_maxlen,
        settings.history_ttl_s,
        settings.bus_maxlen,
    ]
    if once is not None:
        key_list.append(keys.published_once_key(topic, settings.bus_shards, once))
        args.append(settings.publish_once_ttl_s)
    return key_list, args


class Publisher:
    """Publishes events; one per process, sharing the process's Redis client."""

    def __init__(self, redis: aioredis.Redis, settings: Settings) -> None:
        self._redis = redis
        self._settings = settings
        self._script = redis.register_script(PUBLISH_LUA)
        self.waiter: Waiter | None = None
        if settings.publish_wait_replicas > 0:
            self.waiter = Waiter(
                redis,
                self._script,
                settings.publish_wait_replicas,
                settings.publish_wait_timeout_ms,
            )

    async def publish(self, topic: str, type_: str, data: Any) -> str:
        """Publish one event and return its ID. Raises redis errors when Redis is down."""
        key_list, args = publish_args(self._settings, topic, type_, data)
        if self.waiter is not None:
            (event_id,) = await self.waiter.run([(key_list, args)])
        else:
            event_id = await self._script(keys=key_list, args=args)
        return _id(event_id)

    async def publish_many(
        self, events: Iterable[tuple[str, str, Any]], once: Sequence[str] | None = None
    ) -> list[str]:
        """Publish several events in one round trip; each is atomic on its own, and events of
        the same topic keep the order given. ``once``: an idempotency token per event.

        On a Redis Cluster, whose client refuses scripts in a pipeline, the events of each bus
        shard go one after another (keeping each topic's order) and the shards in parallel."""
        calls = [
            publish_args(self._settings, topic, type_, data, once[i] if once is not None else None)
            for i, (topic, type_, data) in enumerate(events)
        ]
        if not calls:
            return []
        if self.waiter is not None and not redisconn.is_cluster(self._redis):
            return [_id(r) for r in await self.waiter.run(calls)]
        if redisconn.is_cluster(self._redis):
            return await self._publish_per_shard(calls)
        pipe = self._redis.pipeline(transaction=False)
        for key_list, args in calls:
            await self._script(keys=key_list, args=args, client=pipe)
        # The pipeline makes sure the script is loaded (SCRIPT EXISTS) before its EVALSHAs.
        results = await pipe.execute()
        return [r.decode() if isinstance(r, bytes) else str(r) for r in results]

    async def _publish_per_shard(self, calls: list[tuple[list[str], list[Any]]]) -> list[str]:
        results: list[str] = [""] * len(calls)
        by_shard: dict[str, list[int]] = {}
        for i, (key_list, _) in enumerate(calls):
            by_shard.setdefault(key_list[1], []).append(i)  # KEYS[2]: the bus shard

        async def run(indexes: list[int]) -> None:
            if self.waiter is not None:  # one connection to the shard's master, one WAIT
                done = await self.waiter.run([calls[i] for i in indexes])
                for i, event_id in zip(indexes, done, strict=True):
                    results[i] = _id(event_id)
                return
            for i in indexes:
                key_list, args = calls[i]
                results[i] = _id(await self._script(keys=key_list, args=args))

        await asyncio.gather(*(run(indexes) for indexes in by_shard.values()))
        return results


def _id(event_id: Any) -> str:
    return event_id.decode() if isinstance(event_id, bytes) else str(event_id)
