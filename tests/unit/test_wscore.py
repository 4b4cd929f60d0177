"""The sans-I/O WebSocket connection core, driven with bytes and a clock alone."""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import protocol, wsframe
from gateway.protocol import CloseCode
from gateway.wscore import (
    CLOSED,
    CLOSING,
    Closing,
    Disconnect,
    Limits,
    Message,
    Output,
    Reject,
    Send,
    WsCore,
)
from tests.unit.test_wsframe import masked

LIMITS = Limits(
    max_message_bytes=1000,
    max_fragments=8,
    rate_per_s=10.0,
    burst=20,
    missed_pongs=2,
    close_timeout_s=5.0,
)


def core(binary: bool = False, limits: Limits = LIMITS) -> WsCore:
    return WsCore(limits, binary, now=100.0)


def text(obj: object, **kw: bool) -> bytes:
    return masked(wsframe.OP_TEXT, json.dumps(obj).encode(), **kw)


def kinds(out: Sequence[Output]) -> list[str]:
    return [type(o).__name__ for o in out]


def closing(out: Sequence[Output]) -> Closing:
    found = [o for o in out if isinstance(o, Closing)]
    assert len(found) == 1, out
    return found[0]


def close_code(frame: bytes) -> int:
    assert frame[0] == 0x80 | wsframe.OP_CLOSE
    return int(struct.unpack("!H", frame[2:4])[0])


def error_codes(out: Sequence[Output]) -> list[str]:
    return [
        o.answer.code if isinstance(o.answer, protocol.Error) else "reply"
        for o in out
        if isinstance(o, Reject)
    ]


# -- messages and fragments -------------------------------------------------------------------


def test_a_frame_in_pieces_is_one_message() -> None:
    """A frame split anywhere across reads comes out once, whole, when its last byte is in."""
    c = core()
    frame = text({"type": "ping", "ref": "p1"})
    for i in range(len(frame) - 1):
        assert c.receive(frame[i : i + 1], 100.0) == ()
    assert c.buffered() == len(frame) - 1
    (out,) = c.receive(frame[-1:], 100.0)
    assert out == Message(protocol.Ping("p1"))
    assert c.buffered() == 0


def test_fragments_are_reassembled_and_a_ping_between_them_answered() -> None:
    c = core()
    out = [
        *c.receive(masked(1, b'{"type":"pi', fin=False), 100.0),
        *c.receive(masked(wsframe.OP_PING, b"hb"), 100.0),
        *c.receive(masked(0, b'ng","ref":', fin=False) + masked(0, b'"f"}'), 100.0),
    ]
    assert out == [Send(wsframe.build(wsframe.OP_PONG, b"hb")), Message(protocol.Ping("f"))]


def test_fragments_over_the_size_limit() -> None:
    """The running total passes max_message_bytes: too_big, close 1009, socket dropped."""
    c = core()
    out = [*c.receive(masked(1, b"x" * 600, fin=False), 100.0)]
    out += c.receive(masked(0, b"x" * 600, fin=False), 100.0)
    assert kinds(out) == ["Reject", "Closing", "Disconnect"]
    assert error_codes(out) == ["too_big"]
    assert close_code(closing(out).frame) == CloseCode.MESSAGE_TOO_BIG
    assert c.state == CLOSED and c.buffered() == 0


def test_empty_fragment_flood_stops_at_the_fragment_limit() -> None:
    """300,000 empty continuations (the flood of issue 8): cut off after max_fragments, in one
    pass; nothing after the close."""
    c = core()
    flood = masked(1, b"", fin=False) + masked(0, b"", fin=False, key=b"abcd") * 300_000
    out = c.receive(flood, 100.0)
    assert kinds(out) == ["Reject", "Closing", "Disconnect"]
    assert close_code(closing(out).frame) == CloseCode.MESSAGE_TOO_BIG
    assert c.receive(masked(0, b""), 100.0) == ()


