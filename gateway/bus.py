"""The bus reader: one blocking ``XREAD`` over every bus shard, this gateway's reply stream, the
revocation stream and the rights stream (gateway/rights.py), feeding the hub.

Guarantees:

* Bus entries are dispatched in stream order per shard; the hub drops anything not newer than
  what it already dispatched per topic, so re-reading never duplicates.
* On a Redis error the reader keeps every connection, reconnects with capped exponential
  backoff, then recovers the gap from the topics' history streams (DESIGN.md section 6) and
  continues from its last bus position.
* Reads are bounded (``bus_read_count`` per shard and call).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, TypeVar

import msgspec
import redis.asyncio as aioredis
import redis.exceptions

from config import keys, streams
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


def _decode(codec: streams.EntryCodec[T], fields: dict[bytes, bytes]) -> T | None:
    """The entry, or ``None`` for a malformed one (dropped and counted, never fatal)."""
    try:
        return codec.decode(fields)
    except streams.BadEntry as exc:
        metrics.bad_entries.labels(codec.type.__name__).inc()
        log.warning("%s dropped", exc)
        return None


class BusReader:
    def __init__(self, hub: Hub, redis_url: str, settings: Settings) -> None:
        self.hub = hub
        self.redis_url = redis_url
        self.settings = settings
        self.positions: dict[bytes, bytes] = {}
        self.ready = asyncio.Event()
        self.connected = False

    def _bus_keys(self) -> list[bytes]:
        return [keys.bus_key(i).encode() for i in range(self.settings.bus_shards)]

    async def _start_positions(self, r: aioredis.Redis) -> None:
        """Start at the current tail of each stream: earlier events are history's business."""
        streams = [*self._bus_keys(), keys.REVOKE_STREAM.encode(), keys.RIGHTS_STREAM.encode()]
        pipe = r.pipeline(transaction=False)
        for key in streams:
            pipe.xrevrange(key, count=1)
        tails = await pipe.execute()
        for key, tail in zip(streams, tails, strict=True):
            self.positions[key] = tail[0][0] if tail else b"0-0"
        self.positions[keys.reply_key(self.hub.gateway_id).encode()] = b"0-0"
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

    def _since_ms(self) -> int:
        bus = [self.positions[k] for k in self._bus_keys()]
        return min(int(p.split(b"-")[0]) for p in bus) if bus else 0

    async def run(self) -> None:
        backoff = Backoff(jitter=True)
        first = True
        reply_key = keys.reply_key(self.hub.gateway_id).encode()
        while True:
            r = aioredis.Redis.from_url(
                self.redis_url, socket_timeout=None, socket_connect_timeout=2
            )
            try:
                if first:
                    await self._start_positions(r)
                    first = False
                else:
                    await self.hub.recover(self._since_ms())
                self.connected = True
                self.ready.set()
                backoff.reset()
                await self._loop(r, reply_key)
            except asyncio.CancelledError:
                raise
            except (redis.exceptions.RedisError, OSError) as exc:
                self.connected = False
                metrics.bus_errors.inc()
                delay = backoff.next_delay()
                log.warning("bus read failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
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

    async def _loop(self, r: aioredis.Redis, reply_key: bytes) -> None:
        hub = self.hub
        count = self.settings.bus_read_count
        positions = self.positions
        revoke_key = keys.REVOKE_STREAM.encode()
        rights_key = keys.RIGHTS_STREAM.encode()
        lagging: list[bytes] = []
        while True:
            if lagging:
                await self._check_trimmed(r, lagging)
                lagging = []
            resp: Any = await r.xread(positions, count=count, block=BLOCK_MS)  # type: ignore[arg-type]
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
                        if (e := _decode(streams.BUS, fields)) is not None:
                            records.append(Record(e.topic, e.id, e.type, e.json, e.msgpack))
            if records:
                metrics.bus_batch.observe(len(records))
                start = time.perf_counter()
                hub.dispatch(records)
                end = time.perf_counter()
                metrics.fanout_seconds.observe(end - start)
                lag = time.time() - int(records[-1].id.partition("-")[0]) / 1000.0
                metrics.publish_lag_seconds.observe(max(lag, 0.0))
