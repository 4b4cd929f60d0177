"""The fan-out: which local connections subscribe to which topic, and writing each bus read's
events to them (the hot path).

Guarantees:

* **Per-topic order.** Events of a topic are written to each subscriber in event-ID order:
  live events are dispatched in bus order (which is ID order per topic), and an event not newer
  than the last one dispatched for its topic is dropped, so bus re-reads after a Redis
  reconnect never duplicate.
* **Built once.** Each event's frame is built once per encoding, and the same bytes go to every
  subscriber; several events for one connection from one bus read go out in one write.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from gateway import metrics, protocol
from gateway.connection import Conn
from gateway.metrics import Hot
from gateway.record import Record


class FanOut:
    def __init__(self) -> None:
        self.topics: dict[str, set[Conn]] = {}
        #: Last event ID dispatched per topic with local subscribers.
        self.last_ids: dict[str, str] = {}
        #: Topics with local subscribers whose history was empty when a subscription without a
        #: cursor read it, and that have dispatched nothing since: their tail is ``0-0`` with
        #: no further read (so a crowd joining an idle topic costs one read, not one each).
        self.empty: set[str] = set()
        #: Long-poll requests waiting for any event on their topics.
        self.waiters: dict[str, set[asyncio.Future[None]]] = defaultdict(set)

    def add(self, conn: Conn, topic: str) -> None:
        subs = self.topics.get(topic)
        if subs is None:
            subs = self.topics[topic] = set()
            metrics.topics_gauge.inc()
        subs.add(conn)

    def remove(self, conn: Conn, topic: str) -> None:
        """Drop one subscriber; a topic left without any forgets its last dispatched ID."""
        subs = self.topics.get(topic)
        if subs is not None:
            subs.discard(conn)
            if not subs:
                del self.topics[topic]
                self.last_ids.pop(topic, None)
                self.empty.discard(topic)
                metrics.topics_gauge.dec()

    def known_tail(self, topic: str) -> str | None:
        """Where a subscription to ``topic`` without a cursor starts, when known here without a
        read: the last event dispatched, or ``0-0`` for a topic known to be empty."""
        last = self.last_ids.get(topic)
        return last if last is not None or topic not in self.empty else protocol.EMPTY_CURSOR

    def dispatch(self, records: list[Record]) -> None:
        """Write a bus read's events to their local subscribers (the hot path)."""
        topics = self.topics
        last_ids = self.last_ids
        if self.waiters:
            self._wake_pollers(records)
        fresh: list[tuple[Record, set[Conn]]] = []
        for rec in records:
            subs = topics.get(rec.topic)
            if not subs:
                continue
            last = last_ids.get(rec.topic)
            if last is not None and not protocol.id_after(rec.id, last):
                continue
            last_ids[rec.topic] = rec.id
            fresh.append((rec, subs))
        if not fresh:
            return
        Hot.events_dispatched += len(fresh)
        if len(fresh) == 1:
            rec, subs = fresh[0]
            for conn in subs:
                conn.push(rec)
            Hot.frames_sent += len(subs)
            return
        # Several events: gather each connection's share and write it in one call.
        per_conn: dict[Conn, list[Record]] = {}
        for rec, subs in fresh:
            for conn in subs:
                mine = per_conn.get(conn)
                if mine is None:
                    per_conn[conn] = [rec]
                else:
                    mine.append(rec)
        sent = 0
        for conn, mine in per_conn.items():
            if len(mine) == 1:
                conn.push(mine[0])
            else:
                conn.push_many(mine)
            sent += len(mine)
        Hot.frames_sent += sent

    def _wake_pollers(self, records: list[Record]) -> None:
        for rec in records:
            waiters = self.waiters.get(rec.topic)
            if waiters:
                for fut in waiters:
                    if not fut.done():
                        fut.set_result(None)

    def wake_all(self) -> None:
        """Answer every waiting long-poll now (shutdown)."""
        for waiters in self.waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
