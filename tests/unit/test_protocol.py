"""The wire protocol with bytes alone: client frame decoding, server frame encoding, close codes,
topics, cursors and SSE formatting. No servers, no event loop."""

from __future__ import annotations

import json

import msgspec
import pytest

from gateway import protocol
from gateway.protocol import (
    CloseCode,
    Cmd,
    ErrorCode,
    FrameError,
    Ping,
    Sub,
    Unsub,
    decode_client_frame,
)
from gateway.record import SSE, WS_JSON, WS_MSGPACK, Record

# -- decoding client frames -------------------------------------------------------------------


def _both(obj: object) -> list[tuple[bytes, bool]]:
    """The same frame as JSON text and as MessagePack binary."""
    return [(json.dumps(obj).encode(), False), (msgspec.msgpack.encode(obj), True)]


@pytest.mark.parametrize("binary", [False, True])
def test_decode_every_client_frame_type(binary: bool) -> None:
    """sub, unsub, cmd and ping decode to their Structs, with defaults for omitted fields."""
    enc = msgspec.msgpack.encode if binary else msgspec.json.encode
    sub = decode_client_frame(
        enc({"type": "sub", "topics": ["user:u1"], "cursors": {"user:u1": "1-0"}, "ref": "r"}),
        binary,
    )
    assert sub == Sub(["user:u1"], {"user:u1": "1-0"}, "r")
    assert decode_client_frame(enc({"type": "sub", "topics": []}), binary) == Sub([], {}, None)
    unsub = decode_client_frame(enc({"type": "unsub", "topics": ["a"], "ref": "u"}), binary)
    assert unsub == Unsub(["a"], "u")
    cmd = decode_client_frame(
        enc({"type": "cmd", "ref": "1", "name": "qa.ask", "data": {"q": "?"}, "topic": "live:c:s"}),
        binary,
    )
    assert cmd == Cmd("1", "qa.ask", {"q": "?"}, "live:c:s")
    assert decode_client_frame(enc({"type": "cmd", "ref": "2", "name": "x"}), binary) == Cmd(
        "2", "x", {}, None
    )
    assert decode_client_frame(enc({"type": "ping"}), binary) == Ping(None)
    assert decode_client_frame(enc({"type": "ping", "ref": "p"}), binary) == Ping("p")


def test_unknown_fields_are_ignored() -> None:
    """A newer client's extra fields do not break an older gateway (schema evolution)."""
    frame = decode_client_frame(b'{"type":"ping","ref":"p","future":[1,2]}', False)
    assert frame == Ping("p")


@pytest.mark.parametrize(
    ("payload", "binary", "code"),
    [
        (b"{bad", False, ErrorCode.BAD_FRAME),
        (b"", False, ErrorCode.BAD_FRAME),
        (b'{"type":"ping"} trailing', False, ErrorCode.BAD_FRAME),
        (b"\xc1", True, ErrorCode.BAD_FRAME),  # 0xc1 is never used in MessagePack
        (b"", True, ErrorCode.BAD_FRAME),
        (b"[1,2]", False, ErrorCode.BAD_FRAME),  # not an object
        (b"null", False, ErrorCode.BAD_FRAME),
        (msgspec.msgpack.encode([1]), True, ErrorCode.BAD_FRAME),
        (b'{"type":"nope"}', False, ErrorCode.UNKNOWN_TYPE),
        (b'{"type":"pong"}', False, ErrorCode.UNKNOWN_TYPE),  # a server frame type
        (msgspec.msgpack.encode({"type": "hello"}), True, ErrorCode.UNKNOWN_TYPE),
        (b'{"topics":["user:u1"]}', False, ErrorCode.UNKNOWN_TYPE),
        (msgspec.msgpack.encode({"ref": "x"}), True, ErrorCode.UNKNOWN_TYPE),
        (b'{"type":1}', False, ErrorCode.INVALID),
        (b'{"type":"sub","topics":"user:u1"}', False, ErrorCode.INVALID),
        (b'{"type":"sub","topics":[1]}', False, ErrorCode.INVALID),
        (b'{"type":"sub","topics":[],"cursors":["1-0"]}', False, ErrorCode.INVALID),
        (b'{"type":"sub"}', False, ErrorCode.INVALID),
        (b'{"type":"unsub","topics":[],"ref":5}', False, ErrorCode.INVALID),
        (b'{"type":"cmd","name":"x"}', False, ErrorCode.INVALID),  # no ref
        (b'{"type":"cmd","ref":"1","name":"x","data":[]}', False, ErrorCode.INVALID),
        (b'{"type":"cmd","ref":"1","name":""}', False, ErrorCode.INVALID),
        (b'{"type":"cmd","ref":"1","name":"' + b"n" * 65 + b'"}', False, ErrorCode.INVALID),
        (b'{"type":"ping","ref":"' + b"r" * 65 + b'"}', False, ErrorCode.INVALID),
        (msgspec.msgpack.encode({"type": "sub", "topics": [], "ref": "r" * 65}), True, "invalid"),
    ],
)
def test_decode_failures(payload: bytes, binary: bool, code: str) -> None:
    """Every malformed frame raises FrameError with its stable code, never anything else."""
    with pytest.raises(FrameError) as err:
        decode_client_frame(payload, binary)
    assert err.value.code == code
    assert err.value.message  # safe to show the client


