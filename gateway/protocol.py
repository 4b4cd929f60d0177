"""Lectern's wire protocol: frame types, encodings, close codes, SSE formatting, cursors.

Pure code with no I/O: bytes in, values out; values in, bytes out. The I/O adapters
(:mod:`gateway.wsconn`, :mod:`gateway.sseconn`, :mod:`gateway.poll`) are thin wrappers.

Evolution rule (msgspec's schema-evolution guide): new fields get defaults; fields are never
removed, renamed or retyped. ``PROTOCOL_VERSION`` goes up only for a change an old client
cannot ignore, and the hello frame carries it.
"""

from __future__ import annotations

import enum
from typing import Any, get_args

import msgspec

PROTOCOL_VERSION = 1

#: WebSocket subprotocols. JSON text frames unless the client asks for MessagePack.
SUBPROTOCOL_JSON = "lectern.json"
SUBPROTOCOL_MSGPACK = "lectern.msgpack"


class CloseCode(enum.IntEnum):
    """Every close code Lectern sends (WebSocket close frames; SSE/poll map them to ``reason``).

    Ranges: 1000-1011 as in RFC 6455; 4000-4499 mean "reconnect, resume with your cursor";
    4500-4999 mean "do not reconnect" (the client must fix something first). Reasons stay under
    123 bytes so they fit a close frame.
    """

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003  # binary frame on a JSON connection (and vice versa)
    INVALID_PAYLOAD = 1007  # text frame that is not UTF-8
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    # reconnect
    SERVER_RESTART = 4000  # the gateway is shutting down; reconnect to any node
    SLOW_CONSUMER = 4001  # outgoing buffer over its limit; reconnect and resume
    TOKEN_EXPIRED = 4002  # get a fresh access token, then reconnect
    AUTH_CHANGED = 4003  # authorization changed (e.g. enrollment); reconnect with a new token
    PING_TIMEOUT = 4004  # missed pongs
    TOO_MANY_ERRORS = 4005  # flood of bad frames; back off, then reconnect
    # do not reconnect
    BAD_TOKEN = 4500
    SESSION_REVOKED = 4501  # logged out / revoked; log in again
    BANNED = 4502
    POLICY = 4503  # origin not allowed and similar policy refusals

    @property
    def reconnect(self) -> bool:
        return 4000 <= self.value < 4500 or self.value in (1001, 1011)


CLOSE_REASONS: dict[CloseCode, str] = {
    CloseCode.NORMAL: "bye",
    CloseCode.GOING_AWAY: "going away",
    CloseCode.PROTOCOL_ERROR: "protocol error",
    CloseCode.UNSUPPORTED_DATA: "unsupported data",
    CloseCode.INVALID_PAYLOAD: "invalid payload",
    CloseCode.MESSAGE_TOO_BIG: "frame too big",
    CloseCode.INTERNAL_ERROR: "internal error",
    CloseCode.SERVER_RESTART: "server restart",
    CloseCode.SLOW_CONSUMER: "slow consumer",
    CloseCode.TOKEN_EXPIRED: "token expired",
    CloseCode.AUTH_CHANGED: "authorization changed",
    CloseCode.PING_TIMEOUT: "ping timeout",
    CloseCode.TOO_MANY_ERRORS: "too many bad frames",
    CloseCode.BAD_TOKEN: "bad token",
    CloseCode.SESSION_REVOKED: "session revoked",
    CloseCode.BANNED: "banned",
    CloseCode.POLICY: "policy violation",
}


class ErrorCode(enum.StrEnum):
    """Stable error codes carried by ``error`` frames and failed ``reply`` frames."""

    BAD_FRAME = "bad_frame"  # not JSON/MessagePack, or not an object
    UNKNOWN_TYPE = "unknown_type"
    INVALID = "invalid"  # wrong field types or values
    TOO_BIG = "too_big"
    BAD_TOPIC = "bad_topic"
    FORBIDDEN = "forbidden"
    TOO_MANY_TOPICS = "too_many_topics"
    NOT_SUBSCRIBED = "not_subscribed"
    RATE_LIMITED = "rate_limited"
    TIMEOUT = "timeout"
    UNAVAILABLE = "unavailable"  # Redis unreachable; retry later
    UNKNOWN_COMMAND = "unknown_command"
    INTERNAL = "internal"


# -- frames -----------------------------------------------------------------------------------
# Structs are cycle-free, so gc=False keeps them out of the cyclic collector's way.


class Limits(msgspec.Struct, gc=False):
    max_frame_bytes: int
    cmd_rate_per_s: float
    cmd_burst: int
    max_topics: int


class Hello(msgspec.Struct, tag="hello", gc=False):
    v: int
    conn: str
    user: str
    heartbeat_s: float
    limits: Limits
    encoding: str = "json"
    #: SSE only (left out elsewhere): each topic the stream opened without a cursor slot, and
    #: the position it starts after (its tail).
    tails: dict[str, str] | msgspec.UnsetType = msgspec.UNSET


