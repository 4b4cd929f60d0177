"""The one consumer-group reader of the workers' streams (jobs, commands, presence).

:meth:`GroupReader.next_batch` returns the next entries for this consumer, and guarantees:

* **Reclaim first.** Every ``claim_every_s``, entries of any of the streams left pending for
  ``claim_idle_ms`` (their consumer died or hung) are claimed (``XAUTOCLAIM``) before new ones
  are read (``XREADGROUP >``). With ``count_deliveries`` a reclaimed entry carries how often it
  was delivered (``XPENDING``), for callers that give up on entries that keep killing workers.
  An entry deleted (trimmed) while pending is skipped: Redis 7 drops it from the pending list
  when claiming, Redis 6.2 returns it without an ID.
* **Bounded.** At most ``count`` entries are claimed, and at most ``count`` per stream read.
  The read blocks up to ``block_ms`` only when nothing was claimed.
* **Never fails on Redis.** ``NOGROUP`` (the stream or group was deleted, e.g. a flushed Redis)
  re-creates the groups at ``start_id`` and reads again; any other Redis or connection error is
  logged and retried after :class:`config.retry.Backoff`. Only cancellation ends the call.
* **Acknowledging is the caller's** (:meth:`GroupReader.ack`), after the entry's effect is
  done: delivery is at least once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions

from config import redisconn
from config.retry import Backoff

log = logging.getLogger("lectern.workers.consumer")


@dataclass(frozen=True, slots=True)
class Delivery:
    stream: str
    id: bytes
    fields: dict[bytes, bytes]
    #: Times delivered: 1 for a new entry; counted (XPENDING) for a reclaimed one when asked.
    deliveries: int = 1


def _is_error(exc: redis.exceptions.ResponseError, code: str) -> bool:
    """Whether a Redis error reply carries ``code`` (its first word, e.g. ``NOGROUP``)."""
    return str(exc).split(" ", 1)[0] == code


async def ensure_group(client: aioredis.Redis, stream: str, group: str, start_id: str) -> None:
    """Create ``group`` on ``stream`` (and the stream) at ``start_id`` unless it exists."""
    try:
        await client.xgroup_create(stream, group, id=start_id, mkstream=True)
    except redis.exceptions.ResponseError as exc:
        if not _is_error(exc, "BUSYGROUP"):
            raise


class GroupReader:
    """Reads ``streams`` as ``consumer`` of ``group``; see the module docstring."""

    def __init__(
        self,
        client: aioredis.Redis,
        group: str,
        consumer: str,
        streams: Sequence[str],
        *,
        start_id: str,
        claim_idle_ms: int,
        claim_every_s: float | None = None,
        block_ms: int = 1000,
        count_deliveries: bool = False,
        name: str = "stream",
    ) -> None:
        self.redis = client
        self.group = group
        self.consumer = consumer
        self.streams = list(streams)
        self.start_id = start_id
        self.claim_idle_ms = claim_idle_ms
        #: How often to look for abandoned entries (by default, once per ``claim_idle_ms``).
        self.claim_every_s = claim_idle_ms / 1000 if claim_every_s is None else claim_every_s
        self.block_ms = block_ms
        self.count_deliveries = count_deliveries
        self.name = name
        self.backoff = Backoff()
        self._groups_ready = False
        self._last_claim = 0.0

    async def ensure_groups(self) -> None:
        for stream in self.streams:
            await ensure_group(self.redis, stream, self.group, self.start_id)
        self._groups_ready = True

    async def next_batch(self, count: int) -> list[Delivery]:
        """Up to ``count`` entries (reclaimed ones first); may be empty after ``block_ms``."""
        while True:
            try:
                if not self._groups_ready:
                    await self.ensure_groups()
                batch = await self._read(count)
            except redis.exceptions.ResponseError as exc:
                if _is_error(exc, "NOGROUP"):
                    self._groups_ready = False
                    continue
                await self._failed(exc)
            except redisconn.ERRORS as exc:
                await self._failed(exc)
            else:
                self.backoff.reset()
                return batch

    async def ack(self, stream: str, *ids: bytes) -> None:
        if ids:
            await self.redis.xack(stream, self.group, *ids)

    async def _failed(self, exc: Exception) -> None:
        log.warning("%s read failed, retrying: %s", self.name, exc)
        await self.backoff.wait()

    async def _read(self, count: int) -> list[Delivery]:
        batch: list[Delivery] = []
        now = time.monotonic()
        if now - self._last_claim >= self.claim_every_s:
            self._last_claim = now
            batch = await self._reclaim(count)
        if len(batch) >= count:
            return batch
        resp: Any = await self.redis.xreadgroup(
            self.group,
            self.consumer,
            dict.fromkeys(self.streams, ">"),
            count=count - len(batch),
            block=None if batch else self.block_ms,
        )
        for stream, entries in resp or []:
            name = stream.decode() if isinstance(stream, bytes) else stream
            # An entry deleted after it was added to the stream's pending list reads as empty.
            batch.extend(Delivery(name, eid, fields) for eid, fields in entries if fields)
        return batch

    async def _reclaim(self, count: int) -> list[Delivery]:
        found: list[Delivery] = []
        for stream in self.streams:
            if len(found) >= count:
                break
            claimed: Any = await self.redis.xautoclaim(
                stream,
                self.group,
                self.consumer,
                min_idle_time=self.claim_idle_ms,
                count=count - len(found),
            )
            for eid, fields in claimed[1]:
                if eid is None or not fields:
                    continue  # deleted while pending (Redis 6.2 returns it without its ID)
                deliveries = 2
                if self.count_deliveries:
                    info: Any = await self.redis.xpending_range(
                        stream, self.group, min=eid, max=eid, count=1
                    )
                    deliveries = int(info[0]["times_delivered"]) if info else 2
                found.append(Delivery(stream, eid, fields, deliveries))
                log.info(
                    "%s entry reclaimed",
                    self.name,
                    extra={"stream": stream, "entry": eid.decode(), "deliveries": deliveries},
                )
        return found
