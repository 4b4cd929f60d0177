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
* **Resume without gap or duplicate** (:func:`replay`). A subscription with a cursor is
  registered *before* its history is read; live events that arrive during the read are held
  for that connection and topic, then written after the replayed ones, minus those the replay
  already covered; events the history read saw before the bus did are dropped when the bus
  brings them. A cursor older than the topic's floor (trimmed history) gets a ``reset`` instead.
* **No silence after a bus loss** (:func:`recover`): every locally subscribed topic is read
  again from history, or its subscribers get ``reset``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import msgspec
import redis.asyncio as aioredis

from config import keys, redisconn
from gateway import metrics, protocol
from gateway.connection import Conn
from gateway.fanout import FanOut
from gateway.protocol import CloseCode, ErrorCode
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
        self._tails: dict[str, tuple[set[Conn], asyncio.Task[str]]] = {}

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

    async def tail(self, topic: str) -> str:
        """The newest event ID in ``topic``'s history (``EMPTY_CURSOR`` when there is none)."""
        key = keys.history_key(topic, self._shards)
        async with self._slots:
            last: Any = await self._redis.xrevrange(key, count=1)
        return last[0][0].decode() if last else protocol.EMPTY_CURSOR

    async def shared_tail(self, topic: str, subscribers: set[Conn]) -> str:
        """:meth:`tail`, with one Redis read for every subscription that starts at the tail
        while it is in flight (a connect storm into a topic costs one read, not one each).

        ``subscribers`` is the fan-out's set of the topic's local subscribers, which the caller
        is already in. A read is shared only while that same set lives, i.e. while the topic
        has been subscribed here without a break since the read began: the bus then tracks
        every event dispatched since (``FanOut.last_ids``), so a joiner never takes a tail that
        an event it did not get has overtaken. (An event dispatched while nobody was
        subscribed is tracked nowhere; the fan-out replaces the set after such a break.)"""
        entry = self._tails.get(topic)
        if entry is not None and entry[0] is subscribers:
            metrics.history_reads.labels("shared").inc()
            return await asyncio.shield(entry[1])
        metrics.history_reads.labels("redis").inc()
        task = asyncio.get_running_loop().create_task(self.tail(topic))
        self._tails[topic] = (subscribers, task)
        task.add_done_callback(lambda t: self._tail_finished(topic, t))
        return await asyncio.shield(task)

    def _tail_finished(self, topic: str, task: asyncio.Task[str]) -> None:
        entry = self._tails.get(topic)
        if entry is not None and entry[1] is task:
            del self._tails[topic]
        if not task.cancelled() and task.exception() is not None:
            log.debug("tail read of %s failed: %r", topic, task.exception())

    async def holds(self, topic: str, event_id: str) -> bool:
        """Whether ``topic``'s history still holds ``event_id``."""
        key = keys.history_key(topic, self._shards)
        return bool(await self._redis.xrange(key, min=event_id, max=event_id, count=1))


async def replay(
    reader: HistoryReader, conn: Conn, topic: str, cursor: str, ref: str | None, quiet: bool
) -> None:
    """Write ``topic``'s events after ``cursor`` to ``conn`` (subscribed already, its live
    events held meanwhile), or ``reset``; ``quiet`` skips the ``subscribed`` ack."""
    try:
        recs, reset = await reader.read(topic, cursor)
    except redisconn.ERRORS:
        if not conn.closed:
            conn.send(
                protocol.Error(ErrorCode.UNAVAILABLE.value, "history unavailable", ref, topic)
            )
            conn.close(CloseCode.SERVER_RESTART, "history unavailable, reconnect")
        return
    if conn.closed or topic not in conn.topics:
        return
    if reset:
        metrics.resumes.labels("reset").inc()
        # Later SSE cursors carry the position of the reset, so that a reconnect resumes
        # from there: not the stale one (another reset), nor an empty slot (which starts
        # live and silently skips what is published while the client is away).
        try:
            position = await reader.tail(topic)
        except redisconn.ERRORS:
            position = cursor  # another reset on reconnect, never a gap
        if conn.closed or topic not in conn.topics:
            return
        conn.topics[topic] = position
        conn.send(protocol.Reset(topic))
        if not quiet:
            # The sub's ref still gets its answer; the reset says what it means.
            conn.send(protocol.Subscribed(topic, ref, 0))
        conn.deliver_replayed(topic, [], position)
    else:
        metrics.resumes.labels("recovered").inc()
        if not quiet:
            conn.send(protocol.Subscribed(topic, ref, len(recs)))
        conn.deliver_replayed(topic, recs, cursor)


