"""One gateway process's registry of connections and topics, and the fan-out.

Guarantees:

* **Per-topic order.** Events of a topic are written to each subscriber in event-ID order:
  live events are dispatched in bus order (which is ID order per topic), and an event not newer
  than the last one dispatched for its topic is dropped, so bus re-reads after a Redis
  reconnect never duplicate.
* **Resume without gap or duplicate.** A subscription with a cursor is registered *before* its
  history is read; live events that arrive during the read are held for that connection and
  topic, then written after the replayed ones, minus those the replay already covered; events
  the history read saw before the bus did are dropped when the bus brings them. A cursor older
  than the topic's floor (trimmed history) gets a ``reset`` instead.
* **Built once.** Each event's frame is built once per encoding, and the same bytes go to every
  subscriber; several events for one connection from one bus read go out in one write.
* **One timer.** Pings, SSE heartbeats, token expiry, command timeouts and slow-close aborts all
  run from a single shared tick, never from per-connection timers or tasks.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis

from config import keys, redisconn
from config.settings import Settings
from config.topics import LIVE_PREFIX, authorize
from gateway import metrics, protocol, rights
from gateway.auth import Claims
from gateway.command_relay import CommandRouter
from gateway.connection import Conn
from gateway.history import HistoryReader
from gateway.metrics import Hot
from gateway.presence_writer import PresenceWriter
from gateway.protocol import CloseCode, ErrorCode
from gateway.record import Record
from gateway.sessions import OpenSessions
from gateway.sseconn import SseConn
from gateway.wsconn import WsConn
from gateway.wscore import Limits

log = logging.getLogger("lectern.gateway.hub")

#: Ticks (seconds) between full collections of the frozen generation.
GC_RECYCLE_TICKS = 600


class Hub:
    def __init__(self, settings: Settings, redis: aioredis.Redis, gateway_id: str) -> None:
        self.settings = settings
        self.ws_limits = Limits.from_settings(settings)
        self.redis = redis
        self.gateway_id = gateway_id
        self.commands = CommandRouter(self, redis)
        #: Joins and leaves of live rooms, for attendance (written by its own task).
        self.presence = PresenceWriter(redis)
        #: Which live sessions may be subscribed (gateway/sessions.py).
        self.sessions = OpenSessions(redis)
        self._ids = itertools.count(1)
        self.topics: dict[str, set[Conn]] = {}
        #: Last event ID dispatched per topic with local subscribers.
        self.last_ids: dict[str, str] = {}
        self.history = HistoryReader(
            redis, settings.bus_shards, settings.history_read_concurrency, self.last_ids.get
        )
        self.ws: set[WsConn] = set()
        self.sse: set[SseConn] = set()
        self.by_sid: dict[str, set[Conn]] = defaultdict(set)
        self.by_user: dict[str, int] = defaultdict(int)
        #: The open connections of each user (for removals of their rights).
        self.user_conns: dict[str, set[Conn]] = {}
        self.expiry: dict[int, set[Conn]] = defaultdict(set)
        self._closing: dict[Conn, float] = {}
        #: Long-poll requests waiting for any event on their topics.
        self.waiters: dict[str, set[asyncio.Future[None]]] = defaultdict(set)
        self.accepting = True
        self._ticks = 0
        #: Revoked login sessions -> when the revocation lapses (wall clock).
        self.revoked: dict[str, float] = {}
        #: user -> {cohort: when it was taken away (ms)} (gateway/rights.py).
        self.lost: dict[str, dict[str, int]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._gc_ticks = 0

    def next_conn_id(self) -> int:
        return next(self._ids)

    # -- registration --------------------------------------------------------------------------

    def register(self, conn: Conn) -> None:
        """Count a connection in (from its ``connection_made``; ``Conn._end`` undoes it)."""
        claims = conn.claims
        if isinstance(conn, WsConn):
            self.ws.add(conn)
        elif isinstance(conn, SseConn):
            self.sse.add(conn)
        if claims.sid:
            self.by_sid[claims.sid].add(conn)
        self.by_user[claims.sub] += 1
        self.user_conns.setdefault(claims.sub, set()).add(conn)
        self.expiry[claims.exp].add(conn)
        metrics.connects.labels(conn.transport_name).inc()
        metrics.connections.labels(conn.transport_name).inc()

    def unregister(self, conn: Conn, code: int) -> None:
        """Forget a connection everywhere (idempotent per connection: called once on close)."""
        if isinstance(conn, WsConn):
            if conn not in self.ws:
                return
            self.ws.discard(conn)
            self.commands.forget(conn.conn_id)
        elif isinstance(conn, SseConn):
            if conn not in self.sse:
                return
            self.sse.discard(conn)
        claims = conn.claims
        for topic in list(conn.topics):
            self.unsubscribe(conn, topic)
        conn.replay = None
        if claims.sid:
            peers = self.by_sid.get(claims.sid)
            if peers is not None:
                peers.discard(conn)
                if not peers:
                    del self.by_sid[claims.sid]
        mine = self.user_conns.get(claims.sub)
        if mine is not None:
            mine.discard(conn)
            if not mine:
                del self.user_conns[claims.sub]
        left = self.by_user[claims.sub] - 1
        if left > 0:
            self.by_user[claims.sub] = left
        else:
            self.by_user.pop(claims.sub, None)
        bucket = self.expiry.get(claims.exp)
        if bucket is not None:
            bucket.discard(conn)
            if not bucket:
                del self.expiry[claims.exp]
        metrics.connections.labels(conn.transport_name).dec()
        metrics.disconnects.labels(conn.transport_name, str(int(code))).inc()

    def closing(self, conn: Conn, deadline: float) -> None:
        """Keep an ended connection's socket until ``deadline`` (monotonic), for its last
        bytes or the close handshake; then the tick calls its ``expire``."""
        self._closing[conn] = deadline

    def user_connections(self, user: str) -> int:
        return self.by_user.get(user, 0)

    # -- subscriptions -------------------------------------------------------------------------

    def subscribe(
        self,
        conn: Conn,
        topics: Iterable[str],
        cursors: dict[str, str],
        ref: str | None,
        *,
        quiet: bool = False,
    ) -> list[str]:
        """Authorize and add each topic; replay from history where a cursor is given.

        A denied topic gets an ``error`` naming it and does not affect the others. A ``live:``
        topic must name an open session (gateway/sessions.py); when that is not known locally,
        the topic is subscribed (or refused) once Redis has answered. Returns the topics
        accepted now. ``quiet`` skips the ``subscribed`` acks (SSE has no use for them).
        """
        accepted: list[str] = []
        if conn.closed:
            return accepted  # an ended connection is in no map, never again
        unknown: list[str] = []
        for topic in topics:
            denial = authorize(conn.claims, topic)
            if denial is not None:
                metrics.bad_frames.labels(denial.code).inc()
                conn.send(protocol.Error(denial.code, f"{topic}: {denial.reason}", ref, topic))
                continue
            if topic.startswith(LIVE_PREFIX) and topic not in conn.topics:
                is_open = self.sessions.known(topic)
                if is_open is None:
                    unknown.append(topic)
                    continue
                if not is_open:
                    self._no_session(conn, topic, ref)
                    continue
            if topic not in conn.topics and len(conn.topics) >= self.settings.max_topics_per_conn:
                conn.send(
                    protocol.Error(
                        ErrorCode.TOO_MANY_TOPICS.value,
                        f"at most {self.settings.max_topics_per_conn} topics per connection",
                        ref,
                        topic,
                    )
                )
                continue
            cursor = cursors.get(topic, "")
            if cursor and not protocol.is_stream_id(cursor):
                conn.send(protocol.Error(ErrorCode.INVALID.value, "malformed cursor", ref, topic))
                continue
            fresh = topic not in conn.topics
            conn.topics[topic] = cursor
            subs = self.topics.get(topic)
            if subs is None:
                subs = self.topics[topic] = set()
                metrics.topics_gauge.inc()
            subs.add(conn)
            accepted.append(topic)
            if fresh and topic.startswith(LIVE_PREFIX):
                self.presence.joined(conn, topic)
            if cursor:
                if conn.replay is None:
                    conn.replay = {}
                conn.replay[topic] = []
                self._spawn(self._replay(conn, topic, cursor, ref, quiet))
            elif not quiet:
                # Acked even when already subscribed: a client waiting on its ref gets an answer.
                conn.send(protocol.Subscribed(topic, ref))
        if unknown:
            self._spawn(self._subscribe_if_open(conn, unknown, cursors, ref, quiet))
        return accepted

    def _no_session(self, conn: Conn, topic: str, ref: str | None) -> None:
        code = ErrorCode.FORBIDDEN.value
        metrics.bad_frames.labels(code).inc()
        conn.send(protocol.Error(code, f"{topic}: no such live session", ref, topic))

    async def _subscribe_if_open(
        self, conn: Conn, topics: list[str], cursors: dict[str, str], ref: str | None, quiet: bool
    ) -> None:
        try:
            found = await self.sessions.check(topics)
        except redisconn.ERRORS:
            for topic in topics:
                if not conn.closed:
                    message = "cannot check the session now; retry"
                    conn.send(protocol.Error(ErrorCode.UNAVAILABLE.value, message, ref, topic))
            return
        if conn.closed:
            return
        for topic in topics:
            if not found[topic]:
                self._no_session(conn, topic, ref)
        # Now known locally: subscribe() takes them at once.
        self.subscribe(conn, [t for t in topics if found[t]], cursors, ref, quiet=quiet)

    def unsubscribe(self, conn: Conn, topic: str) -> None:
        if conn.topics.pop(topic, None) is not None and topic.startswith(LIVE_PREFIX):
            self.presence.left(conn, topic)
        if conn.replay is not None:
            conn.replay.pop(topic, None)
            if not conn.replay:
                conn.replay = None
        subs = self.topics.get(topic)
        if subs is not None:
            subs.discard(conn)
            if not subs:
                del self.topics[topic]
                self.last_ids.pop(topic, None)
                metrics.topics_gauge.dec()

    async def read_history(self, topic: str, after: str) -> tuple[list[Record], bool]:
        """See :meth:`gateway.history.HistoryReader.read` (coalesced, paged, bounded)."""
        return await self.history.read(topic, after)

    async def _tail(self, topic: str) -> str:
        """The newest event ID in ``topic``'s history (``EMPTY_CURSOR`` when there is none)."""
        key = keys.history_key(topic, self.settings.bus_shards)
        last: Any = await self.redis.xrevrange(key, count=1)
        return last[0][0].decode() if last else protocol.EMPTY_CURSOR

    async def _replay(
        self, conn: Conn, topic: str, cursor: str, ref: str | None, quiet: bool
    ) -> None:
        try:
            recs, reset = await self.read_history(topic, cursor)
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
                position = await self._tail(topic)
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

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- fan-out -------------------------------------------------------------------------------

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

    async def recover(self, since_ms: int) -> None:
        """After losing the bus: replay every locally subscribed topic from its history.

        Topics that had dispatched nothing yet resume from ``since_ms`` (the last bus position);
        a topic whose history no longer reaches back, or no longer holds the last event
        delivered (lost in a failover), gets ``reset`` on every subscriber, never silence.
        """
        for topic in list(self.topics):
            last = self.last_ids.get(topic)
            after = last or f"{since_ms}-0"
            recs, reset = await self.read_history(topic, after)
            if reset and last is not None:
                for conn in list(self.topics.get(topic, ())):
                    conn.send(protocol.Reset(topic, "gateway_fell_behind"))
            elif last is not None and not await self._still_in_history(topic, last):
                # The last event delivered here is gone from the history without having been
                # trimmed: a Redis failover lost it (asynchronous replication) or a Redis without
                # persistence restarted. The subscribers saw an event that no longer exists, and
                # the new IDs may not be newer than it: reset them, and accept any ID from now.
                metrics.bus_errors.inc()
                log.warning("event %s of %s lost from its history; resetting", last, topic)
                self.last_ids.pop(topic, None)
                for conn in list(self.topics.get(topic, ())):
                    conn.send(protocol.Reset(topic, "history_lost"))
                if recs:
                    self.dispatch(recs)
            elif recs:
                self.dispatch(recs)

    async def _still_in_history(self, topic: str, event_id: str) -> bool:
        key = keys.history_key(topic, self.settings.bus_shards)
        return bool(await self.redis.xrange(key, min=event_id, max=event_id, count=1))

    # -- revocation and expiry -----------------------------------------------------------------

    def revoke(self, sid: str, ttl_s: float | None = None) -> None:
        """Close the session's connections and refuse it from now on, for ``ttl_s`` (by
        default as long as any access token of it can live)."""
        if ttl_s is None:
            ttl_s = self.settings.access_token_ttl_s + 60
        self.revoked[sid] = time.time() + ttl_s
        for conn in list(self.by_sid.get(sid, ())):
            conn.close(CloseCode.SESSION_REVOKED)

    def rights_lost(self, user: str, cohort: str, at_ms: int) -> None:
        """``user`` lost every right in ``cohort`` at ``at_ms``: close their connections whose
        token still claims it (4003: fetch a new token, reconnect) and admit later ones
        without it (:meth:`restrict`) until every token issued before has expired."""
        entry = self.lost.setdefault(user, {})
        entry[cohort] = max(at_ms, entry.get(cohort, 0))
        for conn in list(self.user_conns.get(user, ())):
            if rights.stale_cohorts(conn.claims, {cohort: at_ms}):
                conn.close(CloseCode.AUTH_CHANGED)

    def restrict(self, claims: Claims) -> Claims:
        """``claims`` minus the cohorts its user lost after the token was issued."""
        lost = self.lost.get(claims.sub)
        return rights.restrict(claims, lost) if lost else claims

    def is_revoked(self, sid: str) -> bool:
        """Local answer, kept current by the revocation stream: no Redis call per connect."""
        until = self.revoked.get(sid)
        return until is not None and until > time.time()

    def tick(self) -> None:
        """The one shared timer (every second): expiry, pings, heartbeats, timeouts."""
        now = time.monotonic()
        wall = int(time.time())
        for exp in [e for e in self.expiry if e <= wall]:
            for conn in list(self.expiry.get(exp, ())):
                conn.close(CloseCode.TOKEN_EXPIRED)
            self.expiry.pop(exp, None)
        # Pings and heartbeats are spread over their period: each tick serves the connections
        # of one slot (by connection id), so tens of thousands of writes (and the pongs they
        # bring back) never land in one burst in front of a broadcast.
        self._ticks += 1
        period = max(1, round(self.settings.ping_interval_s))
        slot = self._ticks % period
        for ws in [c for c in self.ws if c.id % period == slot]:
            ws.ping()
        period = max(1, round(self.settings.sse_heartbeat_s))
        slot = self._ticks % period
        for sse in self.sse:
            if sse.id % period == slot:
                sse.write(protocol.SSE_HEARTBEAT)
        self.commands.expire(now)
        if self._ticks % 60 == 0 and self.revoked:
            lapsed = [sid for sid, until in self.revoked.items() if until <= wall]
            for sid in lapsed:
                del self.revoked[sid]
        if self._ticks % 60 == 0 and self.lost:
            self._lapse_lost(wall)
        if self._closing:
            for conn in [c for c, t in self._closing.items() if t <= now]:
                del self._closing[conn]
                conn.expire(now)
            for conn in [c for c in self._closing if c.transport is None]:
                del self._closing[conn]
        if self.settings.gc_freeze:
            self._gc_tick()

    def _lapse_lost(self, wall: int) -> None:
        """Forget removals older than any token that could still claim what they removed."""
        horizon_ms = (wall - rights.lapse_s(self.settings)) * 1000
        for user in list(self.lost):
            entry = {c: at for c, at in self.lost[user].items() if at > horizon_ms}
            if entry:
                self.lost[user] = entry
            else:
                del self.lost[user]

    def _gc_tick(self) -> None:
        """Keep the cyclic GC off the fan-out path.

        Young cyclic garbage is collected (cheap: only objects made since the last tick), then
        the survivors — mostly long-lived connections — move to the permanent generation, so
        no collection walks tens of thousands of them again. Objects that were alive at a tick
        and later die inside a cycle would stay frozen, so every ``GC_RECYCLE_TICKS`` ticks
        the permanent generation is thawed and collected once.
        """
        self._gc_ticks += 1
        if self._gc_ticks >= GC_RECYCLE_TICKS:
            self._gc_ticks = 0
            gc.unfreeze()
            gc.collect()
        else:
            gc.collect(1)
        gc.freeze()

    async def run_ticker(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                self.tick()
            except Exception:
                log.exception("tick failed")

    # -- shutdown ------------------------------------------------------------------------------

    def close_all(self, code: CloseCode) -> None:
        self.accepting = False
        for conn in [*self.ws, *self.sse]:
            conn.close(code)
        for waiters in self.waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    def pending_flush(self) -> int:
        return sum(1 for c in self._closing if c.transport is not None)