def test_ref_of_64_characters_is_accepted() -> None:
    """The ref limit is inclusive: 64 characters pass, 65 do not (above)."""
    assert decode_client_frame(b'{"type":"ping","ref":"' + b"r" * 64 + b'"}', False).ref == "r" * 64


def test_cmd_with_bad_name_keeps_its_ref() -> None:
    """A command refused for its name still names its ref, so the client can match the error."""
    with pytest.raises(FrameError) as err:
        decode_client_frame(b'{"type":"cmd","ref":"abc","name":""}', False)
    assert err.value.ref == "abc"


@pytest.mark.parametrize(
    "payload",
    [
        b'{"type":"ping","ref":"\xff\xfe"}',  # invalid UTF-8 inside a string
        b'{"type":"ping"}\xff',  # after the document
        b'{"type":"pi\xc3ng"}',  # a truncated sequence inside the tag
    ],
)
def test_invalid_utf8_text_is_a_frame_error(payload: bytes) -> None:
    """Text that is not UTF-8 raises InvalidText (a FrameError), never UnicodeDecodeError."""
    with pytest.raises(protocol.InvalidText) as err:
        decode_client_frame(payload, False)
    assert err.value.code == ErrorCode.BAD_FRAME


def test_invalid_utf8_in_msgpack_string_is_bad_frame() -> None:
    """A MessagePack str that is not UTF-8 is a bad frame too (not an exception escaping)."""
    payload = b"\x81\xa4type\xa4p\xffng"
    with pytest.raises(FrameError) as err:
        decode_client_frame(payload, True)
    assert err.value.code == ErrorCode.BAD_FRAME
    assert not isinstance(err.value, protocol.InvalidText)


#: One frame of each class a misfit is sorted into, with the code and the message it gets.
MISFITS = [
    (b"[1,2]", False, ErrorCode.BAD_FRAME, "frame is not an object"),
    (msgspec.msgpack.encode("ping"), True, ErrorCode.BAD_FRAME, "frame is not an object"),
    (b'{"ref":"r"}', False, ErrorCode.UNKNOWN_TYPE, "frame has no type"),
    (msgspec.msgpack.encode({1: 2}), True, ErrorCode.UNKNOWN_TYPE, "frame has no type"),
    (b'{"type":"hello"}', False, ErrorCode.UNKNOWN_TYPE, "unknown frame type"),
    (msgspec.msgpack.encode({"type": "nope"}), True, ErrorCode.UNKNOWN_TYPE, "unknown frame type"),
    (b'{"type":["sub"]}', False, ErrorCode.INVALID, "the decoder's own words"),
    (b'{"type":"sub","topics":3}', False, ErrorCode.INVALID, "the decoder's own words"),
    (msgspec.msgpack.encode({"type": "cmd"}), True, ErrorCode.INVALID, "the decoder's own words"),
]


