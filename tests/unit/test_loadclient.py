"""The load client's wire parsers, tested with bytes alone (no sockets, no servers)."""

from __future__ import annotations

import json
import math
import struct

import pytest

from benchmarks.loadclient import ClientConfig, percentile, summarize
from benchmarks.loadproto import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    ChunkedDecoder,
    SSEParser,
    WireError,
    WSParser,
    build_client_frame,
    build_request,
    close_code,
    extract_sent,
    extract_sent_msgpack,
    mask_payload,
    parse_response_head,
    ws_accept,
)


def server_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return bytes((first, 126)) + struct.pack("!H", n) + payload
    return bytes((first, 127)) + struct.pack("!Q", n) + payload


def feed_bytewise(parser: WSParser, data: bytes) -> list[tuple[int, bytes]]:
    out = []
    for i in range(len(data)):
        out += parser.feed(data[i : i + 1])
    return out


# --- WebSocket ----------------------------------------------------------------------------


def test_ws_accept_matches_rfc_example() -> None:
    """RFC 6455 section 1.3 gives this key and accept pair."""
    assert ws_accept("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_whole_frames_of_each_length_encoding() -> None:
    """7-bit, 16-bit and 64-bit lengths all parse, several frames in one read."""
    payloads = [b"a" * 5, b"b" * 300, b"c" * 70_000]
    data = b"".join(server_frame(OP_TEXT, p) for p in payloads)
    assert WSParser().feed(data) == [(OP_TEXT, p) for p in payloads]


def test_frames_split_at_every_byte() -> None:
    """A read may end anywhere: in the header, the extended length or the payload."""
    payloads = [b"x" * 3, b"y" * 200, b"z" * 66_000]
    data = b"".join(server_frame(OP_BINARY, p) for p in payloads)
    assert feed_bytewise(WSParser(), data) == [(OP_BINARY, p) for p in payloads]


def test_frames_split_across_reads_of_mixed_sizes() -> None:
    data = server_frame(OP_TEXT, b"hello") + server_frame(OP_TEXT, b"w" * 1000)
    parser = WSParser()
    assert parser.feed(data[:3]) == []
    assert parser.feed(data[3:9]) == [(OP_TEXT, b"hello")]
    assert parser.feed(data[9:500]) == []
    assert parser.feed(data[500:]) == [(OP_TEXT, b"w" * 1000)]


def test_fragmented_message_is_joined_and_control_frames_pass_between() -> None:
    data = (
        server_frame(OP_TEXT, b"hel", fin=False)
        + server_frame(OP_PING, b"p")
        + server_frame(0x0, b"lo ", fin=False)
        + server_frame(0x0, b"world")
    )
    assert WSParser().feed(data) == [(OP_PING, b"p"), (OP_TEXT, b"hello world")]
    assert feed_bytewise(WSParser(), data) == [(OP_PING, b"p"), (OP_TEXT, b"hello world")]


def test_unexpected_continuation_is_an_error() -> None:
    with pytest.raises(WireError):
        WSParser().feed(server_frame(0x0, b"x"))


def test_masked_server_frame_is_unmasked() -> None:
    frame = build_client_frame(OP_TEXT, b"masked text", mask=b"\x01\x02\x03\x04")
    assert WSParser().feed(frame) == [(OP_TEXT, b"masked text")]


def test_client_frames_are_masked() -> None:
    frame = build_client_frame(OP_TEXT, b"40", mask=b"\xaa\xbb\xcc\xdd")
    assert frame[0] == 0x81
    assert frame[1] == 0x80 | 2
    assert frame[2:6] == b"\xaa\xbb\xcc\xdd"
    assert mask_payload(frame[6:], b"\xaa\xbb\xcc\xdd") == b"40"
    big = build_client_frame(OP_BINARY, b"q" * 1000)
    assert big[1] == 0x80 | 126 and struct.unpack("!H", big[2:4])[0] == 1000


def test_close_code() -> None:
    assert close_code(struct.pack("!H", 4001) + b"slow consumer") == 4001
    assert close_code(b"") == 1005
    assert WSParser().feed(server_frame(OP_CLOSE, struct.pack("!H", 1001))) == [
        (OP_CLOSE, b"\x03\xe9")
    ]


# --- HTTP ---------------------------------------------------------------------------------


def test_upgrade_request_and_response_head() -> None:
    request = build_request("127.0.0.1", 8080, "/ws?token=t", [("Origin", "x")], "a2V5")
    assert request.startswith(b"GET /ws?token=t HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n")
    assert b"Sec-WebSocket-Key: a2V5\r\n" in request and b"Origin: x\r\n" in request
    assert request.endswith(b"\r\n\r\n")
    response = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: k"
    assert parse_response_head(response) is None
    parsed = parse_response_head(response + b"\r\n\r\n\x81\x00")
    assert parsed is not None
    head, offset = parsed
    assert head.status == 101 and head.headers["sec-websocket-accept"] == "k"
    assert (response + b"\r\n\r\n\x81\x00")[offset:] == b"\x81\x00"


def test_bad_status_line_is_an_error() -> None:
    with pytest.raises(WireError):
        parse_response_head(b"SSH-2.0-OpenSSH\r\n\r\n")


def test_chunked_decoder_across_arbitrary_splits() -> None:
    body = b"5\r\nhello\r\n1;ext=1\r\n \r\nC\r\nworld, again\r\n0\r\n\r\n"
    whole = ChunkedDecoder()
    assert whole.feed(body) == b"hello world, again" and whole.done
    for cut in range(1, len(body)):
        decoder = ChunkedDecoder()
        assert decoder.feed(body[:cut]) + decoder.feed(body[cut:]) == b"hello world, again"
        assert decoder.done


# --- SSE ----------------------------------------------------------------------------------

STREAM = (
    b": connected\n\n"
    b'id: 1-0\nevent: bench\ndata: {"sent": 1.5}\n\n'
    b"retry: 3000\ndata: line one\ndata: line two\n\n"
    b"id: 2-0\r\nevent: x\r\ndata:no space\r\n\r\n"
)


def _collect(chunks: list[bytes]) -> tuple[list[tuple[str, str | None, bytes]], SSEParser]:
    parser = SSEParser()
    events = []
    for chunk in chunks:
        events += [(e.event, e.id, e.data) for e in parser.feed(chunk)]
    return events, parser


EXPECTED = [
    ("bench", "1-0", b'{"sent": 1.5}'),
    ("message", "1-0", b"line one\nline two"),
    ("x", "2-0", b"no space"),
]


def test_sse_events_fields_and_comments() -> None:
    events, parser = _collect([STREAM])
    assert events == EXPECTED
    assert parser.comments == 1


def test_sse_split_at_every_byte() -> None:
    events, _ = _collect([STREAM[i : i + 1] for i in range(len(STREAM))])
    assert events == EXPECTED


def test_sse_crlf_split_between_chunks_and_lone_cr() -> None:
    events, _ = _collect([b"data: a\r", b"\ndata: b\r", b"\r", b"data: c\r\rdata: d\n", b"\n"])
    assert events == [("message", None, b"a\nb"), ("message", None, b"c"), ("message", None, b"d")]


def test_sse_event_without_data_is_not_dispatched() -> None:
    events, parser = _collect([b"id: 7\nevent: ping\n\n"])
    assert events == [] and parser.last_id == "7"


# --- timestamps and percentiles -----------------------------------------------------------


def test_extract_sent_from_lectern_frame() -> None:
    frame = (
        b'{"type":"event","topic":"bench:all","id":"1732240000000-0","event":"bench",'
        b'"ts":1732240000000,"data":{"seq":17,"sent":1732240000.123456}}'
    )
    assert extract_sent(frame) == [1732240000.123456]


def test_extract_sent_from_socketio_packet_and_many_events() -> None:
    packet = b'42["bench",{"seq":1,"sent": 1700000000.5,"pad":"xx"}]'
    assert extract_sent(packet) == [1700000000.5]
    batch = json.dumps([{"sent": 1.25}, {"sent": 2e3}, {"x": 1}]).encode()
    assert extract_sent(batch) == [1.25, 2000.0]
    assert extract_sent(b'{"sent":"not a number"}') == []
    assert extract_sent(b"no timestamps") == []


def test_extract_sent_msgpack() -> None:
    payload = b"\x82\xa3seq\x01\xa4sent\xcb" + struct.pack("!d", 1700000000.25)
    assert extract_sent_msgpack(payload) == [1700000000.25]
    assert extract_sent_msgpack(payload[:-1]) == []


def test_percentile_interpolates() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == 2.5
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile(values, 101)


def test_summarize() -> None:
    summary = summarize([float(v) for v in range(1, 1001)])
    assert summary.count == 1000
    assert summary.p50 == pytest.approx(500.5)
    assert summary.p99 == pytest.approx(990.01)
    assert summary.max == 1000.0
    assert summarize([]).count == 0


# --- configuration ------------------------------------------------------------------------


def test_config_spreads_connections_and_renders_templates() -> None:
    cfg = ClientConfig(
        port=1, connections=40_001, path="/ws?token={token}&n={i}", tokens=("a", "b")
    )
    cfg.validate()
    slices = cfg.slices()
    assert len(slices) == 3 and sum(map(len, slices)) == 40_001
    assert max(map(len, slices)) <= 15_000
    assert cfg.render(cfg.resolved_path(), 3) == "/ws?token=b&n=3"
    assert ClientConfig(port=1, connections=10, transport="socketio").resolved_path() == (
        "/socket.io/?EIO=4&transport=websocket"
    )


def test_config_refuses_targets_outside_loopback() -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.0/8"):
        ClientConfig(port=1, connections=1, host="10.0.0.1").validate()
    with pytest.raises(ValueError, match="per process"):
        ClientConfig(port=1, connections=40_000, processes=2).validate()
