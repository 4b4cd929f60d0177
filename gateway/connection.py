"""The part of a client connection common to WebSocket and SSE.

After aiohttp has parsed the upgrade request and routed it, the socket is handed to one of
these lean ``asyncio.Protocol`` objects (``__slots__``, no task, no timer, no queue), so an idle
connection costs the transport plus this object and its subscription map. Everything periodic
(pings, heartbeats, token expiry) runs from the hub's single shared tick.

Back-pressure: the transport's high-water mark is the outgoing-buffer limit. When a client
stops reading and the buffer passes it, ``pause_writing`` fires and the connection is closed
with ``SLOW_CONSUMER``; nothing more is written to it, so the buffer never holds more than the
limit plus one event (plus the close frame) and the client resumes later from its cursor.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, cast

from gateway import metrics, protocol
from gateway.auth import Claims
from gateway.metrics import Hot
from gateway.protocol import CloseCode
from gateway.record import Record

if TYPE_CHECKING:
    from gateway.hub import Hub

#: How long a closed socket may take to flush its last bytes before it is aborted.
CLOSE_GRACE_S = 5.0


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
        #: Per topic, while its history is read: the live events that arrived meanwhile (a
        #: list); after the replay, until the bus passes it: the last event ID the replay wrote
        #: (a str). ``None`` when no topic is in either state (the common case).
        self.replay: dict[str, list[Record] | str] | None = None

    @property
    def conn_id(self) -> str:
        return f"{self.hub.gateway_id}.{self.id}"

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """The socket is ours: the connection is registered from here until :meth:`_end`."""
        # uvloop's transports are not asyncio.Transport subclasses, hence the cast.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=self.hub.out_buffer_limit)
        self.hub.register(self)

    def connection_lost(self, exc: Exception | None) -> None:
        # Drop the transport<->protocol cycle now rather than leave it to the cyclic GC.
        self.transport = None
        self._end(CloseCode.GOING_AWAY if exc is None else 1006)

    def _end(self, code: CloseCode | int, *, defer: bool = False) -> bool:
        """The one exit. Every way a connection ends (our close, the peer's, a protocol
        failure, a timeout, a lost socket) comes here, and only here is it unregistered:
        exactly once, since registration happens in :meth:`connection_made` and this is
        idempotent. ``defer`` leaves the hub's maps to the next loop turn (for an end decided
        inside a write, while the hub may be iterating them). False when it had ended already."""
        if self.closed:
            return False
        self.closed = True
        if defer:
            asyncio.get_running_loop().call_soon(self.hub.unregister, self, code)
        else:
            self.hub.unregister(self, code)
        return True

    def pause_writing(self) -> None:
        if self.closed:
            return  # the close frame itself went over the limit
        metrics.slow_consumers.inc()
        # This runs inside a write, possibly while the hub iterates this topic's subscribers:
        # stop writing now, leave the hub's maps alone until the next loop turn.
        self.close(CloseCode.SLOW_CONSUMER, defer_unregister=True)

    def resume_writing(self) -> None:
        pass

    # -- writing -------------------------------------------------------------------------------

    def cork(self, first: bytes) -> None:
        """Until :meth:`uncork`, collect what is written after ``first`` and send it all with
        one write: the handshake, the hello and the subscription acks leave in one segment
        (one send for us, one wake-up for the client) instead of three."""
        if self.transport is not None:
            self.transport = cast(asyncio.Transport, _Cork(self.transport, first))

    def uncork(self) -> None:
        t: object = self.transport
        if isinstance(t, _Cork):
            self.transport = t.real
            t.flush()

    def write(self, data: bytes) -> None:
        t = self.transport
        if t is not None and not self.closed:
            t.write(data)

    def push(self, rec: Record) -> None:
        """Write one live event (the hub's fan-out calls this per subscriber)."""
        replay = self.replay
        if replay is not None and rec.topic in replay and self._held(rec):
            return
        t = self.transport
        if t is not None and not self.closed:
            frame = rec.frame(self.kind)
            t.write(frame)
            Hot.bytes_sent += len(frame)

    def push_many(self, recs: list[Record]) -> None:
        """Write several events that arrived in one bus read with one call."""
        if self.replay is not None:
            for rec in recs:
                self.push(rec)
            return
        t = self.transport
        if t is not None and not self.closed:
            kind = self.kind
            self._write_batch(t, [rec.frame(kind) for rec in recs], 1)

    def _held(self, rec: Record) -> bool:
        """True when live event ``rec`` must not be written now: its topic's history is being
        read (``rec`` is kept for :meth:`deliver_replayed`), or the replay already wrote it
        (the history read was ahead of the bus)."""
        replay = cast(dict[str, list[Record] | str], self.replay)
        held = replay[rec.topic]
        if isinstance(held, list):
            held.append(rec)
            return True
        if not protocol.id_after(rec.id, held):
            return True
        # The bus has passed the replay: every later event of the topic is new.
        del replay[rec.topic]
        if not replay:
            self.replay = None
        return False

    def _write_batch(self, t: asyncio.Transport, parts: list[bytes], step: int) -> None:
        """Write ``parts`` (``step`` parts per event) with one call when they fit under the
        buffer limit; otherwise in groups that fit, so that the buffer passes the limit by at
        most one event before :meth:`pause_writing` closes the connection and drops the rest."""
        limit = self.hub.out_buffer_limit
        total = sum(map(len, parts))
        Hot.bytes_sent += total
        if t.get_write_buffer_size() + total <= limit:
            t.writelines(parts)
            return
        start, n = 0, len(parts)
        while start < n and not self.closed:
            room = limit - t.get_write_buffer_size()
            end = start + step  # one event even when it does not fit: that one trips the limit
            used = sum(map(len, parts[start:end]))
            while end < n:
                size = sum(map(len, parts[end : end + step]))
                if used + size > room:
                    break
                used += size
                end += step
            t.writelines(parts[start:end])
            start = end

    def send(self, frame: protocol.ServerFrame) -> None:
        """Encode and write a control frame (hello, reply, error...) for this connection."""
        raise NotImplementedError

    def deliver_replayed(self, topic: str, recs: list[Record], after: str) -> None:
        """Write events read from history (in order, all newer than ``after``), then the live
        ones buffered meanwhile that are newer still: no gap, no duplicate."""
        replay = self.replay
        held = replay.pop(topic, None) if replay is not None else None
        if replay is not None and not replay:
            self.replay = None
        if self.closed or topic not in self.topics:
            return
        last = recs[-1].id if recs else after
        buffered = held if isinstance(held, list) else []
        out = recs + [r for r in buffered if not last or protocol.id_after(r.id, last)]
        for rec in out:
            self.push(rec)
        if out:
            last = out[-1].id
        # The history read may be ahead of the bus: until the bus passes ``last``, the events
        # it brings for this topic were written already (see _held).
        dispatched = self.hub.last_ids.get(topic)
        if (
            last
            and last != protocol.EMPTY_CURSOR  # no event is older: nothing to drop, no mark kept
            and not self.closed
            and (not dispatched or protocol.id_after(last, dispatched))
        ):
            if self.replay is None:
                self.replay = {}
            self.replay[topic] = last

    # -- closing -------------------------------------------------------------------------------

    def close(
        self, code: CloseCode | int, reason: str | None = None, *, defer_unregister: bool = False
    ) -> None:
        """Say why (close frame or closing event), then close. Idempotent. Nothing is written
        after the close frame; ``defer_unregister`` leaves the hub's maps to the next loop turn
        (for closes from inside a write)."""
        # Ended first: the close frame may itself pass the buffer limit (pause_writing).
        if not self._end(code, defer=defer_unregister):
            return
        t = self.transport
        if t is not None:
            self._write_close(t, code, reason)
            t.close()
            self.hub.closing(self, time.monotonic() + CLOSE_GRACE_S)

    def expire(self, now: float) -> None:
        """The deadline given to ``hub.closing`` passed: drop the socket."""
        self.abort()

    def _write_close(self, t: asyncio.Transport, code: int, reason: str | None) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        t = self.transport
        if t is not None:
            t.abort()


class _Cork:
    """A connection's transport while :meth:`Conn.cork` is in effect: writes are collected;
    any other use of the transport (close, abort, buffer sizes) sends them first, so nothing
    is reordered or lost when a connection closes while corked."""

    __slots__ = ("parts", "real")

    def __init__(self, real: asyncio.Transport, first: bytes) -> None:
        self.real = real
        self.parts: list[bytes] | None = [first]

    def write(self, data: bytes) -> None:
        if self.parts is None:
            self.real.write(data)
        else:
            self.parts.append(data)

    def writelines(self, parts: list[bytes]) -> None:
        self.write(b"".join(parts))

    def flush(self) -> None:
        parts, self.parts = self.parts, None
        if parts:
            self.real.write(b"".join(parts))

    def __getattr__(self, name: str) -> object:
        self.flush()
        return getattr(self.real, name)
