"""A WebSocket client connection after the handshake: the thin asyncio adapter around the
sans-I/O :class:`~gateway.wscore.WsCore` (framing, limits, close handshake live there).

Client frames are handled in arrival order. Every ``cmd`` gets exactly one ``reply`` (ok, error
or timeout); every other frame that cannot be accepted gets an ``error`` frame with a stable
code, and the connection stays open unless it cannot continue (protocol violations, oversized
frames, floods), in which case it closes with the documented code.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from config.topics import authorize
from gateway import metrics, protocol
from gateway.auth import Claims
from gateway.connection import CLOSE_GRACE_S, Conn
from gateway.metrics import Hot
from gateway.protocol import CloseCode, ErrorCode
from gateway.record import WS_JSON, WS_MSGPACK
from gateway.wscore import Closing, Disconnect, Message, Output, Reject, Send, WsCore

if TYPE_CHECKING:
    from gateway.hub import Hub


class WsConn(Conn):
    """The asyncio side of a WebSocket connection: feeds :class:`~gateway.wscore.WsCore` bytes
    and the clock, and applies what comes out (routes frames to the hub, writes, closes)."""

    __slots__ = ("core",)

    transport_name = "ws"

    def __init__(self, hub: Hub, claims: Claims, ip: str, binary: bool) -> None:
        super().__init__(hub, claims, ip, WS_MSGPACK if binary else WS_JSON)
        self.core = WsCore(hub.ws_limits, binary, time.monotonic())

    # -- output --------------------------------------------------------------------------------

    def send(self, frame: protocol.ServerFrame) -> None:
        self.write(self.core.frame_bytes(frame))

    def ping(self) -> None:
        """Called by the hub's shared timer every ping interval."""
        self._apply(self.core.heartbeat(time.monotonic()))

    def error(self, code: ErrorCode, message: str, ref: str | None = None, **kw: str) -> None:
        metrics.bad_frames.labels(code.value).inc()
        self.send(protocol.Error(code.value, message, ref, **kw))

    def close(
        self, code: CloseCode | int, reason: str | None = None, *, defer_unregister: bool = False
    ) -> None:
        """Close frame now, the socket after the client's close frame or the close timeout."""
        self._apply(self.core.close(code, reason, time.monotonic()), defer_unregister)

    def expire(self, now: float) -> None:
        self._apply(self.core.expire(now))
        self.abort()

    # -- input ---------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        Hot.bytes_received += len(data)
        out = self.core.receive(data, time.monotonic())
        if out:
            self._apply(out)

    def _apply(self, outputs: Sequence[Output], defer: bool = False) -> None:
        """Carry out the core's outputs, in order. (Dispatch on ``type(out) is``: class
        patterns pay an ``isinstance`` through msgspec's metaclass per case, and pings and
        pongs of every connection come through here.)"""
        for out in outputs:
            if type(out) is Send:
                self.write(out.data)
            elif type(out) is Message:
                if not self.closed:
                    self._route(out.frame)
            elif type(out) is Reject:
                if not self.closed:
                    self._reject(out.answer)
            elif type(out) is Closing:
                self._closing(out, defer)
            elif type(out) is Disconnect:
                self._disconnect(out.abort)

    def _reject(self, answer: protocol.Error | protocol.Reply) -> None:
        if isinstance(answer, protocol.Reply):
            metrics.command_replies.labels(answer.error.code if answer.error else "").inc()
        else:
            metrics.bad_frames.labels(answer.code).inc()
        self.send(answer)

    def _closing(self, out: Closing, defer: bool) -> None:
        # Ended first: the close frame may itself pass the buffer limit.
        if self._end(out.code, defer=defer):
            t = self.transport
            if t is not None:
                t.write(out.frame)
                if out.deadline:
                    self.hub.closing(self, out.deadline)

    def _disconnect(self, abort: bool) -> None:
        t = self.transport
        if t is None:
            return
        if abort:
            t.abort()
        elif t.can_write_eof():
            # Half-close: the close frame and a FIN go out once flushed, and what the peer
            # still sends (the rest of an oversized frame, its close reply) is read and
            # dropped until its FIN. Closing with unread input would send a reset instead,
            # which can destroy our close frame before the peer reads it.
            t.write_eof()
            self.hub.closing(self, time.monotonic() + CLOSE_GRACE_S)
        else:
            t.close()  # flushes first; the hub aborts it past the grace
            self.hub.closing(self, time.monotonic() + CLOSE_GRACE_S)

    def _route(self, frame: protocol.ClientFrame) -> None:
        metrics.frames_received.labels(type(frame).__name__.lower()).inc()
        match frame:
            case protocol.Cmd():
                self._command(frame)
            case protocol.Sub(topics=topics, cursors=cursors, ref=ref):
                self.hub.subscribe(self, topics, cursors, ref)
            case protocol.Unsub(topics=topics, ref=ref):
                for topic in topics:
                    if topic in self.topics:
                        self.hub.unsubscribe(self, topic)
                        self.send(protocol.Unsubscribed(topic, ref))
                    else:
                        self.error(ErrorCode.NOT_SUBSCRIBED, "not subscribed", ref, topic=topic)
            case protocol.Ping(ref=ref):
                self.send(protocol.Pong(ref, int(time.time() * 1000)))

    def _command(self, cmd: protocol.Cmd) -> None:
        if cmd.topic is not None:
            denial = authorize(self.claims, cmd.topic)
            if denial is not None:
                message = f"{cmd.topic}: {denial.reason}"
                self.hub.commands.reject(self, cmd.ref, ErrorCode(denial.code), message)
                return
        self.hub.commands.submit(self, cmd)