def test_nothing_after_the_close_is_parsed() -> None:
    """The frames that follow the one that closed the connection in the same read are not
    even parsed (a 1.8 MB flood read in one piece costs the frames up to the cut-off): here
    an unmasked frame after the cut-off would otherwise be a protocol error."""
    c = core()
    flood = masked(1, b"", fin=False) + masked(0, b"", fin=False) * 20 + b"\x81\x02hi"
    out = c.receive(flood, 100.0)
    assert close_code(closing(out).frame) == CloseCode.MESSAGE_TOO_BIG
    assert error_codes(out) == ["too_big"]


def test_a_ping_flood_gets_no_more_pongs_than_the_rate_and_is_struck_out() -> None:
    """Pings spend the message bucket: ``burst`` pongs, then none; past ``max_strikes``
    unanswered pings in a row, close 4005."""
    c = core()
    out = c.receive(masked(wsframe.OP_PING, b"") * (LIMITS.burst + LIMITS.max_strikes), 100.0)
    assert kinds(out) == ["Send"] * LIMITS.burst
    out = c.receive(masked(wsframe.OP_PING, b""), 100.0)
    assert closing(out).code == CloseCode.TOO_MANY_ERRORS


def test_frame_over_the_limit_is_refused_from_its_header() -> None:
    c = core()
    header = bytes((0x81, 0x80 | 126)) + struct.pack("!H", 1001)
    out = c.receive(header, 100.0)
    assert kinds(out) == ["Reject", "Closing", "Disconnect"]
    assert c.buffered() == 0


def test_protocol_violations_fail_at_once() -> None:
    """Unmasked frame, reserved bits, unexpected continuation, interleaved message: close 1002
    and the socket is dropped without waiting for the client's close."""
    for data in [
        b"\x81\x02hi",
        masked(1, b"x", rsv=2),
        masked(0, b"x"),
        masked(1, b"a", fin=False) + masked(1, b"b"),
    ]:
        out = core().receive(data, 100.0)
        assert kinds(out) == ["Closing", "Disconnect"], data
        assert close_code(closing(out).frame) == CloseCode.PROTOCOL_ERROR
        assert out[-1] == Disconnect(abort=False)


def test_invalid_utf8_text_fails_with_1007() -> None:
    out = core().receive(masked(1, b"\xff\xfe"), 100.0)
    assert kinds(out) == ["Reject", "Closing", "Disconnect"]
    assert close_code(closing(out).frame) == CloseCode.INVALID_PAYLOAD


def test_invalid_utf8_in_a_fragment_fails_at_that_fragment() -> None:
    """Fail fast (RFC 6455 section 8.1, Autobahn 6.4.1/6.4.2): the fragment that makes a text
    message invalid (here the code point 0x110000, out of range) fails the connection, before
    the rest arrives; a character split across fragments is fine."""
    c = core()
    assert c.receive(masked(wsframe.OP_TEXT, "κό".encode() + b"\xcf", fin=False), 100.0) == ()
    assert c.receive(masked(wsframe.OP_CONT, b"\x83", fin=False), 100.0) == ()
    out = c.receive(masked(wsframe.OP_CONT, b"\xf4\x90\x80\x80", fin=False), 100.0)
    assert kinds(out) == ["Reject", "Closing", "Disconnect"]
    assert error_codes(out) == ["bad_frame"]
    assert close_code(closing(out).frame) == CloseCode.INVALID_PAYLOAD
    assert c.state == CLOSED and c.buffered() == 0
    first = core().receive(masked(wsframe.OP_TEXT, b"\xff", fin=False), 100.0)
    assert close_code(closing(first).frame) == CloseCode.INVALID_PAYLOAD
    # A message that ends inside a character is invalid as a whole.
    c = core()
    c.receive(masked(wsframe.OP_TEXT, b'["x", "\xce', fin=False), 100.0)
    out = c.receive(masked(wsframe.OP_CONT, b"", fin=True), 100.0)
    assert close_code(closing(out).frame) == CloseCode.INVALID_PAYLOAD


