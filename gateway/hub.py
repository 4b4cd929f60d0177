"""One gateway process's hub: what the transports and the bus call, composed of small parts.

* :mod:`gateway.registry`: the open connections (by transport, login session, user, expiry).
* :mod:`gateway.fanout`: topics and their subscribers, and dispatching events (the hot path).
* :mod:`gateway.history`: history reads, the replay of a resumed subscription, bus recovery.
* :mod:`gateway.ticker`: the one shared one-second tick.

This module keeps what ties them together: subscribing (authorization, limits, live-session
checks, replay), unsubscribing, and the revocation and rights state the bus feeds.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterable
from typing import Any

import msgspec
import redis.asyncio as aioredis

from config import redisconn
from config.settings import Settings
from config.topics import LIVE_PREFIX, authorize
from gateway import history, metrics, protocol, rights
from gateway.auth import Claims
from gateway.command_relay import CommandRouter
from gateway.connection import Conn
from gateway.fanout import FanOut
from gateway.history import HistoryReader
from gateway.online import OnlineWriter, cohorts_of
from gateway.presence_writer import PresenceWriter
from gateway.protocol import CloseCode, ErrorCode
from gateway.publish import Publisher
from gateway.record import Record
from gateway.registry import Registry
from gateway.sessions import OpenSessions
from gateway.ticker import Ticker
from gateway.wsconn import WsConn
from gateway.wscore import Limits


class Hub:
    def __init__(self, settings: Settings, redis: aioredis.Redis, gateway_id: str) -> None:
        self.settings = settings
        self.ws_limits = Limits.from_settings(settings)
        #: The transport's high-water mark: a connection's outgoing-buffer limit.
        self.out_buffer_limit = settings.out_buffer_limit_bytes
        self.redis = redis
        self.gateway_id = gateway_id
        self.commands = CommandRouter(self, redis)
        #: Joins and leaves of live rooms, for attendance (written by its own task).
        self.presence = PresenceWriter(redis, gateway_id, settings.presence_lease_interval_s)
        #: Which live sessions may be subscribed (gateway/sessions.py).
        self.sessions = OpenSessions(redis)
        self._ids = itertools.count(1)
        self.registry = Registry()
        self.ws = self.registry.ws
        self.sse = self.registry.sse
        self.by_sid = self.registry.by_sid
        self.by_user = self.registry.by_user
        self.user_conns = self.registry.user_conns
        self.expiry = self.registry.expiry
        self.fanout = FanOut()
        self.topics = self.fanout.topics
        self.last_ids = self.fanout.last_ids
        self.waiters = self.fanout.waiters
        #: The hot path, bound once: the bus calls the fan-out directly.
        self.dispatch = self.fanout.dispatch
        self.history = HistoryReader(
            redis, settings.bus_shards, settings.history_read_concurrency, self.last_ids.get
        )
        self.accepting = True
        #: Revoked login sessions -> when the revocation lapses (wall clock).
        self.revoked: dict[str, float] = {}
        #: user -> {cohort: when it was taken away (ms)} (gateway/rights.py).
        self.lost: dict[str, dict[str, int]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Who is online in each cohort, leased in Redis (gateway/online.py).
        self.online = OnlineWriter(redis, Publisher(redis, settings), gateway_id, self._online_here)
        self.ticker = Ticker(settings, self.registry, self.commands, self._lapse)
        self.tick = self.ticker.tick
        self.run_ticker = self.ticker.run

    def next_conn_id(self) -> int:
        return next(self._ids)

    # -- registration --------------------------------------------------------------------------

    def register(self, conn: Conn) -> None:
        """Count a connection in (from its ``connection_made``; ``Conn._end`` undoes it)."""
        self.registry.add(conn)
        user = conn.claims.sub
        others = self._claimed(user, conn)
        self.online.up(user, cohorts_of(conn.claims) - others)

    def unregister(self, conn: Conn, code: int) -> None:
        """Forget a connection everywhere (idempotent per connection: called once on close)."""
        if not self.registry.remove_transport(conn):
            return
        if isinstance(conn, WsConn):
            self.commands.forget(conn.conn_id)
        for topic in list(conn.topics):
            self.unsubscribe(conn, topic)
        conn.replay = None
        self.registry.forget(conn, code)
        user = conn.claims.sub
        self.online.down(user, cohorts_of(conn.claims) - self._claimed(user, conn))

    def _claimed(self, user: str, but: Conn) -> frozenset[str]:
        """The cohorts the user's other connections here claim."""
        claimed: frozenset[str] = frozenset()
        for other in self.registry.user_conns.get(user, ()):
            if other is not but:
                claimed |= cohorts_of(other.claims)
        return claimed

    def _online_here(self) -> dict[str, frozenset[str]]:
        """Every user connected here and the cohorts their connections claim."""
        return {
            user: frozenset().union(*(cohorts_of(c.claims) for c in conns))
            for user, conns in self.registry.user_conns.items()
        }

    def closing(self, conn: Conn, deadline: float) -> None:
        """Keep an ended connection's socket until ``deadline`` (monotonic), for its last
        bytes or the close handshake; then the tick calls its ``expire``."""
        self.registry.closing[conn] = deadline

    def user_connections(self, user: str) -> int:
        return self.registry.user_connections(user)

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
        at_tail: list[str] = []
        for topic in topics:
            admitted = self._admit(conn, topic, ref)
            if admitted is None:
                unknown.append(topic)
                continue
            if not admitted:
                continue
            cursor = cursors.get(topic, "")
            if cursor and not protocol.is_stream_id(cursor):
                conn.send(protocol.Error(ErrorCode.INVALID.value, "malformed cursor", ref, topic))
                continue
            if self._start(conn, topic, cursor, ref, quiet):
                at_tail.append(topic)
            accepted.append(topic)
        if at_tail:
            start = history.start_at_tails(self.history, self.fanout, conn, at_tail, ref, quiet)
            self._spawn(start)
        if unknown:
            self._spawn(self._subscribe_if_open(conn, unknown, cursors, ref, quiet))
        return accepted

    def _start(self, conn: Conn, topic: str, cursor: str, ref: str | None, quiet: bool) -> bool:
        """Add ``topic`` to ``conn``: replay from ``cursor``, or start after the topic's tail,
        which the ack carries: known here without a Redis read when possible (see
        ``FanOut.known_tail``). True when the tail must be read first (the caller reads it)."""
        fresh = topic not in conn.topics
        previous = conn.topics.get(topic)
        conn.topics[topic] = cursor
        self.fanout.add(conn, topic)
        if fresh and topic.startswith(LIVE_PREFIX):
            self.presence.joined(conn, topic)
        tail = None if cursor else self.fanout.known_tail(topic)
        if cursor or (fresh and tail is None):
            if conn.replay is None:
                conn.replay = {}
            conn.replay[topic] = []
            if not cursor:
                return True
            self._spawn(history.replay(self.history, conn, topic, cursor, ref, quiet))
            return False
        tail = tail or previous
        if tail:
            conn.topics[topic] = tail
        if not quiet:
            # Acked even when already subscribed: a client waiting on its ref gets an answer.
            conn.send(protocol.Subscribed(topic, ref, 0, tail or msgspec.UNSET))
        return False

    async def stream_tails(self, topics: list[str], cursors: dict[str, str]) -> dict[str, str]:
        """SSE: the tail each topic without a cursor starts after, for the stream's hello.

        Topics the bus has dispatched nothing for here get their tail read from Redis, and it
        becomes their cursor (the replay covers what is published meanwhile); the others
        start after the tail known here (``FanOut.known_tail``), which :meth:`subscribe` takes
        again without a read, so the caller must subscribe with no await in between. Raises
        ``redisconn.ERRORS``."""
        given = set(cursors)
        known = self.fanout.known_tail
        unknown = [t for t in topics if t not in given and known(t) is None]
        if unknown:
            found = await asyncio.gather(*(self.history.tail(t) for t in unknown))
            cursors.update(zip(unknown, found, strict=True))
        return self._tails(topics, cursors, given)

    def tails_now(self, topics: list[str], cursors: dict[str, str]) -> dict[str, str] | None:
        """:meth:`stream_tails` when it needs no Redis read (every topic has a cursor or a
        tail known here), else None."""
        known = self.fanout.known_tail
        if any(t not in cursors and known(t) is None for t in topics):
            return None
        return self._tails(topics, cursors, set(cursors))

    def _tails(self, topics: list[str], cursors: dict[str, str], given: set[str]) -> dict[str, str]:
        known = self.fanout.known_tail
        tails = {t: cursors.get(t) or known(t) for t in topics if t not in given}
        return {t: tail for t, tail in tails.items() if tail is not None}

    def _admit(self, conn: Conn, topic: str, ref: str | None) -> bool | None:
        """Whether ``conn`` may subscribe to ``topic`` (an ``error`` is sent when not); None
        when that depends on a live session not known locally (ask Redis, then retry)."""
        denial = authorize(conn.claims, topic)
        if denial is not None:
            metrics.bad_frames.labels(denial.code).inc()
            conn.send(protocol.Error(denial.code, f"{topic}: {denial.reason}", ref, topic))
            return False
        if topic.startswith(LIVE_PREFIX) and topic not in conn.topics:
            is_open = self.sessions.known(topic)
            if is_open is None:
                return None
            if not is_open:
                self._no_session(conn, topic, ref)
                return False
        if topic not in conn.topics and len(conn.topics) >= self.settings.max_topics_per_conn:
            conn.send(
                protocol.Error(
                    ErrorCode.TOO_MANY_TOPICS.value,
                    f"at most {self.settings.max_topics_per_conn} topics per connection",
                    ref,
                    topic,
                )
            )
            return False
        return True

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
        self.fanout.remove(conn, topic)

    async def read_history(self, topic: str, after: str) -> tuple[list[Record], bool]:
        """See :meth:`gateway.history.HistoryReader.read` (coalesced, paged, bounded)."""
        return await self.history.read(topic, after)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def recover(self, since_ms: int) -> None:
        """See :func:`gateway.history.recover`."""
        await history.recover(self.history, self.fanout, since_ms)

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

    def _lapse(self, wall: int) -> None:
        """Forget lapsed revocations, and removals older than any token that could still
        claim what they removed (the ticker calls this every minute)."""
        if self.revoked:
            for sid in [sid for sid, until in self.revoked.items() if until <= wall]:
                del self.revoked[sid]
        if not self.lost:
            return
        horizon_ms = (wall - rights.lapse_s(self.settings)) * 1000
        for user in list(self.lost):
            entry = {c: at for c, at in self.lost[user].items() if at > horizon_ms}
            if entry:
                self.lost[user] = entry
            else:
                del self.lost[user]

    # -- shutdown ------------------------------------------------------------------------------

    def close_all(self, code: CloseCode) -> None:
        self.accepting = False
        for conn in [*self.ws, *self.sse]:
            conn.close(code)
        self.fanout.wake_all()

    def pending_flush(self) -> int:
        return self.registry.pending_flush()