@pytest.mark.parametrize(("payload", "binary", "code", "message"), MISFITS)
def test_misfits_are_classified_by_shape_not_by_message(
    payload: bytes, binary: bool, code: ErrorCode, message: str
) -> None:
    """A frame that fails the typed decode gets its code from its shape: the same code
    whatever msgspec's message says (here a made-up one), so a msgspec release that rewords
    its errors cannot change what a client sees. Only ``invalid`` passes the message on."""
    err = protocol._misfit(payload, binary, msgspec.ValidationError("the decoder's own words"))
    assert (err.code, err.message) == (code, message)
    with pytest.raises(FrameError) as real:
        decode_client_frame(payload, binary)
    assert real.value.code == code


@pytest.mark.parametrize(
    ("payload", "binary", "error"),
    [
        # The typed decode stops at the first misfit (an array, an unknown tag) before the
        # syntax error: the bytes are still not a document.
        (b"[1, nonsense", False, "frame is not valid JSON"),
        (b'{"type":"nope", nonsense', False, "frame is not valid JSON"),
        (msgspec.msgpack.encode({"type": "nope"})[:-1], True, "frame is not valid MessagePack"),
        # A misfit that is not UTF-8 text either is invalid text (close 1007).
        (b'{"type":"nope","x":"\xff"}', False, "text frame is not valid UTF-8"),
    ],
)
def test_misfit_that_is_not_a_document_is_a_bad_frame(
    payload: bytes, binary: bool, error: str
) -> None:
    """Bytes that are not one JSON or MessagePack document are ``bad_frame`` however far the
    typed decode got before it stopped."""
    with pytest.raises(FrameError) as err:
        decode_client_frame(payload, binary)
    assert (err.value.code, err.value.message) == (ErrorCode.BAD_FRAME, error)


def test_client_types_are_the_union_tags() -> None:
    """The known frame types come from the ClientFrame union itself, not a second list."""
    assert {"sub", "unsub", "cmd", "ping"} == protocol.CLIENT_TYPES


# -- encoding server frames -------------------------------------------------------------------


def _limits() -> protocol.Limits:
    return protocol.Limits(65536, 20.0, 40, 64)


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (
            protocol.Hello(1, "gw.1", "u1", 25.0, _limits()),
            {
                "type": "hello",
                "v": 1,
                "conn": "gw.1",
                "user": "u1",
                "heartbeat_s": 25.0,
                "limits": {
                    "max_frame_bytes": 65536,
                    "cmd_rate_per_s": 20.0,
                    "cmd_burst": 40,
                    "max_topics": 64,
                },
                "encoding": "json",
            },
        ),
        (
            protocol.Subscribed("cohort:c", "r", 3),
            {"type": "subscribed", "topic": "cohort:c", "ref": "r", "replayed": 3},
        ),
        (
            protocol.Unsubscribed("cohort:c"),
            {"type": "unsubscribed", "topic": "cohort:c", "ref": None},
        ),
        (
            protocol.Reply("1", True, {"k": "v"}),
            {"type": "reply", "ref": "1", "ok": True, "data": {"k": "v"}},
        ),
        (
            protocol.Reply("2", False, error=protocol.ErrorBody("timeout", "late")),
            {
                "type": "reply",
                "ref": "2",
                "ok": False,
                "error": {"code": "timeout", "message": "late"},
            },
        ),
        (
            protocol.Error("forbidden", "no", topic="staff:c"),
            {"type": "error", "code": "forbidden", "message": "no", "topic": "staff:c"},
        ),
        (
            protocol.Reset("user:u1"),
            {"type": "reset", "topic": "user:u1", "reason": "history_trimmed"},
        ),
        (protocol.Pong("p", 7), {"type": "pong", "ref": "p", "ts": 7}),
        (protocol.Pong(), {"type": "pong"}),
        (
            protocol.Closing(4000, "server restart", True),
            {"type": "closing", "code": 4000, "reason": "server restart", "reconnect": True},
        ),
    ],
)
def test_encode_server_frames(frame: protocol.ServerFrame, expected: dict) -> None:
    """Every server frame encodes to the documented JSON and to the same MessagePack map."""
    assert json.loads(protocol.encode_json(frame)) == expected
    assert json.loads(protocol.encode(frame, False)) == expected
    assert msgspec.msgpack.decode(protocol.encode_msgpack(frame)) == expected
    assert msgspec.msgpack.decode(protocol.encode(frame, True)) == expected


