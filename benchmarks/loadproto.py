"""Wire parsing for the load client, with no I/O: bytes in, messages out.

Everything here is pure and cheap enough to run for tens of thousands of connections in one
process: an HTTP response head reader, a chunked transfer decoder, a WebSocket client frame
builder (the gateway's framer, :mod:`gateway.wsframe`, in the client role) and a server frame
parser, an SSE line parser, the ``"sent":`` timestamp extraction used
to measure latency, and percentile helpers. ``benchmarks.loadclient`` wires these to sockets;
``tests/unit/test_loadclient.py`` tests them with bytes alone.
"""

from __future__ import annotations

import base64
import math
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from gateway import wsframe

# The opcodes, under the names the load clients import from here.
OP_CONT = wsframe.OP_CONT
OP_TEXT = wsframe.OP_TEXT
OP_BINARY = wsframe.OP_BINARY
OP_CLOSE = wsframe.OP_CLOSE
OP_PING = wsframe.OP_PING
OP_PONG = wsframe.OP_PONG

_pack_h = struct.Struct("!H").pack
_pack_q = struct.Struct("!Q").pack
_unpack_h = struct.Struct("!H").unpack_from
_unpack_q = struct.Struct("!Q").unpack_from
_unpack_d = struct.Struct("!d").unpack_from

MAX_HEAD = 64 * 1024


class WireError(Exception):
    """The server sent bytes this client cannot accept; ``kind`` names the problem."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


# --- HTTP ---------------------------------------------------------------------------------


def ws_key() -> str:
    """A fresh random ``Sec-WebSocket-Key``."""
    return base64.b64encode(os.urandom(16)).decode()


def ws_accept(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` a server must answer for ``key``."""
    return wsframe.accept_key(key)


def build_request(
    host: str,
    port: int,
    path: str,
    headers: Sequence[tuple[str, str]] = (),
    ws_key_value: str | None = None,
) -> bytes:
    """A GET request head; a WebSocket upgrade request when ``ws_key_value`` is given."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}"]
    if ws_key_value is not None:
        lines += [
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {ws_key_value}",
            "Sec-WebSocket-Version: 13",
        ]
    else:
        lines += ["Accept: text/event-stream", "Cache-Control: no-cache"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass(slots=True)
class ResponseHead:
    status: int
    headers: dict[str, str]


def parse_response_head(buf: bytes | bytearray) -> tuple[ResponseHead, int] | None:
    """Parse an HTTP/1.x response head from the start of ``buf``.

    Returns the head and the offset of the first body byte, or None while the head is
    incomplete. Header names are lower-cased; a repeated header keeps its last value.
    """
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_HEAD:
            raise WireError("head_too_large")
        return None
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise WireError("bad_status_line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return ResponseHead(int(parts[1]), headers), end + 4


class ChunkedDecoder:
    """Incremental ``Transfer-Encoding: chunked`` decoder; ``done`` after the last chunk."""

    __slots__ = ("_buf", "_need", "done")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._need = 0  # bytes of chunk data still to pass through; -1: the CRLF after it
        self.done = False

    def feed(self, data: bytes) -> bytes:
        buf = self._buf
        buf += data
        out = bytearray()
        pos = 0
        while not self.done:
            if self._need > 0:
                take = min(self._need, len(buf) - pos)
                if take <= 0:
                    break
                out += buf[pos : pos + take]
                pos += take
                self._need -= take
                if self._need == 0:
                    self._need = -1
            elif self._need < 0:
                if len(buf) - pos < 2:
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise WireError("bad_chunk")
                pos += 2
                self._need = 0
            else:
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    if len(buf) - pos > 1024:
                        raise WireError("bad_chunk")
                    break
                size_text = bytes(buf[pos:eol]).split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise WireError("bad_chunk") from None
                pos = eol + 2
                if size == 0:
                    self.done = True
                else:
                    self._need = size
        del buf[:pos]
        return bytes(out)


# --- WebSocket ----------------------------------------------------------------------------


def mask_payload(payload: bytes, mask: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``mask`` repeated (RFC 6455 section 5.3)."""
    return wsframe.unmask(mask, payload)


