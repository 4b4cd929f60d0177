"""The part of a client connection common to WebSocket and SSE.

After aiohttp has parsed the upgrade request and routed it, the socket is handed to one of
these lean ``asyncio.Protocol`` objects (``__slots__``, no task, no timer, no queue), so an idle
connection costs the transport plus this object and its subscription map. Everything periodic
(pings, heartbeats, token expiry) runs from the hub's single shared tick.

Back-pressure: the transport's high-water mark is the outgoing-buffer limit. When a client
stops reading and the buffer passes it, ``pause_writing`` fires and the connection is closed
with ``SLOW_CONSUMER``; nothing more is written to it, so memory stays bounded and the client
resumes later from its cursor.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

from gateway import metrics, protocol
from gateway.auth import Claims
from gateway.protocol import CloseCode
from gateway.record import Record

if TYPE_CHECKING:
    from gateway.hub import Hub


class Conn(asyncio.Protocol):
    """Base connection. Subclasses define ``kind``, frame writing and closing."""

    __slots__ = (
        "claims",
        "closed",
        "hub",
        "id",
        "ip",
        "kind",
        "replay",
        "topics",
        "transport",
    )

    transport_name = "?"

    def __init__(self, hub: Hub, claims: Claims, ip: str, kind: int) -> None:
        self.hub = hub
        self.claims = claims
        self.ip = ip
        self.kind = kind
        self.id = hub.next_conn_id()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        #: Subscribed topics -> last event ID written ("" before the first).
        self.topics: dict[str, str] = {}
        #: Topics being replayed from history -> live events that arrived meanwhile.
        self.replay: dict[str, list[Record]] | None = None

    @property
    def conn_id(self) -> str:
        return f"{self.hub.gateway_id}.{self.id}"

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, hence the cast.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=self.hub.settings.out_buffer_limit_bytes)

    def connection_lost(self, exc: Exception | None) -> None:
        # Drop the transport<->protocol cycle now rather than leave it to the cyclic GC.
        self.transport = None
        if not self.closed:
            self.closed = True
            self.hub.unregister(self, CloseCode.GOING_AWAY if exc is None else 1006)

    def pause_writing(self) -> None:
        metrics.slow_consumers.inc()
        self.close(CloseCode.SLOW_CONSUMER)

    def resume_writing(self) -> None:
        pass

    # -- writing -------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        t = self.transport
        if t is not None and not self.closed:
            t.write(data)

    def push(self, rec: Record) -> None:
        """Write one live event (the hub's fan-out calls this per subscriber)."""
        replay = self.replay
        if replay is not None and rec.topic in replay:
            replay[rec.topic].append(rec)
            return
        t = self.transport
        if t is not None:
            t.write(rec.frame(self.kind))

    def push_many(self, recs: list[Record]) -> None:
        """Write several events that arrived in one bus read with one call."""
        if self.replay is not None:
            for rec in recs:
                self.push(rec)
            return
        t = self.transport
        if t is not None:
            kind = self.kind
            t.writelines([rec.frame(kind) for rec in recs])

    def send(self, frame: protocol.ServerFrame) -> None:
        """Encode and write a control frame (hello, reply, error...) for this connection."""
        raise NotImplementedError

    def deliver_replayed(self, topic: str, recs: list[Record], after: str) -> None:
        """Write events read from history (in order, all newer than ``after``), then the live
        ones buffered meanwhile that are newer still: no gap, no duplicate."""
        buffered = self.replay.pop(topic, []) if self.replay is not None else []
        if self.replay is not None and not self.replay:
            self.replay = None
        last = recs[-1].id if recs else after
        fresh = [r for r in buffered if not last or protocol.id_after(r.id, last)]
        if topic in self.topics:
            for rec in recs + fresh:
                self.push(rec)

    # -- closing -------------------------------------------------------------------------------

    def close(self, code: CloseCode | int, reason: str | None = None) -> None:
        """Say why (close frame or closing event), then close. Idempotent."""
        if self.closed:
            return
        self.closed = True
        t = self.transport
        if t is not None:
            self._write_close(t, code, reason)
            t.close()
            self.hub.closing(self)
        self.hub.unregister(self, code)

    def _write_close(self, t: asyncio.Transport, code: int, reason: str | None) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        t = self.transport
        if t is not None:
            t.abort()
