"""RFC 6455 framing with bytes alone: handshake key, frame building and parsing."""

from __future__ import annotations

import os
import struct

import pytest

from gateway import wsframe
from gateway.protocol import CloseCode
from gateway.wsframe import ProtocolViolation, parse


def masked(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, key: bytes = b""
) -> bytes:
    """A client frame as a browser sends it (masked)."""
    return wsframe.build(opcode, payload, key or os.urandom(4), fin=fin, rsv=rsv)


# -- handshake --------------------------------------------------------------------------------


def test_accept_key_rfc_example() -> None:
    """RFC 6455 section 1.3's worked example."""
    assert wsframe.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_valid_client_key() -> None:
    """A key is 16 random bytes, base64-encoded."""
    assert wsframe.valid_client_key("dGhlIHNhbXBsZSBub25jZQ==")
    assert not wsframe.valid_client_key("")
    assert not wsframe.valid_client_key("not base64!")
    assert not wsframe.valid_client_key("dGhlIHNhbXBsZQ==")  # 10 bytes


def test_handshake_response() -> None:
    """101 with the accept key, and the subprotocol only when one was chosen."""
    resp = wsframe.handshake_response("dGhlIHNhbXBsZSBub25jZQ==", "lectern.msgpack")
    assert resp.startswith(b"HTTP/1.1 101 Switching Protocols\r\n") and resp.endswith(b"\r\n\r\n")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in resp
    assert b"Sec-WebSocket-Protocol: lectern.msgpack\r\n" in resp
    assert b"Sec-WebSocket-Protocol" not in wsframe.handshake_response(
        "dGhlIHNhbXBsZSBub25jZQ==", None
    )


# -- building ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "header"),
    [
        (0, b"\x81\x00"),
        (125, b"\x81\x7d"),
        (126, b"\x81\x7e\x00\x7e"),
        (65535, b"\x81\x7e\xff\xff"),
        (65536, b"\x81\x7f" + struct.pack("!Q", 65536)),
    ],
)
def test_build_lengths(n: int, header: bytes) -> None:
    """7-bit, 16-bit and 64-bit lengths at their boundaries; server frames are never masked."""
    frame = wsframe.build(wsframe.OP_TEXT, b"x" * n)
    assert frame[: len(header)] == header
    assert len(frame) == len(header) + n


def test_build_close_and_ping() -> None:
    """A close frame carries the code and a reason cut to fit in a control frame."""
    frame = wsframe.build_close(4001, "slow consumer")
    assert frame == b"\x88" + bytes((2 + 13,)) + struct.pack("!H", 4001) + b"slow consumer"
    long = wsframe.build_close(4001, "x" * 500)
    assert len(long) - 2 <= 125
    assert wsframe.PING_FRAME == b"\x89\x00"


def test_peer_close_code() -> None:
    """A peer's close: its code (1005 when it gave none); a one-byte payload, a code no peer
    may send or a reason that is not UTF-8 is a protocol failure."""
    assert wsframe.peer_close_code(struct.pack("!H", 4002) + b"bye") == 4002
    assert wsframe.peer_close_code(struct.pack("!H", 1000)) == 1000
    assert wsframe.peer_close_code(b"") == wsframe.NO_STATUS
    for bad, code in [
        (b"\x03", CloseCode.PROTOCOL_ERROR),
        (struct.pack("!H", 1005), CloseCode.PROTOCOL_ERROR),
        (struct.pack("!H", 999), CloseCode.PROTOCOL_ERROR),
        (struct.pack("!H", 5000), CloseCode.PROTOCOL_ERROR),
        (struct.pack("!H", 1000) + b"\xff", CloseCode.INVALID_PAYLOAD),
    ]:
        with pytest.raises(ProtocolViolation) as info:
            wsframe.peer_close_code(bad)
        assert info.value.code == code, bad


def test_frame_size() -> None:
    """The size of the frame starting a buffer, once its header is complete."""
    frame = masked(wsframe.OP_TEXT, b"x" * 300)
    assert wsframe.frame_size(frame[:1]) == 0
    assert wsframe.frame_size(frame[:3]) == 0
    assert wsframe.frame_size(frame[:4]) == len(frame)
    assert wsframe.frame_size(masked(1, b"abc")[:2]) == 9
    big = masked(wsframe.OP_BINARY, b"y" * 70_000)
    assert wsframe.frame_size(big[:9]) == 0
    assert wsframe.frame_size(big[:10]) == len(big)


# -- parsing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 125, 126, 1000, 65535, 65536, 70000])
def test_parse_unmasks_every_length(n: int) -> None:
    """Masked payloads of every length class come back unmasked."""
    payload = os.urandom(n)
    frames, tail = parse(masked(wsframe.OP_BINARY, payload), 1 << 20)
    assert frames == [(wsframe.OP_BINARY, True, payload)]
    assert tail == b""


