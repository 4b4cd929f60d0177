"""RFC 6455 framing: handshake, frame parsing and frame building, for either role.

Pure functions over bytes, shared by the gateway (the server), the test clients
(tests/gateway/clients.py) and the load clients (benchmarks/loadproto.py). The role is a
parameter: a client masks what it builds (``build(..., mask=key)``) and a server reads masked
frames (``parse_one(..., from_client=True)``); the gateway's own frames are never masked and
never fragmented. Parsing is stateless (a caller keeps only the tail of a partial frame).
"""

from __future__ import annotations

import base64
import hashlib
import struct

from gateway.protocol import CloseCode

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_pack_h = struct.Struct("!H").pack
_pack_q = struct.Struct("!Q").pack
_unpack_h = struct.Struct("!H").unpack_from
_unpack_q = struct.Struct("!Q").unpack_from


def accept_key(client_key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value for a ``Sec-WebSocket-Key``."""
    # RFC 6455 fixes SHA-1 here; it proves the server speaks WebSocket, it protects nothing.
    digest = hashlib.sha1(client_key.encode() + _GUID, usedforsecurity=False).digest()
    return base64.b64encode(digest).decode()


def valid_client_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        return False


def handshake_response(client_key: str, subprotocol: str | None) -> bytes:
    lines = [
        b"HTTP/1.1 101 Switching Protocols",
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Accept: " + accept_key(client_key).encode(),
    ]
    if subprotocol:
        lines.append(b"Sec-WebSocket-Protocol: " + subprotocol.encode())
    return b"\r\n".join(lines) + b"\r\n\r\n"


def build(
    opcode: int, payload: bytes, mask: bytes | None = None, *, fin: bool = True, rsv: int = 0
) -> bytes:
    """One frame, in either role: a server's is unmasked (``mask`` None), a client's carries
    its 4-byte ``mask`` and the payload masked with it (RFC 6455 section 5.3). ``fin=False``
    makes a fragment; ``rsv`` sets the reserved bits (only a test of a broken peer wants it)."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | rsv << 4 | opcode
    masked = 0 if mask is None else 0x80
    if n < 126:
        header = bytes((b0, masked | n))
    elif n < 65536:
        header = bytes((b0, masked | 126)) + _pack_h(n)
    else:
        header = bytes((b0, masked | 127)) + _pack_q(n)
    if mask is None:
        return header + payload
    return header + mask + unmask(mask, payload)


def build_close(code: int, reason: str = "") -> bytes:
    return build(OP_CLOSE, _pack_h(code) + reason.encode()[:120])


PING_FRAME = build(OP_PING, b"")


class ProtocolViolation(Exception):
    """The peer broke RFC 6455; the connection must close with ``code``."""

    def __init__(self, code: CloseCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def unmask(mask: bytes | bytearray, data: bytes | bytearray) -> bytes:
    """``data`` XOR the 4-byte ``mask`` repeated: unmasks, and masks (XOR is its own inverse)."""
    n = len(data)
    if n == 0:
        return b""
    # One big-int XOR is far faster in CPython than a byte loop.
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


_OPCODES = frozenset((OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG))
Frame = tuple[int, bool, bytes, int]


def parse_one(
    buf: bytes | bytearray, pos: int, max_payload: int, *, from_client: bool = True
) -> Frame | None:
    """The frame starting at ``pos``: ``(opcode, fin, payload, end)`` with ``end`` the
    position after it, or None while it is incomplete. The role is ``from_client``: a server
    reads client frames, which must be masked; a client reads server frames, which must not
    be. Raises :class:`ProtocolViolation` for the wrong masking, reserved bits, an unknown
    opcode, a fragmented or oversized control frame, and a payload over ``max_payload``
    (checked from the header, before the payload is buffered). One frame at a time, so that
    a caller that stops (a connection that closes) parses nothing after it."""
    end = len(buf)
    if end - pos < 2:
        return None
    b0 = buf[pos]
    b1 = buf[pos + 1]
    fin = bool(b0 & 0x80)
    opcode = b0 & 0x0F
    if b0 & 0x70:
        raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, "reserved bits set")
    if opcode not in _OPCODES:
        raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, "unknown opcode")
    if bool(b1 & 0x80) != from_client:
        wrong = "client frames must be masked" if from_client else "server frames are unmasked"
        raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, wrong)
    length = b1 & 0x7F
    head = 2
    if length == 126:
        if end - pos < 4:
            return None
        length = _unpack_h(buf, pos + 2)[0]
        head = 4
    elif length == 127:
        if end - pos < 10:
            return None
        length = _unpack_q(buf, pos + 2)[0]
        head = 10
    if opcode >= OP_CLOSE:
        if length > 125 or not fin:
            raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, "bad control frame")
    elif length > max_payload:
        raise ProtocolViolation(CloseCode.MESSAGE_TOO_BIG, "frame too big")
    if not from_client:
        stop = pos + head + length
        return None if end < stop else (opcode, fin, bytes(buf[pos + head : stop]), stop)
    start = pos + head + 4
    stop = start + length
    if end < stop:
        return None
    return opcode, fin, unmask(buf[pos + head : start], buf[start:stop]), stop


def parse(buf: bytes, max_payload: int) -> tuple[list[tuple[int, bool, bytes]], bytes]:
    """Every complete frame in ``buf`` (see :func:`parse_one`) and the tail, the start of an
    incomplete frame: ``([(opcode, fin, payload), ...], tail)``."""
    frames: list[tuple[int, bool, bytes]] = []
    pos = 0
    while (frame := parse_one(buf, pos, max_payload)) is not None:
        opcode, fin, payload, pos = frame
        frames.append((opcode, fin, payload))
    return frames, buf[pos:] if pos else buf


def frame_size(buf: bytes | bytearray) -> int:
    """Total size of the (client, masked) frame that starts ``buf``, or 0 while its header is
    incomplete: a caller holding a partial frame parses again only once this many bytes are
    there, so a frame trickling in byte by byte costs linear time, not quadratic."""
    n = len(buf)
    if n < 2:
        return 0
    length = buf[1] & 0x7F
    if length == 126:
        return 8 + _unpack_h(buf, 2)[0] if n >= 4 else 0
    if length == 127:
        return 14 + _unpack_q(buf, 2)[0] if n >= 10 else 0
    return 6 + length


#: Close codes a peer may send (RFC 6455 section 7.4): the defined ones, and 3000-4999.
_PEER_CLOSE_CODES = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011))
#: The code that stands for "the close frame had no status code" (never sent on the wire).
NO_STATUS = 1005


def peer_close_code(payload: bytes) -> int:
    """The status code of a peer's close frame (:data:`NO_STATUS` when it has none). Raises
    :class:`ProtocolViolation` for a one-byte payload, a code no endpoint may send, or a
    reason that is not UTF-8."""
    if not payload:
        return NO_STATUS
    if len(payload) == 1:
        raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, "close frame of one byte")
    code: int = _unpack_h(payload, 0)[0]
    if code not in _PEER_CLOSE_CODES and not 3000 <= code <= 4999:
        raise ProtocolViolation(CloseCode.PROTOCOL_ERROR, "invalid close code")
    try:
        payload[2:].decode()
    except UnicodeDecodeError:
        raise ProtocolViolation(CloseCode.INVALID_PAYLOAD, "close reason is not UTF-8") from None
    return code
