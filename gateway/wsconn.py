"""A WebSocket client connection after the handshake: parse client frames, write server frames.

Client frames are handled in arrival order. Every ``cmd`` gets exactly one ``reply`` (ok, error
or timeout); every other frame that cannot be accepted gets an ``error`` frame with a stable
code, and the connection stays open unless it cannot continue (protocol violations, oversized
frames, floods), in which case it closes with the documented code.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from config.topics import authorize
from gateway import metrics, protocol, wsframe
from gateway.auth import Claims
from gateway.connection import Conn
from gateway.metrics import Hot
from gateway.protocol import CloseCode, ErrorCode
from gateway.record import WS_JSON, WS_MSGPACK

if TYPE_CHECKING:
    from gateway.hub import Hub

#: Rejected frames (bad or rate-limited) tolerated in a row before the connection is closed.
MAX_STRIKES = 50


class WsConn(Conn):
    __slots__ = (
        "binary",
        "frag",
        "frag_op",
        "frag_size",
        "pongs_missed",
        "strikes",
        "tail",
        "tokens",
        "tstamp",
    )

    transport_name = "ws"

    def __init__(self, hub: Hub, claims: Claims, ip: str, binary: bool) -> None:
        super().__init__(hub, claims, ip, WS_MSGPACK if binary else WS_JSON)
        self.binary = binary
        self.tail = b""
        self.frag: list[bytes] | None = None
        self.frag_op = 0
        self.frag_size = 0
        self.pongs_missed = 0
        self.strikes = 0
        self.tokens = float(hub.settings.cmd_burst)
        self.tstamp = time.monotonic()

    # -- output --------------------------------------------------------------------------------

    def send(self, frame: protocol.ServerFrame) -> None:
        payload = protocol.encode(frame, self.binary)
        op = wsframe.OP_BINARY if self.binary else wsframe.OP_TEXT
        self.write(wsframe.build(op, payload))

    def _write_close(self, t: asyncio.Transport, code: int, reason: str | None) -> None:
        text = reason or protocol.CLOSE_REASONS.get(CloseCode(code), "")
        t.write(wsframe.build_close(code, text))

    def ping(self) -> None:
        """Called by the hub's shared timer every ping interval."""
        if self.pongs_missed >= self.hub.settings.missed_pongs:
            self.close(CloseCode.PING_TIMEOUT)
            return
        self.pongs_missed += 1
        self.write(wsframe.PING_FRAME)

    def error(self, code: ErrorCode, message: str, ref: str | None = None, **kw: str) -> None:
        metrics.bad_frames.labels(code.value).inc()
        self.send(protocol.Error(code.value, message, ref, **kw))

    # -- input ---------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        Hot.bytes_received += len(data)
        buf = self.tail + data if self.tail else data
        try:
            frames, self.tail = wsframe.parse(buf, self.hub.settings.max_frame_bytes)
        except wsframe.ProtocolViolation as exc:
            if exc.code == CloseCode.MESSAGE_TOO_BIG:
                self.error(ErrorCode.TOO_BIG, "frame larger than the limit")
            self.close(exc.code)
            return
        # Any traffic proves the peer is alive.
        self.pongs_missed = 0
        for opcode, fin, payload in frames:
            if self.closed:
                return
            self._frame(opcode, fin, payload)

    def _frame(self, opcode: int, fin: bool, payload: bytes) -> None:
        if opcode == wsframe.OP_PONG:
            return
        if opcode == wsframe.OP_PING:
            self.write(wsframe.build(wsframe.OP_PONG, payload))
            return
        if opcode == wsframe.OP_CLOSE:
            code, _ = wsframe.parse_close(payload)
            self.close(CloseCode.NORMAL if code == CloseCode.NORMAL else CloseCode.GOING_AWAY)
            return
        if opcode == wsframe.OP_CONT:
            if self.frag is None:
                self.close(CloseCode.PROTOCOL_ERROR, "unexpected continuation")
                return
            # A running total and a count: O(1) per fragment, and empty fragments are bounded
            # too (a flood of them once cost a sum over the whole list per fragment).
            self.frag.append(payload)
            self.frag_size += len(payload)
            s = self.hub.settings
            if self.frag_size > s.max_frame_bytes or len(self.frag) > s.max_fragments:
                self.error(ErrorCode.TOO_BIG, "message larger than the limit")
                self.close(CloseCode.MESSAGE_TOO_BIG)
                return
            if not fin:
                return
            payload, opcode, self.frag = b"".join(self.frag), self.frag_op, None
        elif self.frag is not None:
            self.close(CloseCode.PROTOCOL_ERROR, "interleaved message")
            return
        elif not fin:
            self.frag, self.frag_op, self.frag_size = [payload], opcode, len(payload)
            return
        self._message(opcode == wsframe.OP_BINARY, payload)

    def _allow(self) -> bool:
        """Token bucket over all client messages (commands included)."""
        s = self.hub.settings
        now = time.monotonic()
        self.tokens = min(float(s.cmd_burst), self.tokens + (now - self.tstamp) * s.cmd_rate_per_s)
        self.tstamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def _strike(self) -> bool:
        """Count a rejected frame; close the connection on a flood. True if it was closed."""
        self.strikes += 1
        if self.strikes > MAX_STRIKES:
            self.close(CloseCode.TOO_MANY_ERRORS)
            return True
        return False

    def _message(self, binary: bool, payload: bytes) -> None:
        if binary != self.binary:
            want = "MessagePack (binary)" if self.binary else "JSON (text)"
            self.error(ErrorCode.BAD_FRAME, f"this connection speaks {want} frames")
            self._strike()
            return
        try:
            frame = protocol.decode_client_frame(payload, binary)
        except protocol.FrameError as exc:
            self.error(exc.code, exc.message, exc.ref)
            if isinstance(exc, protocol.InvalidText):
                self.close(CloseCode.INVALID_PAYLOAD)  # RFC 6455 section 8.1: must fail
                return
            self._strike()
            return
        metrics.frames_received.labels(type(frame).__name__.lower()).inc()
        if not self._allow():
            ref = getattr(frame, "ref", None)
            if isinstance(frame, protocol.Cmd):
                self.hub.commands.reject(self, frame.ref, ErrorCode.RATE_LIMITED, "slow down")
            else:
                self.error(ErrorCode.RATE_LIMITED, "too many frames; slow down", ref)
            self._strike()
            return
        self.strikes = 0
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