def build_client_frame(
    opcode: int, payload: bytes, mask: bytes | None = None, *, fin: bool = True
) -> bytes:
    """One masked client frame (a random mask unless one is given); final unless ``fin`` is
    False (a fragment). The gateway's framer in the client role."""
    return wsframe.build(opcode, payload, mask or os.urandom(4), fin=fin)


def close_payload(code: int, reason: str = "") -> bytes:
    return _pack_h(code) + reason.encode()[:120]


def close_code(payload: bytes) -> int:
    """The status code of a close frame's payload (1005 when it carries none)."""
    return _unpack_h(payload, 0)[0] if len(payload) >= 2 else 1005


class WSParser:
    """Incremental parser of server frames into whole messages.

    ``feed`` returns ``(opcode, payload)`` pairs: text and binary messages with their
    fragments joined (the opcode of the first fragment), and control frames as they come,
    even between fragments. Masked server frames are unmasked; the RFC forbids them but
    accepting them costs nothing here.
    """

    __slots__ = ("_buf", "_frag_op", "_frags", "max_message")

    def __init__(self, max_message: int = 16 * 1024 * 1024) -> None:
        self._buf = bytearray()
        self._frag_op = -1
        self._frags: list[bytes] = []
        self.max_message = max_message

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf
        if buf:
            buf += data
            view: bytes | bytearray = buf
        else:
            view = data
        out: list[tuple[int, bytes]] = []
        pos = 0
        end = len(view)
        while end - pos >= 2:
            b0 = view[pos]
            b1 = view[pos + 1]
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if end - pos < 4:
                    break
                length = _unpack_h(view, pos + 2)[0]
                head = 4
            elif length == 127:
                if end - pos < 10:
                    break
                length = _unpack_q(view, pos + 2)[0]
                head = 10
            masked = b1 & 0x80
            if masked:
                head += 4
            if length > self.max_message:
                raise WireError("frame_too_large")
            if end - pos < head + length:
                break
            payload = bytes(view[pos + head : pos + head + length])
            if masked:
                payload = mask_payload(payload, bytes(view[pos + head - 4 : pos + head]))
            pos += head + length
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            if opcode >= 0x8:
                out.append((opcode, payload))
            elif opcode == OP_CONT:
                if self._frag_op < 0:
                    raise WireError("unexpected_continuation")
                self._frags.append(payload)
                if fin:
                    out.append((self._frag_op, b"".join(self._frags)))
                    self._frag_op = -1
                    self._frags = []
            elif self._frag_op >= 0:
                raise WireError("interleaved_fragments")
            elif fin:
                out.append((opcode, payload))
            else:
                self._frag_op = opcode
                self._frags = [payload]
        if view is buf:
            del buf[:pos]
        elif pos < end:
            buf += data[pos:]
        return out


# --- Server-Sent Events -------------------------------------------------------------------


@dataclass(slots=True)
class SSEEvent:
    data: bytes
    event: str = "message"
    id: str | None = None
    retry: int | None = None


class SSEParser:
    """Incremental ``text/event-stream`` parser (WHATWG rules).

    Lines end with LF, CRLF or CR, also when the terminator is split across chunks. ``id:``,
    ``event:``, ``data:`` (joined with LF) and ``retry:`` are kept; comments (``:``) are
    counted and otherwise ignored; a blank line ends the event, which is dispatched only if it
    has data. The last ``id`` persists across events, as in a browser.
    """

    __slots__ = ("_buf", "_data", "_event", "_retry", "_skip_lf", "comments", "last_id")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[bytes] = []
        self._event = ""
        self._retry: int | None = None
        self._skip_lf = False
        self.last_id: str | None = None
        self.comments = 0

    def feed(self, data: bytes) -> list[SSEEvent]:
        if self._skip_lf and data[:1] == b"\n":
            data = data[1:]
        self._skip_lf = False
        buf = self._buf + data if self._buf else data
        if b"\r" in buf:
            if buf.endswith(b"\r"):
                self._skip_lf = True  # a CRLF may be split; drop the LF if it comes next
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buf.split(b"\n")
        self._buf = lines.pop()
        out: list[SSEEvent] = []
        for line in lines:
            if not line:
                if self._data:
                    out.append(
                        SSEEvent(
                            b"\n".join(self._data),
                            self._event or "message",
                            self.last_id,
                            self._retry,
                        )
                    )
                self._data = []
                self._event = ""
                self._retry = None
                continue
            name, sep, value = line.partition(b":")
            if not name:
                self.comments += 1
                continue
            if sep and value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                self._data.append(value)
            elif name == b"id":
                if b"\0" not in value:
                    self.last_id = value.decode("utf-8", "replace")
            elif name == b"event":
                self._event = value.decode("utf-8", "replace")
            elif name == b"retry" and value.isdigit():
                self._retry = int(value)
        return out


