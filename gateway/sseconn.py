"""A Server-Sent-Events stream after the response headers have been written.

Every event block carries ``id:`` = the stream's compact cursor (the last event ID per topic, in
the order of the ``topics`` parameter), so a browser's automatic reconnect sends it back as
``Last-Event-ID`` and resumes with no gap and no duplicate. For a single-topic stream the
cursor is the event ID itself, so the ``id:`` line is shared by every subscriber too; with
several topics the line is this connection's own.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from gateway import protocol
from gateway.auth import Claims
from gateway.connection import Conn
from gateway.metrics import Hot
from gateway.record import SSE, Record

if TYPE_CHECKING:
    from gateway.hub import Hub


class SseConn(Conn):
    __slots__ = ("order",)

    transport_name = "sse"

    def __init__(self, hub: Hub, claims: Claims, ip: str, order: list[str]) -> None:
        super().__init__(hub, claims, ip, SSE)
        #: Topics in the order of the request's ``topics`` parameter (the cursor's slots).
        self.order = order

    def data_received(self, data: bytes) -> None:
        # A client sends nothing after the request; anything more is dropped unread.
        pass

    def eof_received(self) -> bool:
        return False

    def send(self, frame: protocol.ServerFrame) -> None:
        kind = type(frame).__name__.lower().encode()
        block = protocol.sse_block(kind, protocol.encode_json(frame))
        if isinstance(frame, protocol.Reset):
            # Carry the cursor that now holds the reset position, so a browser reconnecting
            # before the next event does not resume from the stale one (and reset again).
            cursor = protocol.format_cursor(self.order, self.topics)
            block = protocol.sse_id_line(cursor) + block
        self.write(block)

    def _id_line(self, rec: Record) -> bytes:
        """This stream's own ``id:`` line (several topics) after ``rec``."""
        topics = self.topics
        topics[rec.topic] = rec.id
        return protocol.sse_id_line(protocol.format_cursor(self.order, topics))

    def push(self, rec: Record) -> None:
        replay = self.replay
        if replay is not None and rec.topic in replay and self._held(rec):
            return
        t = self.transport
        if t is not None and not self.closed:
            if len(self.order) == 1:
                self.topics[rec.topic] = rec.id
                block = rec.sse_single()
                t.write(block)
                Hot.bytes_sent += len(block)
                return
            line, frame = self._id_line(rec), rec.frame(SSE)
            t.writelines((line, frame))
            Hot.bytes_sent += len(line) + len(frame)

    def push_many(self, recs: list[Record]) -> None:
        if self.replay is not None:
            for rec in recs:
                self.push(rec)
            return
        t = self.transport
        if t is not None and not self.closed:
            if len(self.order) == 1:
                self.topics[recs[-1].topic] = recs[-1].id
                self._write_batch(t, [rec.sse_single() for rec in recs], 1)
                return
            parts: list[bytes] = []
            for rec in recs:
                parts.append(self._id_line(rec))
                parts.append(rec.frame(SSE))
            # An id: line never goes out without its event (step 2): a cut in between would
            # give the closing event that id, and the client would skip an unseen event.
            self._write_batch(t, parts, 2)

    def _write_close(self, t: asyncio.Transport, code: int, reason: str | None) -> None:
        cc = protocol.CloseCode(code)
        text = reason or protocol.CLOSE_REASONS.get(cc, "")
        frame = protocol.Closing(int(code), text, cc.reconnect)
        t.write(protocol.sse_block(b"closing", protocol.encode_json(frame)))
