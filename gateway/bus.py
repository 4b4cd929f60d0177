"""The bus reader: blocking ``XREAD``s over every bus shard, this gateway's reply stream, the
revocation stream and the rights stream (gateway/rights.py), feeding the hub.

On a single Redis it is one ``XREAD`` over all of them on one connection. Redis Cluster refuses
an ``XREAD`` whose keys hash to different slots (``CROSSSLOT``, even on one node), so there the
streams are grouped by slot (config/keys.py puts the reply, revocation and rights streams in
bus shards' slots) and each group is one ``XREAD`` on its own connection to the master that
owns the slot: one per node when each master owns one shard (docs/cluster.md).

Guarantees:

* Bus entries are dispatched in stream order per shard; the hub drops anything not newer than
  what it already dispatched per topic, so re-reading never duplicates.
* On a Redis error the reader keeps every connection, reconnects with capped exponential
  backoff, then recovers the gap from the topics' history streams (DESIGN.md section 6) and
  continues from its last bus position.
* Cluster: on ``MOVED``/``ASK`` (resharding, failover) or a lost node, a group refreshes the
  slot map, reconnects to the slot's current master and continues from the last ID it read
  per stream, after the same history recovery.
* Reads are bounded (``bus_read_count`` per shard and call).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, TypeVar, cast

import msgspec
import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import RedisCluster

from config import keys, redisconn, streams
from config.retry import Backoff
from config.settings import Settings
from gateway import metrics, rights
from gateway.hub import Hub
from gateway.record import Record

log = logging.getLogger("lectern.gateway.bus")

BLOCK_MS = 1000

T = TypeVar("T", bound=msgspec.Struct)


def _after(a: bytes, b: bytes) -> bool:
    ams, _, aseq = a.partition(b"-")
    bms, _, bseq = b.partition(b"-")
    return (int(ams), int(aseq)) > (int(bms), int(bseq))


def _decode(codec: streams.Codec[T], fields: dict[bytes, bytes]) -> T | None:
    """The entry, or ``None`` for a malformed one (dropped and counted, never fatal)."""
    try:
        return codec.decode(fields)
    except streams.BadEntry as exc:
        _dropped(exc, codec.type.__name__)
        return None


def _dropped(exc: streams.BadEntry, kind: str) -> None:
    metrics.bad_entries.labels(kind).inc()
    log.warning("%s dropped", exc)


class BusReader:
    def __init__(self, hub: Hub, redis_url: str, settings: Settings) -> None:
        self.hub = hub
        self.redis_url = redis_url
        self.settings = settings
        self.positions: dict[bytes, bytes] = {}
        self.ready = asyncio.Event()
        #: Read groups not reading right now (connecting, or after an error).
        self._down: set[int] = {0}
        self._topology: RedisCluster | None = None
        self._refresh_lock = asyncio.Lock()
        self.reply_key = keys.reply_key(hub.gateway_id, settings.bus_shards).encode()

    @property
    def connected(self) -> bool:
        """Every read group is connected and reading."""
        return not self._down

    def _bus_keys(self) -> list[bytes]:
        return [keys.bus_key(i).encode() for i in range(self.settings.bus_shards)]

    def _streams(self) -> list[bytes]:
        return [
            *self._bus_keys(),
            self.reply_key,
            keys.REVOKE_STREAM.encode(),
            keys.RIGHTS_STREAM.encode(),
        ]

    def groups(self) -> list[list[bytes]]:
        """The streams read together by one ``XREAD``: all of them on a single Redis, those
        of one slot on a cluster."""
        if self._topology is None:
            return [self._streams()]
        by_slot: dict[int, list[bytes]] = {}
        for stream in self._streams():
            by_slot.setdefault(self._topology.keyslot(stream), []).append(stream)
        return [by_slot[slot] for slot in sorted(by_slot)]

    async def _start_positions(self, r: aioredis.Redis) -> None:
        """Start at the current tail of each stream: earlier events are history's business."""
        streams = [*self._bus_keys(), keys.REVOKE_STREAM.encode(), keys.RIGHTS_STREAM.encode()]
        pipe = r.pipeline(transaction=False)
        for key in streams:
            pipe.xrevrange(key, count=1)
        tails = await pipe.execute()
        for key, tail in zip(streams, tails, strict=True):
            self.positions[key] = tail[0][0] if tail else b"0-0"
        self.positions[self.reply_key] = b"0-0"
        await self._load_revoked(r)
        await self._load_lost(r)

    async def _load_revoked(self, r: aioredis.Redis) -> None:
        """Revocations older than our stream position: read once from their keys. Later ones
        arrive on the revocation stream, read from the position taken just before."""
        prefix = keys.REVOKED_PREFIX.encode()
        found = [key async for key in r.scan_iter(match=prefix + b"*", count=1000)]
        if not found:
            return
        pipe = r.pipeline(transaction=False)
        for key in found:
            pipe.ttl(key)
        for key, ttl in zip(found, await pipe.execute(), strict=True):
            if ttl and ttl > 0:
                self.hub.revoke(key[len(prefix) :].decode(), ttl)

    async def _load_lost(self, r: aioredis.Redis) -> None:
        """Removals of rights announced before our stream position, read once from their keys
        (like revocations)."""
        prefix = keys.LOST_RIGHTS_PREFIX.encode()
        found = [key async for key in r.scan_iter(match=prefix + b"*", count=1000)]
        if not found:
            return
        pipe = r.pipeline(transaction=False)
        for key in found:
            pipe.hgetall(key)
        for key, raw in zip(found, await pipe.execute(), strict=True):
            user = key[len(prefix) :].decode()
            for cohort, at_ms in rights.parse_lost(raw).items():
                self.hub.rights_lost(user, cohort, at_ms)

    def _since_ms(self, streams: list[bytes] | None = None) -> int:
        bus = [self.positions[k] for k in self._bus_keys() if streams is None or k in streams]
        return min(int(p.split(b"-")[0]) for p in bus) if bus else 0

    async def run(self) -> None:
        """Take the start positions (retrying until Redis answers), then read every group."""
        if self.settings.redis_cluster:
            client = redisconn.connect(
                self.redis_url, cluster=True, socket_timeout=5, socket_connect_timeout=2
            )
            self._topology = cast(RedisCluster, client)
        else:
            client = aioredis.Redis.from_url(
                self.redis_url, socket_timeout=5, socket_connect_timeout=2
            )
        try:
            backoff = Backoff(jitter=True)
            while True:
                try:
                    await self._start_positions(client)
                    break
                except redisconn.ERRORS as exc:
                    metrics.bus_errors.inc()
                    delay = backoff.next_delay()
                    log.warning("bus start failed (%s); retrying in %.1fs", exc, delay)
                    await asyncio.sleep(delay)
            groups = self.groups()
            self._down = set(range(len(groups)))
            self.ready.set()
            await asyncio.gather(*(self._read_group(i, g) for i, g in enumerate(groups)))
        finally:
            await client.aclose()

    async def _open(self, streams: list[bytes]) -> aioredis.Redis:
        """A dedicated connection for one group's blocking reads: to the single Redis, or to
        the master that owns the group's slot now."""
        if self._topology is None:
            return aioredis.Redis.from_url(
                self.redis_url, socket_timeout=None, socket_connect_timeout=2
            )
        node = self._topology.get_node_from_key(streams[0].decode())
        if node is None:
            raise redis.exceptions.ConnectionError(f"no master owns {streams[0]!r}")
        return aioredis.Redis(
            host=node.host, port=int(node.port), socket_timeout=None, socket_connect_timeout=2
        )

    async def _refresh(self) -> None:
        """Reload the cluster's slot map (after MOVED/ASK or a lost node)."""
        if self._topology is None:
            return
        async with self._refresh_lock:
            with contextlib.suppress(*redisconn.ERRORS):
                await redisconn.refresh(self._topology)

    async def _read_group(self, index: int, group: list[bytes]) -> None:
        backoff = Backoff(jitter=True)
        first = True
        while True:
            try:
                r = await self._open(group)
            except redisconn.ERRORS:
                await backoff.wait()
                await self._refresh()
                continue
            try:
                if not first:
                    await self.hub.recover(self._since_ms(group))
                first = False
                self._down.discard(index)
                backoff.reset()
                await self._loop(r, group)
            except asyncio.CancelledError:
                raise
            except redis.exceptions.AskError as exc:
                # MOVED (a subclass) or ASK: the slot has (or is getting) another master.
                self._down.add(index)
                log.info("bus group %d redirected (%s); following", index, exc)
                await self._refresh()
                await asyncio.sleep(0.05)
            except redisconn.ERRORS as exc:
                self._down.add(index)
                metrics.bus_errors.inc()
                delay = backoff.next_delay()
                log.warning("bus read failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                await self._refresh()
            finally:
                await r.aclose()

    async def _check_trimmed(self, r: aioredis.Redis, streams: list[bytes]) -> None:
        """A full read means this gateway is behind. If a bus shard has been trimmed past our
        position, the entries in between are gone from the bus (not from the histories):
        replay every local topic from its history (deduplicated by event ID)."""
        pipe = r.pipeline(transaction=False)
        for stream in streams:
            pipe.xrange(stream, count=1)
        oldest = await pipe.execute()
        for stream, first in zip(streams, oldest, strict=True):
            if first and _after(first[0][0], self.positions[stream]):
                metrics.bus_errors.inc()
                log.warning("fell behind the bus beyond its retention; replaying histories")
                await self.hub.recover(self._since_ms())
                return

    async def _loop(self, r: aioredis.Redis, group: list[bytes]) -> None:
        hub = self.hub
        reply_key = self.reply_key
        count = self.settings.bus_read_count
        positions = self.positions
        revoke_key = keys.REVOKE_STREAM.encode()
        rights_key = keys.RIGHTS_STREAM.encode()
        lagging: list[bytes] = []
        while True:
            if lagging:
                await self._check_trimmed(r, lagging)
                lagging = []
            wanted = {stream: positions[stream] for stream in group}
            resp: Any = await r.xread(wanted, count=count, block=BLOCK_MS)  # type: ignore[arg-type]
            if not resp:
                continue
            records: list[Record] = []
            for stream, entries in resp:
                positions[stream] = entries[-1][0]
                if len(entries) >= count:
                    lagging.append(stream)
                if stream == reply_key:
                    for _, fields in entries:
                        if (reply := _decode(streams.REPLY, fields)) is not None:
                            hub.commands.on_reply(reply)
                elif stream == revoke_key:
                    for _, fields in entries:
                        if (revocation := _decode(streams.REVOCATION, fields)) is not None:
                            hub.revoke(revocation.sid)
                elif stream == rights_key:
                    for _, fields in entries:
                        if (lost := _decode(streams.RIGHTS_LOST, fields)) is not None:
                            hub.rights_lost(lost.user, lost.cohort, lost.at_ms)
                else:
                    for _, fields in entries:
                        try:
                            e = streams.decode_bus(fields)
                        except streams.BadEntry as exc:
                            _dropped(exc, "BusEntry")
                            continue
                        records.append(Record(e.topic, e.id, e.type, e.json, e.msgpack))
            if records:
                metrics.bus_batch.observe(len(records))
                start = time.perf_counter()
                hub.dispatch(records)
                end = time.perf_counter()
                metrics.fanout_seconds.observe(end - start)
                lag = time.time() - int(records[-1].id.partition("-")[0]) / 1000.0
                metrics.publish_lag_seconds.observe(max(lag, 0.0))