# --- Timestamps and latency ---------------------------------------------------------------

SENT_KEY = b'"sent":'
MSGPACK_SENT_KEY = b"\xa4sent\xcb"  # fixstr "sent" followed by a float64 marker


def extract_sent(payload: bytes) -> list[float]:
    """Every ``"sent": <number>`` in a JSON payload, in order, without decoding the JSON.

    The number ends at the next ``,`` or ``}`` (within 48 bytes); anything that is not a
    number there (a string, a nested value) is skipped.
    """
    out: list[float] = []
    pos = payload.find(SENT_KEY)
    while pos >= 0:
        pos += len(SENT_KEY)
        limit = pos + 48
        comma = payload.find(b",", pos, limit)
        brace = payload.find(b"}", pos, limit)
        end = comma if comma >= 0 and (brace < 0 or comma < brace) else brace
        if end >= 0:
            try:
                out.append(float(payload[pos:end]))
            except ValueError:
                pass
            pos = end
        pos = payload.find(SENT_KEY, pos)
    return out


def extract_sent_msgpack(payload: bytes) -> list[float]:
    """Every ``"sent"`` key followed by a float64 in a MessagePack payload."""
    out: list[float] = []
    pos = payload.find(MSGPACK_SENT_KEY)
    while pos >= 0:
        pos += len(MSGPACK_SENT_KEY)
        if pos + 8 <= len(payload):
            out.append(_unpack_d(payload, pos)[0])
            pos += 8
        pos = payload.find(MSGPACK_SENT_KEY, pos)
    return out


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of already sorted values, linearly interpolated."""
    if not sorted_values:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError("q must be between 0 and 100")
    rank = (len(sorted_values) - 1) * q / 100
    lo = math.floor(rank)
    hi = min(lo + 1, len(sorted_values) - 1)
    frac = rank - lo
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * frac


def stages(**latencies: list[float]) -> dict[str, dict[str, float | None]]:
    """p50 and p99 of each part of a path, e.g. request -> publish and publish -> client (the
    parts overlap by the clock's millisecond grain, so they need not add up exactly)."""
    out: dict[str, dict[str, float | None]] = {}
    for name, values in latencies.items():
        ordered = sorted(values)
        out[name] = {
            "p50_ms": round(percentile(ordered, 50), 2) if ordered else None,
            "p99_ms": round(percentile(ordered, 99), 2) if ordered else None,
        }
    return out


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Latency in milliseconds over ``count`` samples (NaN when there are none)."""

    count: int
    mean: float
    p50: float
    p90: float
    p99: float
    p999: float
    max: float

    def as_dict(self) -> dict[str, float]:
        return {
            "count": self.count,
            "mean_ms": self.mean,
            "p50_ms": self.p50,
            "p90_ms": self.p90,
            "p99_ms": self.p99,
            "p999_ms": self.p999,
            "max_ms": self.max,
        }


def summarize(samples: Sequence[float]) -> LatencySummary:
    values = sorted(samples)
    if not values:
        return LatencySummary(0, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)
    return LatencySummary(
        count=len(values),
        mean=math.fsum(values) / len(values),
        p50=percentile(values, 50),
        p90=percentile(values, 90),
        p99=percentile(values, 99),
        p999=percentile(values, 99.9),
        max=values[-1],
    )
