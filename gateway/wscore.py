"""The server side of one WebSocket connection as a pure state machine (sans-I/O).

Bytes and a clock go in (:meth:`WsCore.receive`, :meth:`WsCore.heartbeat`,
:meth:`WsCore.close`, :meth:`WsCore.expire`); outputs come out, in the order they must be
applied: accepted client frames (:class:`Message`), rejected ones with the frame that tells the
client why (:class:`Reject`), bytes to write (:class:`Send`), the decision to close
(:class:`Closing`) and the moment to drop the socket (:class:`Disconnect`). No socket, no event
loop, no hub: the asyncio adapter (:mod:`gateway.wsconn`) applies the outputs, and the tests
drive this class with bytes alone.

Guarantees:

* **Bounded input.** A partial frame is buffered only after its header said it fits
  ``max_message_bytes``; a fragmented message holds at most ``max_message_bytes`` in at most
  ``max_fragments`` frames. Past either: ``too_big`` and close 1009. Work is O(1) per
  fragment and linear in the bytes received (a frame trickling in byte by byte is not
  re-parsed per byte). Text that is not UTF-8 fails with 1007, a fragmented message at the
  fragment that breaks it.
* **Control frames.** A ping is answered with a pong, also between fragments. Any bytes from
  the peer prove it alive: :meth:`heartbeat` closes with 4004 after ``missed_pongs`` pings in a
  row went unanswered.
* **Close.** Exactly one :class:`Closing` per connection, and no :class:`Message` after it.
  A peer's close is answered and the socket dropped. Our own close (:meth:`close`) waits up to
  ``close_timeout_s`` for the peer's close frame, then :meth:`expire` aborts. A protocol
  failure (RFC 6455 section 7.1.7) sends its close frame and drops the socket at once.
* **Floods.** Client messages (commands included) and pings pass a token bucket
  (``rate_per_s``, ``burst``); a rejected message (malformed, wrong encoding, over the rate)
  or a ping over the rate (answered with no pong) is a strike, an accepted message clears
  them, and more than ``max_strikes`` in a row close with 4005.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence

import msgspec

from config.settings import Settings
from gateway import protocol, wsframe
from gateway.protocol import CloseCode, ErrorCode

OPEN = 0
#: Our close frame is out; waiting for the peer's.
CLOSING = 1
#: Nothing more comes out except what :meth:`WsCore.expire` says.
CLOSED = 2

#: Rejected frames (bad or rate-limited) tolerated in a row before the connection is closed.
MAX_STRIKES = 50


class Limits(msgspec.Struct, frozen=True, gc=False):
    """What one connection may do; shared by every connection of a process."""

    max_message_bytes: int
    max_fragments: int
    rate_per_s: float
    burst: int
    missed_pongs: int
    close_timeout_s: float
    max_strikes: int = MAX_STRIKES

    @classmethod
    def from_settings(cls, s: Settings) -> Limits:
        return cls(
            s.max_frame_bytes,
            s.max_fragments,
            s.cmd_rate_per_s,
            s.cmd_burst,
            s.missed_pongs,
            s.ws_close_timeout_s,
        )


# -- outputs ----------------------------------------------------------------------------------


class Message(msgspec.Struct, gc=False):
    """An accepted client frame, for the application."""

    frame: protocol.ClientFrame


class Reject(msgspec.Struct, gc=False):
    """A client frame that was not accepted; ``answer`` tells the client why (an ``error``
    frame, or a failed ``reply`` for a command)."""

    answer: protocol.Error | protocol.Reply


class Send(msgspec.Struct, gc=False):
    """Bytes to write while the connection is open (a ping or a pong)."""

    data: bytes


class Closing(msgspec.Struct, gc=False):
    """The connection is closing with ``code``: write ``frame`` (the close frame), then
    nothing more; forget the connection. Until :class:`Disconnect`, the socket stays open for
    the close handshake; ``deadline`` (on the clock given to the core) is when
    :meth:`WsCore.expire` gives up on it (0.0 when a :class:`Disconnect` follows at once)."""

    code: int
    deadline: float
    frame: bytes


class Disconnect(msgspec.Struct, gc=False):
    """Drop the socket: after flushing what was written, or at once when ``abort``."""

    abort: bool = False


Output = Message | Reject | Send | Closing | Disconnect

_NOTHING: Sequence[Output] = ()
_utf8_decoder = codecs.getincrementaldecoder("utf-8")
_PING: Sequence[Output] = (Send(wsframe.PING_FRAME),)


class _Fragments:
    """A fragmented message being reassembled: a running total and a count, so that each
    fragment costs O(1) and empty ones are bounded too. A text message's UTF-8 is checked
    fragment by fragment (``text``), so that the fragment that breaks it fails the connection
    (RFC 6455 section 8.1: fail fast; Autobahn 6.4.1, 6.4.2) before the rest is buffered."""

    __slots__ = ("binary", "parts", "size", "text")

    def __init__(self, binary: bool, first: bytes) -> None:
        self.binary = binary
        self.parts = [first]
        self.size = len(first)
        self.text = None if binary else _utf8_decoder()


class WsCore:
    """One connection's WebSocket state; see the module docstring for its guarantees."""

    __slots__ = (
        "binary",
        "deadline",
        "frag",
        "limits",
        "need",
        "partial",
        "pongs_missed",
        "state",
        "strikes",
        "tokens",
        "tstamp",
    )

    def __init__(self, limits: Limits, binary: bool, now: float) -> None:
        self.limits = limits
        #: The connection speaks MessagePack in binary frames (else JSON in text frames).
        self.binary = binary
        self.state = OPEN
        #: While CLOSING: when the peer's close frame is overdue.
        self.deadline = 0.0
        #: The start of an incomplete frame, and the size it must reach (0: header incomplete).
        self.partial: bytearray | None = None
        self.need = 0
        self.frag: _Fragments | None = None
        self.pongs_missed = 0
        self.strikes = 0
        self.tokens = float(limits.burst)
        self.tstamp = now

    def buffered(self) -> int:
        """Bytes held for incomplete input (a partial frame and a fragmented message)."""
        return (len(self.partial) if self.partial else 0) + (self.frag.size if self.frag else 0)

    # -- output side ---------------------------------------------------------------------------

    def frame_bytes(self, frame: protocol.ServerFrame) -> bytes:
        """A server frame as one WebSocket frame in this connection's encoding."""
        payload = protocol.encode(frame, self.binary)
        return wsframe.build(wsframe.OP_BINARY if self.binary else wsframe.OP_TEXT, payload)

    # -- inputs --------------------------------------------------------------------------------

    def receive(self, data: bytes, now: float) -> Sequence[Output]:
        """Bytes from the peer. Frames are parsed one at a time and none after the connection
        closed: a flood cut off at its 65th fragment costs 65 frames, whatever the read size."""
        if self.state == CLOSED:
            return _NOTHING
        # Any traffic proves the peer is alive.
        self.pongs_missed = 0
        partial = self.partial
        if partial is not None:
            partial += data
            if len(partial) < self.need:
                return _NOTHING
            data = bytes(partial)
            self.partial = None
        out: list[Output] = []
        pos = 0
        max_payload = self.limits.max_message_bytes
        while True:
            try:
                frame = wsframe.parse_one(data, pos, max_payload)
            except wsframe.ProtocolViolation as exc:
                if exc.code == CloseCode.MESSAGE_TOO_BIG:
                    out.append(_error(ErrorCode.TOO_BIG, "frame larger than the limit"))
                self._fail(exc.code, str(exc), out)
                return out
            if frame is None:
                break
            opcode, fin, payload, pos = frame
            self._frame(opcode, fin, payload, now, out)
            if self.state == CLOSED:
                self._drop_input()
                return out
        if pos < len(data):
            tail = data[pos:]
            self.partial = bytearray(tail)
            self.need = wsframe.frame_size(tail)
        return out or _NOTHING

    def heartbeat(self, now: float) -> Sequence[Output]:
        """The ping period came round: a ping, or close 4004 when too many went unanswered."""
        if self.state != OPEN:
            return _NOTHING
        if self.pongs_missed >= self.limits.missed_pongs:
            return self.close(CloseCode.PING_TIMEOUT, None, now)
        self.pongs_missed += 1
        return _PING

    def close(self, code: int, reason: str | None, now: float) -> Sequence[Output]:
        """Our decision to close (token expired, revoked, slow consumer, restart...): the close
        frame, then the handshake. Nothing when the connection is closing already."""
        if self.state != OPEN:
            return _NOTHING
        self.state = CLOSING
        self.deadline = now + self.limits.close_timeout_s
        # Only the peer's close frame matters from now on: no message is reassembled.
        self.frag = None
        return [Closing(code, self.deadline, _close_frame(code, reason))]

    def expire(self, now: float) -> Sequence[Output]:
        """The close handshake's timeout: past the deadline, abort."""
        if self.state == CLOSING and now >= self.deadline:
            self.state = CLOSED
            self._drop_input()
            return [Disconnect(abort=True)]
        return _NOTHING

    # -- frames --------------------------------------------------------------------------------

    def _drop_input(self) -> None:
        self.partial = None
        self.frag = None

    def _fail(self, code: int, reason: str, out: list[Output]) -> None:
        """Fail the connection (RFC 6455 section 7.1.7): close frame, drop the socket."""
        if self.state == OPEN:
            out.append(Closing(code, 0.0, _close_frame(code, reason)))
        self.state = CLOSED
        self._drop_input()
        out.append(Disconnect())

    def _frame(self, opcode: int, fin: bool, payload: bytes, now: float, out: list[Output]) -> None:
        if self.state == CLOSING:
            # Our close is out: only the peer's close matters now.
            if opcode == wsframe.OP_CLOSE:
                self.state = CLOSED
                out.append(Disconnect())
            return
        if opcode == wsframe.OP_PONG:
            return
        if opcode == wsframe.OP_PING:
            # Pings share the messages' token bucket: each one costs a write, so a flood of
            # them gets no pongs and is struck out like any other flood.
            if self._allow(now):
                out.append(Send(wsframe.build(wsframe.OP_PONG, payload)))
            else:
                self._strike(now, out)
            return
        if opcode == wsframe.OP_CLOSE:
            self._peer_close(payload, out)
            return
        if opcode == wsframe.OP_CONT:
            self._continuation(fin, payload, now, out)
            return
        if self.frag is not None:
            self._fail(CloseCode.PROTOCOL_ERROR, "interleaved message", out)
            return
        if not fin:
            frag = _Fragments(opcode == wsframe.OP_BINARY, payload)
            if self._valid_text(frag, payload, False, out):
                self.frag = frag
            return
        self._message(opcode == wsframe.OP_BINARY, payload, now, out)

    def _peer_close(self, payload: bytes, out: list[Output]) -> None:
        """The peer's close frame: answer it (or fail on a malformed one) and disconnect."""
        try:
            code = wsframe.peer_close_code(payload)
        except wsframe.ProtocolViolation as exc:
            self._fail(exc.code, str(exc), out)
            return
        normal = code in (CloseCode.NORMAL, wsframe.NO_STATUS)
        # The answer is 1000 whatever the peer's code (RFC 6455 section 5.5.1 allows it or
        # an echo; Autobahn 7.7.*): the handshake completed normally. The code counted
        # (metrics) says whether the peer ended normally, and stays one of two values.
        ended = CloseCode.NORMAL if normal else CloseCode.GOING_AWAY
        self.state = CLOSED
        out.append(Closing(ended, 0.0, _close_frame(CloseCode.NORMAL, None)))
        out.append(Disconnect())

    def _continuation(self, fin: bool, payload: bytes, now: float, out: list[Output]) -> None:
        """A continuation frame: add it to the message in progress, within the limits."""
        frag = self.frag
        if frag is None:
            self._fail(CloseCode.PROTOCOL_ERROR, "unexpected continuation", out)
            return
        frag.parts.append(payload)
        frag.size += len(payload)
        limits = self.limits
        if frag.size > limits.max_message_bytes:
            out.append(_error(ErrorCode.TOO_BIG, "message larger than the limit"))
            self._fail(CloseCode.MESSAGE_TOO_BIG, "message too big", out)
            return
        if len(frag.parts) > limits.max_fragments:
            n = limits.max_fragments
            out.append(_error(ErrorCode.TOO_BIG, f"message in more than {n} fragments"))
            self._fail(CloseCode.MESSAGE_TOO_BIG, "too many fragments", out)
            return
        if not self._valid_text(frag, payload, fin, out):
            return
        if not fin:
            return
        self.frag = None
        self._message(frag.binary, b"".join(frag.parts), now, out)

    def _valid_text(self, frag: _Fragments, payload: bytes, fin: bool, out: list[Output]) -> bool:
        """Whether a fragment keeps a text message valid UTF-8 so far (the whole of it when
        ``fin``); when not, the connection fails."""
        if frag.text is None:
            return True
        try:
            frag.text.decode(payload, fin)
        except UnicodeDecodeError:
            self._invalid_text(out)
            return False
        return True

    def _invalid_text(self, out: list[Output]) -> None:
        """A text message is not UTF-8: say so, and fail with 1007 (RFC 6455 section 8.1)."""
        bad = protocol.InvalidText()
        out.append(_error(bad.code, bad.message))
        self._fail(CloseCode.INVALID_PAYLOAD, "invalid payload", out)

    def _allow(self, now: float) -> bool:
        """Token bucket over all client messages (commands included)."""
        limits = self.limits
        tokens = self.tokens + (now - self.tstamp) * limits.rate_per_s
        self.tokens = min(float(limits.burst), tokens)
        self.tstamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def _strike(self, now: float, out: list[Output]) -> None:
        """Count a rejected message; close on a flood."""
        self.strikes += 1
        if self.strikes > self.limits.max_strikes:
            out.extend(self.close(CloseCode.TOO_MANY_ERRORS, None, now))

    def _message(self, binary: bool, payload: bytes, now: float, out: list[Output]) -> None:
        if binary != self.binary:
            want = "MessagePack (binary)" if self.binary else "JSON (text)"
            out.append(_error(ErrorCode.BAD_FRAME, f"this connection speaks {want} frames"))
            self._strike(now, out)
            return
        try:
            frame = protocol.decode_client_frame(payload, binary)
        except protocol.FrameError as exc:
            if isinstance(exc, protocol.InvalidText):
                self._invalid_text(out)
                return
            out.append(_error(exc.code, exc.message, exc.ref))
            self._strike(now, out)
            return
        if not self._allow(now):
            if isinstance(frame, protocol.Cmd):
                err = protocol.ErrorBody(ErrorCode.RATE_LIMITED.value, "slow down")
                out.append(Reject(protocol.Reply(frame.ref, False, error=err)))
            else:
                ref = getattr(frame, "ref", None)
                out.append(_error(ErrorCode.RATE_LIMITED, "too many frames; slow down", ref))
            self._strike(now, out)
            return
        self.strikes = 0
        out.append(Message(frame))


def _error(code: ErrorCode, message: str, ref: str | None = None) -> Reject:
    return Reject(protocol.Error(code.value, message, ref))


def _close_frame(code: int, reason: str | None) -> bytes:
    text = reason or protocol.CLOSE_REASONS.get(code, "")  # type: ignore[call-overload]
    return wsframe.build_close(code, text)
