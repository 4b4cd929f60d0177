"""Who is connected to this gateway process: the open connections by transport, login session,
user and token expiry, and the ended ones whose sockets still flush their last bytes.

Guarantee: a connection is in these maps from :meth:`Registry.add` (its ``connection_made``)
until :meth:`Registry.forget` (its one ``_end``), and in none of them afterwards; a key whose
set empties is deleted, so the maps never grow with connections that have gone.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from typing import Any

from gateway import metrics
from gateway.connection import Conn
from gateway.sseconn import SseConn
from gateway.wsconn import WsConn


# The labelled children of the per-connection metrics, looked up once: ``labels()`` takes a
# lock and builds a key on every call, a few µs twice per connect and disconnect. Transports
# and close codes are a handful of values.
@functools.cache
def _connect_metrics(transport: str) -> tuple[Any, Any]:
    return metrics.connects.labels(transport), metrics.connections.labels(transport)


@functools.lru_cache(maxsize=256)
def _disconnects(transport: str, code: int) -> Any:
    return metrics.disconnects.labels(transport, str(code))


class Registry:
    def __init__(self) -> None:
        self.ws: set[WsConn] = set()
        self.sse: set[SseConn] = set()
        self.by_sid: dict[str, set[Conn]] = defaultdict(set)
        self.by_user: dict[str, int] = defaultdict(int)
        #: The open connections of each user (for removals of their rights).
        self.user_conns: dict[str, set[Conn]] = {}
        #: Token expiry (epoch seconds) -> the connections whose token lapses then.
        self.expiry: dict[int, set[Conn]] = defaultdict(set)
        #: Ended connections -> when their socket is aborted (monotonic).
        self.closing: dict[Conn, float] = {}

    def add(self, conn: Conn) -> None:
        """Count a connection in (from its ``connection_made``)."""
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
        connects, connections = _connect_metrics(conn.transport_name)
        connects.inc()
        connections.inc()

    def remove_transport(self, conn: Conn) -> bool:
        """Take ``conn`` out of its transport's set; False when it was not there (ended
        already), so that the rest of :meth:`forget` runs once per connection."""
        if isinstance(conn, WsConn):
            if conn not in self.ws:
                return False
            self.ws.discard(conn)
        elif isinstance(conn, SseConn):
            if conn not in self.sse:
                return False
            self.sse.discard(conn)
        return True

    def forget(self, conn: Conn, code: int) -> None:
        """Take ``conn`` out of the session, user and expiry maps (after
        :meth:`remove_transport` said it was there)."""
        claims = conn.claims
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
        _connect_metrics(conn.transport_name)[1].dec()
        _disconnects(conn.transport_name, int(code)).inc()

    def user_connections(self, user: str) -> int:
        return self.by_user.get(user, 0)

    def pending_flush(self) -> int:
        """Ended connections whose socket is still open (flushing or closing)."""
        return sum(1 for c in self.closing if c.transport is not None)