def test_wrong_encoding_and_bad_frames_are_rejected_not_closed() -> None:
    c = core()
    out = c.receive(masked(wsframe.OP_BINARY, msgspec.msgpack.encode({"type": "ping"})), 100.0)
    out = [*out, *c.receive(text([1, 2]) + text({"type": "nope"}), 100.0)]
    assert error_codes(out) == ["bad_frame", "bad_frame", "unknown_type"]
    assert c.state == 0 and c.strikes == 3


def test_msgpack_connection() -> None:
    c = core(binary=True)
    out = c.receive(masked(wsframe.OP_BINARY, msgspec.msgpack.encode({"type": "ping"})), 100.0)
    assert out == [Message(protocol.Ping())]
    assert c.frame_bytes(protocol.Pong("r", 5))[0] == 0x80 | wsframe.OP_BINARY


# -- rate limit and strikes -------------------------------------------------------------------


def test_token_bucket_with_the_clock() -> None:
    """``burst`` messages at once, then rate_limited (a failed reply for a command); the bucket
    refills at ``rate_per_s`` on the clock given."""
    c = core()
    out = c.receive(text({"type": "ping"}) * 20, 100.0)
    assert kinds(out) == ["Message"] * 20
    cmd = {"type": "cmd", "ref": "c1", "name": "qa.ask"}
    out = c.receive(text({"type": "ping", "ref": "x"}) + text(cmd), 100.0)
    assert error_codes(out) == ["rate_limited", "reply"]
    reply = out[1]
    assert isinstance(reply, Reject) and isinstance(reply.answer, protocol.Reply)
    assert reply.answer.ref == "c1" and reply.answer.error is not None
    assert reply.answer.error.code == "rate_limited"
    assert kinds(c.receive(text({"type": "ping"}), 100.15)) == ["Message"]
    assert c.strikes == 0


def test_a_flood_of_rejected_frames_closes_with_4005_after_max_strikes() -> None:
    c = core()
    out = c.receive(text([0]) * LIMITS.max_strikes, 100.0)
    assert "Closing" not in kinds(out)
    out = c.receive(text([0]), 100.0)
    assert kinds(out) == ["Reject", "Closing"]
    assert closing(out).code == CloseCode.TOO_MANY_ERRORS
    assert c.state == CLOSING


# -- close handshake --------------------------------------------------------------------------


def test_client_close_is_answered_and_the_socket_dropped() -> None:
    c = core()
    out = c.receive(masked(wsframe.OP_CLOSE, struct.pack("!H", 1000) + b"bye"), 100.0)
    assert kinds(out) == ["Closing", "Disconnect"]
    assert closing(out).code == close_code(closing(out).frame) == CloseCode.NORMAL


def test_a_client_close_with_any_valid_code_is_answered_with_1000() -> None:
    """Autobahn 7.7.3-7.7.13: the answer is 1000 or the peer's code, never another one (the
    gateway used to answer 1001). The code the connection ended with is still counted as
    1001, "the peer went away", so that the metric's label stays bounded."""
    for code in (1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999):
        frame = masked(wsframe.OP_CLOSE, struct.pack("!H", code) + b"why")
        out = core().receive(frame, 100.0)
        assert kinds(out) == ["Closing", "Disconnect"]
        assert close_code(closing(out).frame) == CloseCode.NORMAL, code
        assert closing(out).code == CloseCode.GOING_AWAY


def test_malformed_client_close_is_a_protocol_error() -> None:
    out = core().receive(masked(wsframe.OP_CLOSE, struct.pack("!H", 1005)), 100.0)
    assert close_code(closing(out).frame) == CloseCode.PROTOCOL_ERROR


def test_server_close_waits_for_the_client_close_then_drops() -> None:
    c = core()
    out = c.close(CloseCode.TOKEN_EXPIRED, None, 100.0)
    assert kinds(out) == ["Closing"]
    assert closing(out).deadline == 105.0
    assert close_code(closing(out).frame) == CloseCode.TOKEN_EXPIRED
    assert c.close(CloseCode.SERVER_RESTART, None, 100.0) == ()  # once only
    # Messages after our close frame are dropped unread; the client's close completes it.
    assert not c.receive(text({"type": "ping"}), 101.0)
    assert c.receive(masked(wsframe.OP_CLOSE, b""), 101.0) == [Disconnect()]
    assert c.expire(200.0) == ()


