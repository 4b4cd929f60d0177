"""Reading a topic's history for resumes (WebSocket/SSE subscriptions with a cursor, long-polls).

Guarantees:

* **No gap.** A read returns every event of the topic newer than the cursor, oldest first, or
  says ``reset`` (the cursor is older than what the history keeps). It pages with ``COUNT`` and
  reads the floor (the newest trimmed ID) *after* each page in the same pipeline, so a trim that
  overtakes the reader between two pages is seen as a reset, never skipped over.
* **Coalesced.** Reads of the same topic from the same cursor that overlap in time share one
  set of Redis round trips and the same :class:`Record` objects, so after a gateway restart a
  room whose members all resume from the last event costs one read, and each replayed event's
  frame is built once for all of them (see ``gateway.record``). A caller registers its live
  subscription before it reads, so the read it *starts* cannot miss an event that the bus
  dispatched before the registration. A read it *joins* may have left Redis before that: when
  the bus had already dispatched something newer than the shared result's end, the joiner
  reads on from there (``dispatched``: the newest event ID dispatched per topic).
* **Bounded.** At most ``concurrency`` reads hit Redis at once per process; the rest wait.
  A waiter that goes away (its connection closed) does not cancel the read others share.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis

from config import keys
from gateway import metrics, protocol
from gateway.record import Record

log = logging.getLogger("lectern.gateway.history")

#: Entries per XRANGE: a resume of a full default history (1,000 events) takes 4 round trips,
#: and no single reply holds the Redis event loop for long.
PAGE = 256

Result = tuple[list[Record], bool]


class HistoryReader:
    def __init__(
        self,
        redis: aioredis.Redis,
        bus_shards: int,
        concurrency: int,
        dispatched: Callable[[str], str | None],
        page: int = PAGE,
    ) -> None:
        self._redis = redis
        self._dispatched = dispatched
        self._shards = bus_shards
        self._page = page
        self._slots = asyncio.Semaphore(concurrency)
        self._inflight: dict[tuple[str, str], asyncio.Task[Result]] = {}

    async def read(self, topic: str, after: str) -> Result:
        """Events of ``topic`` newer than ``after``, oldest first, and whether ``after`` is older
        than the history kept (the caller must send ``reset``). The list may be shared with
        other readers: do not modify it."""
        key = (topic, after)
        task = self._inflight.get(key)
        if task is None:
            metrics.history_reads.labels("redis").inc()
            task = asyncio.get_running_loop().create_task(self._read(topic, after))
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._finished(key, t))
            return await asyncio.shield(task)
        metrics.history_reads.labels("shared").inc()
        mark = self._dispatched(topic)
        recs, reset = await asyncio.shield(task)
        end = recs[-1].id if recs else after
        if reset or mark is None or not protocol.id_after(mark, end):
            return recs, reset
        more, reset = await self.read(topic, end)
        return ([], True) if reset else (recs + more, False)

    def _finished(self, key: tuple[str, str], task: asyncio.Task[Result]) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        if not task.cancelled() and task.exception() is not None:
            # Every waiter that is still there got it; this only marks it as seen.
            log.debug("history read of %s failed: %r", key[0], task.exception())

    async def _read(self, topic: str, after: str) -> Result:
        history = keys.history_key(topic, self._shards)
        floor_key = keys.floor_key(topic, self._shards)
        recs: list[Record] = []
        last = after
        async with self._slots:
            while True:
                pipe = self._redis.pipeline(transaction=False)
                pipe.xrange(history, min=f"({last}", count=self._page)
                pipe.get(floor_key)
                pipe.exists(history)
                entries, floor, exists = await pipe.execute()
                if not exists:
                    # Nothing was ever published, or the history expired: only a client that
                    # has seen nothing yet (the cursor of an empty topic) has missed nothing.
                    return [], bool(recs) or after != protocol.EMPTY_CURSOR
                if floor and _behind(last, floor.decode()):
                    return [], True
                recs.extend(_records(topic, entries))
                if len(entries) < self._page:
                    return recs, False
                last = recs[-1].id


def _behind(cursor: str, floor: str) -> bool:
    """Whether events after ``cursor`` were trimmed (``floor`` is the newest trimmed ID)."""
    return cursor != floor and not protocol.id_after(cursor, floor)


def _records(topic: str, entries: Any) -> list[Record]:
    return [Record(topic, eid.decode(), f[b"t"].decode(), f[b"d"], f[b"m"]) for eid, f in entries]