def test_unmask_known_vector() -> None:
    """RFC 6455 section 5.7: "Hello" masked with 37 fa 21 3d."""
    frame = bytes.fromhex("818537fa213d7f9f4d5158")
    assert parse(frame, 1000) == ([(wsframe.OP_TEXT, True, b"Hello")], b"")


def test_partial_frames_across_calls() -> None:
    """Fed a byte at a time, the parser keeps the tail and yields each frame once, whole."""
    stream = (
        masked(1, b"first") + masked(2, b"y" * 300) + masked(9, b"pp") + masked(1, b"z" * 70000)
    )
    frames: list[tuple[int, bool, bytes]] = []
    tail = b""
    for i in range(0, len(stream), 7):
        got, tail = parse(tail + stream[i : i + 7], 1 << 20)
        frames += got
    assert tail == b""
    assert frames == [
        (1, True, b"first"),
        (2, True, b"y" * 300),
        (9, True, b"pp"),
        (1, True, b"z" * 70000),
    ]


def test_several_frames_in_one_read() -> None:
    """Complete frames come out in order; the start of the next one is the tail."""
    third = masked(1, b"cc")
    frames, tail = parse(masked(1, b"a") + masked(1, b"b") + third[:3], 100)
    assert [p for _, _, p in frames] == [b"a", b"b"]
    assert tail == third[:3]
    assert parse(tail + third[3:], 100) == ([(1, True, b"cc")], b"")


def test_fragments_keep_fin_and_opcode() -> None:
    """Fragmented messages are reported frame by frame (reassembly is the connection's job)."""
    data = masked(1, b"ab", fin=False) + masked(0, b"cd", fin=False) + masked(0, b"e")
    frames, _ = parse(data, 100)
    assert frames == [(1, False, b"ab"), (0, False, b"cd"), (0, True, b"e")]


def test_unmasked_client_frame_is_refused() -> None:
    with pytest.raises(ProtocolViolation) as err:
        parse(b"\x81\x02hi", 100)
    assert err.value.code == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("rsv", [1, 2, 4])
def test_reserved_bits_are_refused(rsv: int) -> None:
    """No extension is negotiated, so RSV1-3 must be zero."""
    with pytest.raises(ProtocolViolation) as err:
        parse(masked(1, b"x", rsv=rsv), 100)
    assert err.value.code == CloseCode.PROTOCOL_ERROR


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 0xB, 0xC, 0xF])
def test_unknown_opcodes_are_refused(opcode: int) -> None:
    with pytest.raises(ProtocolViolation):
        parse(masked(opcode, b""), 100)


def test_control_frame_rules() -> None:
    """Control frames may not be fragmented nor carry more than 125 bytes."""
    with pytest.raises(ProtocolViolation):
        parse(masked(wsframe.OP_PING, b"x", fin=False), 1000)
    with pytest.raises(ProtocolViolation):
        parse(masked(wsframe.OP_PING, b"x" * 126), 1000)
    with pytest.raises(ProtocolViolation):
        parse(masked(wsframe.OP_CLOSE, b"x" * 200), 1000)
    frames, _ = parse(masked(wsframe.OP_PONG, b"x" * 125), 10)  # data limit does not apply
    assert frames == [(wsframe.OP_PONG, True, b"x" * 125)]


@pytest.mark.parametrize("n", [101, 70000])
def test_oversize_is_refused_from_the_header(n: int) -> None:
    """An oversized frame is refused as soon as its header is in, before the payload."""
    head = masked(1, b"x" * n)[:14]
    with pytest.raises(ProtocolViolation) as err:
        parse(head, 100)
    assert err.value.code == CloseCode.MESSAGE_TOO_BIG


def test_limit_is_inclusive() -> None:
    frames, _ = parse(masked(1, b"x" * 100), 100)
    assert frames[0][2] == b"x" * 100


def test_incomplete_headers_wait_for_more() -> None:
    """A header cut before its extended length or mask is kept as the tail."""
    frame = masked(1, b"x" * 70000)
    for cut in (1, 2, 5, 9, 10, 13):
        assert parse(frame[:cut], 1 << 20) == ([], frame[:cut])


def test_one_framer_in_both_roles() -> None:
    """A client builds masked frames that the server reads; the server builds unmasked ones
    that the client reads; each role refuses the other's masking."""
    payload = b"x" * 300
    client = wsframe.build(wsframe.OP_TEXT, payload, b"k3y!", fin=False)
    assert client[0] == wsframe.OP_TEXT and client[1] == 0x80 | 126
    assert wsframe.parse_one(client, 0, 1000) == (wsframe.OP_TEXT, False, payload, len(client))
    server = wsframe.build(wsframe.OP_BINARY, payload)
    assert wsframe.parse_one(server, 0, 1000, from_client=False) == (
        wsframe.OP_BINARY,
        True,
        payload,
        len(server),
    )
    assert wsframe.parse_one(bytearray(server[:50]), 0, 1000, from_client=False) is None
    for frame, from_client in [(client, False), (server, True)]:
        with pytest.raises(ProtocolViolation):
            wsframe.parse_one(frame, 0, 1000, from_client=from_client)