class Event(msgspec.Struct, tag="event", gc=False):
    """One event. ``data`` stays the publisher's encoded bytes (msgspec.Raw): never decoded."""

    topic: str
    id: str
    event: str
    ts: int
    data: msgspec.Raw


class Subscribed(msgspec.Struct, tag="subscribed", gc=False):
    """``tail``: for a subscription without a cursor, the position it starts after (every
    later event is delivered, none before); left out with a cursor (the replay resumes from
    it) and when Redis could not tell."""

    topic: str
    ref: str | None = None
    replayed: int = 0
    tail: str | msgspec.UnsetType = msgspec.UNSET


class Unsubscribed(msgspec.Struct, tag="unsubscribed", gc=False):
    topic: str
    ref: str | None = None


class ErrorBody(msgspec.Struct, gc=False):
    code: str
    message: str


class Reply(msgspec.Struct, tag="reply", gc=False, omit_defaults=True):
    ref: str
    ok: bool
    data: Any = None
    error: ErrorBody | None = None


class Error(msgspec.Struct, tag="error", gc=False, omit_defaults=True):
    code: str
    message: str
    ref: str | None = None
    topic: str | None = None


class Reset(msgspec.Struct, tag="reset", gc=False):
    """The topic's cursor is older than the history kept: refetch its state from the API."""

    topic: str
    reason: str = "history_trimmed"


class Pong(msgspec.Struct, tag="pong", gc=False, omit_defaults=True):
    ref: str | None = None
    ts: int = 0


class Closing(msgspec.Struct, tag="closing", gc=False):
    """Last frame on SSE and long-poll, which have no close frame of their own."""

    code: int
    reason: str
    reconnect: bool


ServerFrame = Hello | Event | Subscribed | Unsubscribed | Reply | Error | Reset | Pong | Closing

# -- client frames ----------------------------------------------------------------------------


class Sub(msgspec.Struct, tag="sub", forbid_unknown_fields=False, gc=False):
    topics: list[str]
    cursors: dict[str, str] = {}
    ref: str | None = None


class Unsub(msgspec.Struct, tag="unsub", gc=False):
    topics: list[str]
    ref: str | None = None


class Cmd(msgspec.Struct, tag="cmd", gc=False):
    """A client command. ``topic`` names the room it acts on (e.g. ``live:c1:s1``)."""

    ref: str
    name: str
    data: dict[str, Any] = {}
    topic: str | None = None


class Ping(msgspec.Struct, tag="ping", gc=False):
    ref: str | None = None


ClientFrame = Sub | Unsub | Cmd | Ping

MAX_REF_LEN = 64
MAX_CMD_NAME_LEN = 64

_json_encoder = msgspec.json.Encoder()
_msgpack_encoder = msgspec.msgpack.Encoder()
_json_decoder = msgspec.json.Decoder(ClientFrame)
_msgpack_decoder = msgspec.msgpack.Decoder(ClientFrame)