async def start_at_tails(
    reader: HistoryReader,
    fanout: FanOut,
    conn: Conn,
    topics: list[str],
    ref: str | None,
    quiet: bool,
) -> None:
    """Start ``topics`` (subscribed already without a cursor, their live events held
    meanwhile) after their current tails: ack each with its tail, in order, then write its
    held events newer than it. Without Redis they start live (acks without a tail)."""
    try:
        tails: list[str | msgspec.UnsetType] = list(
            await asyncio.gather(*(_tail(reader, fanout, t) for t in topics))
        )
    except redisconn.ERRORS:
        tails = [msgspec.UNSET] * len(topics)
    for topic, tail in zip(topics, tails, strict=True):
        if conn.closed:
            return
        if topic not in conn.topics:
            continue
        if tail == protocol.EMPTY_CURSOR:
            _seen_empty(fanout, topic)
        if tail:
            conn.topics[topic] = tail
        if not quiet:
            conn.send(protocol.Subscribed(topic, ref, 0, tail))
        conn.deliver_replayed(topic, [], tail or "")


async def _tail(reader: HistoryReader, fanout: FanOut, topic: str) -> str:
    subscribers = fanout.topics.get(topic)
    return await (
        reader.tail(topic) if subscribers is None else reader.shared_tail(topic, subscribers)
    )


def _seen_empty(fanout: FanOut, topic: str) -> None:
    """A read begun while ``topic`` was subscribed here without a break until now (the
    connection still is; see :meth:`HistoryReader.shared_tail`) found the history empty: while
    nothing is dispatched here, later subscriptions start at ``0-0`` without a read
    (``FanOut.known_tail``)."""
    if topic not in fanout.last_ids:
        fanout.empty.add(topic)


async def recover(reader: HistoryReader, fanout: FanOut, since_ms: int) -> None:
    """After losing the bus: replay every locally subscribed topic from its history.

    Topics that had dispatched nothing yet resume from ``since_ms`` (the last bus position);
    a topic whose history no longer reaches back, or no longer holds the last event
    delivered (lost in a failover), gets ``reset`` on every subscriber, never silence.
    """
    for topic in list(fanout.topics):
        last = fanout.last_ids.get(topic)
        after = last or f"{since_ms}-0"
        recs, reset = await reader.read(topic, after)
        if reset and last is not None:
            for conn in list(fanout.topics.get(topic, ())):
                conn.send(protocol.Reset(topic, "gateway_fell_behind"))
        elif last is not None and not await reader.holds(topic, last):
            # The last event delivered here is gone from the history without having been
            # trimmed: a Redis failover lost it (asynchronous replication) or a Redis without
            # persistence restarted. The subscribers saw an event that no longer exists, and
            # the new IDs may not be newer than it: reset them, and accept any ID from now.
            metrics.bus_errors.inc()
            log.warning("event %s of %s lost from its history; resetting", last, topic)
            fanout.last_ids.pop(topic, None)
            fanout.empty.discard(topic)
            for conn in list(fanout.topics.get(topic, ())):
                conn.send(protocol.Reset(topic, "history_lost"))
            if recs:
                fanout.dispatch(recs)
        elif recs:
            fanout.dispatch(recs)


def _behind(cursor: str, floor: str) -> bool:
    """Whether events after ``cursor`` were trimmed (``floor`` is the newest trimmed ID)."""
    return cursor != floor and not protocol.id_after(cursor, floor)


def _records(topic: str, entries: Any) -> list[Record]:
    return [Record(topic, eid.decode(), f[b"t"].decode(), f[b"d"], f[b"m"]) for eid, f in entries]