def test_encode_event_in_both_encodings() -> None:
    """An event embeds the body already encoded for the connection's encoding."""
    expected = {
        "type": "event",
        "topic": "user:u1",
        "id": "5-1",
        "event": "x.y",
        "ts": 5,
        "data": {"a": 1},
    }
    ev = protocol.Event("user:u1", "5-1", "x.y", 5, msgspec.Raw(b'{"a":1}'))
    assert json.loads(protocol.encode_json(ev)) == expected
    ev = protocol.Event("user:u1", "5-1", "x.y", 5, msgspec.Raw(msgspec.msgpack.encode({"a": 1})))
    assert msgspec.msgpack.decode(protocol.encode_msgpack(ev)) == expected


def test_event_body_is_spliced_not_reencoded() -> None:
    """The publisher's encoded body appears byte for byte in the frame (never decoded)."""
    body = b'{"z":1,  "a":[1,2]}'
    frame = protocol.encode_json(protocol.Event("t:x", "1-0", "e", 1, msgspec.Raw(body)))
    assert body in frame


def test_record_builds_each_frame_once() -> None:
    """A Record returns the same bytes object on every call per encoding, and SSE blocks are
    well-formed."""
    rec = Record("user:u1", "1700000000000-3", "e.x", b'{"a":1}', msgspec.msgpack.encode({"a": 1}))
    ws = rec.frame(WS_JSON)
    assert rec.frame(WS_JSON) is ws
    assert ws[0] == 0x81 and json.loads(ws[2:])["id"] == "1700000000000-3"
    mp = rec.frame(WS_MSGPACK)
    assert mp[0] == 0x82 and msgspec.msgpack.decode(mp[2:])["data"] == {"a": 1}
    sse = rec.frame(SSE)
    assert sse.startswith(b"event: event\ndata: {") and sse.endswith(b"\n\n")
    assert json.loads(sse.split(b"data: ", 1)[1])["ts"] == 1700000000000
    # A single-topic stream gets one block: its cursor (the event ID) and the shared event.
    assert rec.sse_single() == b"id: 1700000000000-3\n" + sse
    assert rec.sse_single() is rec.sse_single()


# -- close codes ------------------------------------------------------------------------------


def test_close_code_ranges() -> None:
    """4000-4499 (and 1001, 1011) mean reconnect; 4500-4999 and protocol errors do not."""
    for code in CloseCode:
        if 4000 <= code < 4500:
            assert code.reconnect, code
        elif code >= 4500:
            assert not code.reconnect, code
    assert CloseCode.GOING_AWAY.reconnect and CloseCode.INTERNAL_ERROR.reconnect
    for value in (1000, 1002, 1003, 1007, 1009):
        assert not CloseCode(value).reconnect
    assert CloseCode.SLOW_CONSUMER.reconnect and CloseCode.TOKEN_EXPIRED.reconnect
    assert not CloseCode.SESSION_REVOKED.reconnect and not CloseCode.BAD_TOKEN.reconnect


def test_every_close_code_has_a_short_reason() -> None:
    """Each code has a reason, and every reason fits a close frame (under 123 bytes)."""
    for code in CloseCode:
        assert protocol.CLOSE_REASONS[code]
        assert len(protocol.CLOSE_REASONS[code].encode()) < 123