class FrameError(Exception):
    """A client frame that cannot be accepted; ``code`` is an :class:`ErrorCode`."""

    def __init__(self, code: ErrorCode, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref


class InvalidText(FrameError):
    """A text frame that is not UTF-8 (RFC 6455 makes the WebSocket close with 1007)."""

    def __init__(self) -> None:
        super().__init__(ErrorCode.BAD_FRAME, "text frame is not valid UTF-8")


def _is_utf8(payload: bytes) -> bool:
    try:
        payload.decode()
    except UnicodeDecodeError:
        return False
    return True


#: The ``type`` of every client frame (the tags of :data:`ClientFrame`).
CLIENT_TYPES = frozenset(cls.__struct_config__.tag for cls in get_args(ClientFrame))


def _undecodable(payload: bytes, binary: bool) -> FrameError:
    """The error for bytes that are not one JSON (or MessagePack) document."""
    # msgspec checks UTF-8 only inside strings (UnicodeDecodeError); valid JSON has no
    # other place for it, so the full check runs on this error path only.
    if not binary and not _is_utf8(payload):
        return InvalidText()
    kind = "MessagePack" if binary else "JSON"
    return FrameError(ErrorCode.BAD_FRAME, f"frame is not valid {kind}")


def _misfit(payload: bytes, binary: bool, exc: msgspec.ValidationError) -> FrameError:
    """The error for a frame that failed the typed decode, classified by decoding it again
    untyped and looking at its shape (never at msgspec's message text, which may change).

    Runs only on this error path, so valid frames are decoded once. The typed decode may stop
    at its first misfit before reading the whole document, so bytes that are not a document
    at all are found here too.
    """
    try:
        raw = (msgspec.msgpack.decode if binary else msgspec.json.decode)(payload)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return _undecodable(payload, binary)
    if not isinstance(raw, dict):
        return FrameError(ErrorCode.BAD_FRAME, "frame is not an object")
    if "type" not in raw:
        return FrameError(ErrorCode.UNKNOWN_TYPE, "frame has no type")
    kind = raw["type"]
    if isinstance(kind, str) and kind not in CLIENT_TYPES:
        return FrameError(ErrorCode.UNKNOWN_TYPE, "unknown frame type")
    # A known type with a field that does not fit (or a ``type`` that is not text): msgspec's
    # message names the field and the expected type, and is safe to show the client.
    return FrameError(ErrorCode.INVALID, str(exc))


def decode_client_frame(payload: bytes, binary: bool) -> ClientFrame:
    """Decode one client frame (JSON text or MessagePack binary) or raise :class:`FrameError`
    (:class:`InvalidText` for text that is not UTF-8).

    The error message is safe to show to the client: it names the field, never internals.
    """
    try:
        frame = (_msgpack_decoder if binary else _json_decoder).decode(payload)
    except msgspec.ValidationError as exc:
        raise _misfit(payload, binary, exc) from None
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise _undecodable(payload, binary) from None
    ref = getattr(frame, "ref", None)
    if ref is not None and len(ref) > MAX_REF_LEN:
        raise FrameError(ErrorCode.INVALID, f"ref longer than {MAX_REF_LEN}")
    if isinstance(frame, Cmd) and not (0 < len(frame.name) <= MAX_CMD_NAME_LEN):
        raise FrameError(ErrorCode.INVALID, "command name must be 1-64 characters", ref)
    return frame


def encode_json(frame: ServerFrame) -> bytes:
    return _json_encoder.encode(frame)


def encode_msgpack(frame: ServerFrame) -> bytes:
    return _msgpack_encoder.encode(frame)


def encode(frame: ServerFrame, binary: bool) -> bytes:
    return (_msgpack_encoder if binary else _json_encoder).encode(frame)


def event_ts(event_id: str) -> int:
    """Publish time in ms, read off the history entry ID (Redis server clock)."""
    return int(event_id.partition("-")[0])


# -- cursors ----------------------------------------------------------------------------------
# The compact cursor of an SSE stream or a long-poll: the last event ID seen per topic, in the
# order of the stream's `topics` parameter, joined with commas; an empty slot means "none yet"
# (start live), while "0-0" means "from the first event".
# Example for topics=user:u1,cohort:c1 -> "1732240000000-0,1732240000007-2".


#: The position of a topic with no history yet: every event published later is after it.
EMPTY_CURSOR = "0-0"


def _u64(part: str) -> bool:
    # isascii() first: isdigit() alone accepts "²", which Redis then refuses (a 500, not a 400).
    return 0 < len(part) <= 20 and part.isascii() and part.isdigit() and int(part) < 2**64


def is_stream_id(value: str) -> bool:
    """``<ms>-<seq>``, both unsigned 64-bit decimal numbers: what Redis accepts as an ID."""
    ms, sep, seq = value.partition("-")
    return bool(sep) and _u64(ms) and _u64(seq)


def parse_cursor(cursor: str, topics: list[str]) -> dict[str, str]:
    """Map each topic to its position. Raises ValueError for a malformed cursor."""
    if not cursor:
        return {}
    slots = cursor.split(",")
    if len(slots) != len(topics):
        raise ValueError("cursor does not match the topics")
    positions: dict[str, str] = {}
    for topic, slot in zip(topics, slots, strict=True):
        if not slot:
            continue
        if not is_stream_id(slot):
            raise ValueError("cursor holds a malformed event id")
        positions[topic] = slot
    return positions


def format_cursor(topics: list[str], positions: dict[str, str]) -> str:
    return ",".join(positions.get(t, "") for t in topics)


def id_after(a: str, b: str) -> bool:
    """True when stream ID ``a`` is strictly newer than ``b`` (ms, then sequence)."""
    ams, _, aseq = a.partition("-")
    bms, _, bseq = b.partition("-")
    if len(ams) != len(bms):
        return len(ams) > len(bms)
    if ams != bms:
        return ams > bms
    return int(aseq) > int(bseq)


# -- SSE --------------------------------------------------------------------------------------

SSE_HEADERS = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream; charset=utf-8\r\n"
    b"Cache-Control: no-cache\r\n"
    b"X-Accel-Buffering: no\r\n"
    b"Connection: close\r\n"
)
SSE_HEARTBEAT = b": hb\n\n"


def sse_block(kind: bytes, payload: bytes) -> bytes:
    """An SSE event without ``id:`` (the JSON payload never contains a newline)."""
    return b"event: " + kind + b"\ndata: " + payload + b"\n\n"


def sse_id_line(cursor: str) -> bytes:
    return b"id: " + cursor.encode() + b"\n"


def sse_retry(ms: int) -> bytes:
    return b"retry: " + str(ms).encode() + b"\n\n"