def test_server_close_times_out_and_aborts() -> None:
    c = core()
    c.close(CloseCode.SLOW_CONSUMER, None, 100.0)
    assert c.expire(104.9) == ()
    assert c.expire(105.0) == [Disconnect(abort=True)]
    assert c.receive(masked(wsframe.OP_CLOSE, b""), 106.0) == ()


def test_heartbeat_closes_after_missed_pongs_and_any_bytes_reset_it() -> None:
    c = core()
    assert c.heartbeat(100.0) == (Send(wsframe.PING_FRAME),)
    c.receive(masked(wsframe.OP_PONG, b""), 101.0)
    assert c.heartbeat(125.0) == (Send(wsframe.PING_FRAME),)
    assert c.heartbeat(150.0) == (Send(wsframe.PING_FRAME),)
    out = c.heartbeat(175.0)
    assert closing(out).code == CloseCode.PING_TIMEOUT
    assert c.heartbeat(200.0) == ()


# -- properties -------------------------------------------------------------------------------

_payloads = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b'{"type":"ping"}', b'{"type":"sub","topics":["user:1"]}', b"\xff"]),
)
_frames = st.builds(
    lambda op, payload, fin, rsv, mask: (
        masked(op, payload, fin=fin, rsv=rsv)
        if mask
        else bytes((0x80 * fin | op, len(payload))) + payload
    ),
    st.sampled_from([0, 1, 2, 3, 8, 9, 10]),
    _payloads,
    st.booleans(),
    st.sampled_from([0, 0, 0, 1]),
    st.sampled_from([True, True, True, False]),
)
_stream = st.lists(st.one_of(_frames, st.binary(max_size=30)), max_size=40).map(b"".join)
_events = st.lists(
    st.one_of(
        st.tuples(st.just("recv"), st.integers(1, 64)),
        st.tuples(st.just("tick"), st.floats(0, 30)),
        st.tuples(st.just("close"), st.sampled_from(list(CloseCode))),
    ),
    max_size=30,
)


@settings(max_examples=300, deadline=None)
@given(stream=_stream, events=_events, binary=st.booleans())
def test_any_byte_stream_keeps_the_invariants(
    stream: bytes, events: list[tuple[str, object]], binary: bool
) -> None:
    """Random frames and bytes, cut at random points, with clock steps, heartbeats and closes:
    never an exception; buffers stay bounded; at most one Closing, and after it no message,
    rejection or ping; nothing at all after the Disconnect."""
    limits = Limits(200, 4, 50.0, 5, 2, 5.0, max_strikes=3)
    c = WsCore(limits, binary, 0.0)
    now, pos = 0.0, 0
    seen: list[Output] = []
    for kind, arg in [*events, ("recv", len(stream))]:
        if kind == "recv":
            assert isinstance(arg, int)
            chunk, pos = stream[pos : pos + arg], pos + arg
            out = c.receive(chunk, now) if chunk else ()
        elif kind == "tick":
            assert isinstance(arg, float)
            now += arg
            out = [*c.heartbeat(now), *c.expire(now)]
        else:
            assert isinstance(arg, int)
            out = c.close(arg, None, now)
        seen += out
        # A partial frame is at most a header plus the largest payload; a message, the limit.
        assert c.buffered() <= 14 + 2 * limits.max_message_bytes
    closings = [i for i, o in enumerate(seen) if isinstance(o, Closing)]
    disconnects = [i for i, o in enumerate(seen) if isinstance(o, Disconnect)]
    assert len(closings) <= 1 and len(disconnects) <= 1
    if closings:
        after = seen[closings[0] + 1 :]
        assert not [o for o in after if isinstance(o, Message | Reject | Send)], after
    if disconnects:
        assert disconnects[0] == len(seen) - 1
        assert closings and closings[0] < disconnects[0]
        assert c.state == CLOSED and c.buffered() == 0