# -- cursors ----------------------------------------------------------------------------------


def test_cursor_round_trip() -> None:
    """A compact cursor maps slot by slot to the topics; empty slots mean "none yet"."""
    topics = ["user:u1", "cohort:c1", "live:c1:s1"]
    cursor = "1732240000000-0,,1732240000007-2"
    positions = protocol.parse_cursor(cursor, topics)
    assert positions == {"user:u1": "1732240000000-0", "live:c1:s1": "1732240000007-2"}
    assert protocol.format_cursor(topics, positions) == cursor
    assert protocol.parse_cursor("", topics) == {}
    assert protocol.format_cursor(topics, {}) == ",,"
    assert protocol.parse_cursor("5-0", ["user:u1"]) == {"user:u1": "5-0"}


@pytest.mark.parametrize(
    "cursor", ["1-0", "1-0,2-0,3-0", "x-0,", "1-0,abc", "1-,", "-1,", "1-0-0,", "1-0,1_0"]
)
def test_malformed_cursor(cursor: str) -> None:
    """Wrong slot count or a slot that is not a stream ID: ValueError."""
    with pytest.raises(ValueError):
        protocol.parse_cursor(cursor, ["user:u1", "cohort:c1"])


def test_is_stream_id() -> None:
    """Stream IDs are ``ms-seq``, each an unsigned 64-bit number in ASCII digits."""
    assert protocol.is_stream_id("0-0") and protocol.is_stream_id("1732240000000-12")
    top = str(2**64 - 1)
    assert protocol.is_stream_id(f"{top}-{top}")
    for bad in (
        *("", "1", "1-", "-1", "a-1", "1-a", "1-1-1", "1 -1", "9" * 30 + "-" + "9" * 11),
        *("1-\u00b2", "\u00b2-1", "\u0661-0", f"{2**64}-0", f"0-{2**64}"),
    ):
        assert not protocol.is_stream_id(bad), bad


@pytest.mark.parametrize(
    ("a", "b", "after"),
    [
        ("2-0", "1-0", True),
        ("1-0", "2-0", False),
        ("1-0", "1-0", False),
        ("1-10", "1-9", True),  # numeric sequence, not string order
        ("1-9", "1-10", False),
        ("10-0", "9-99", True),  # numeric ms, not string order
        ("9-99", "10-0", False),
        ("1732240000001-0", "1732240000000-5", True),
    ],
)
def test_id_after(a: str, b: str, after: bool) -> None:
    """Stream IDs compare by milliseconds, then sequence, both numerically."""
    assert protocol.id_after(a, b) is after


def test_event_ts_reads_the_id() -> None:
    assert protocol.event_ts("1732240000007-2") == 1732240000007


# -- SSE --------------------------------------------------------------------------------------


def test_sse_formatting() -> None:
    """Event blocks, id lines, retry and the heartbeat comment follow the SSE grammar."""
    assert (
        protocol.sse_block(b"reset", b'{"topic":"t"}') == b'event: reset\ndata: {"topic":"t"}\n\n'
    )
    assert protocol.sse_id_line("1-0,2-0") == b"id: 1-0,2-0\n"
    assert protocol.sse_retry(2000) == b"retry: 2000\n\n"
    assert protocol.SSE_HEARTBEAT.startswith(b":") and protocol.SSE_HEARTBEAT.endswith(b"\n\n")
    head = protocol.SSE_HEADERS.decode()
    assert head.startswith("HTTP/1.1 200 OK\r\n")
    assert "Content-Type: text/event-stream" in head
    assert "Cache-Control: no-cache" in head
    assert "X-Accel-Buffering: no" in head


def test_json_server_frames_have_no_newline() -> None:
    """An SSE ``data:`` line holds one JSON document: the encoder never emits a newline, even
    for strings that contain one."""
    frame = protocol.Error("invalid", "line one\nline two\r\n")
    assert b"\n" not in protocol.encode_json(frame)
