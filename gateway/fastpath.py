"""The common ``/ws`` and ``/sse`` connect, accepted without aiohttp's request machinery.

Every accepted socket first gets a :class:`Front`. When the client's first read is one plain,
complete ``GET /ws`` or ``GET /sse`` request with an access token that passes every check,
:class:`Front` starts the connection itself: no ``RequestHandler``, HTTP parser, request
object, URL, router match, handler task or response object is built (about half the gateway's
CPU per connect before this). Anything else, and any refusal, goes to aiohttp unchanged: the
socket and the bytes read so far are handed to a fresh ``RequestHandler``, which parses them
again and answers exactly as without this module (errors, limits, slow clients, keep-alive).

Guarantees:

- The fast path accepts a subset of what the full path accepts, with the same checks
  (:func:`admit`): gateway accepting, origin, token (signature, audience, lifetime, claims),
  per-user connection limit, revoked session, per-IP connection rate, topics and cursor
  syntax, the WebSocket upgrade headers; for SSE also the topics' authorization. No check
  has a side effect before all have passed, so a request that falls back to the full path is
  counted (rate buckets, refusal metrics) once, there.
- Only a request the strict grammar of :func:`parse_head` reads is taken: one HTTP/1.1 ``GET``
  of exactly ``/ws`` or ``/sse`` whose head arrived whole in the first read (within
  :data:`MAX_HEAD` bytes), printable ASCII only, a query of ``name=value`` pairs with no
  repeated name and no ``+``, percent-escapes only well formed and decoding to printable
  ASCII, no ``Content-Length``/``Transfer-Encoding``. Tickets (a Redis call) and
  ``live:`` SSE topics (an open-session check) take the full path. An SSE stream whose
  topics' tails are not known here waits for their Redis read with its socket unread, is
  checked again, then started (or, if the read fails, answered by the full path).
- A socket that sends nothing is closed after ``http_idle_timeout_s``, as aiohttp would.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import urllib.parse
from collections.abc import Callable
from typing import Any, cast

from aiohttp import web
from multidict import CIMultiDict

from config import redisconn
from config.topics import LIVE_PREFIX, authorize
from gateway import wsframe
from gateway.admission import (
    HUB,
    IP_BUCKETS,
    SETTINGS,
    Refusal,
    cors_of,
    parse_topics,
    token_of,
)
from gateway.app import open_sse, open_ws, subprotocol, upgrade_refusal
from gateway.auth import AuthError, Claims, verify_access_token
from gateway.limits import origin_allowed
from gateway.sseconn import SseConn
from gateway.wsconn import WsConn

log = logging.getLogger("lectern.gateway")

#: Longest request head taken here (aiohttp's own line limit); longer ones go to aiohttp.
MAX_HEAD = 8190

_HEAD = re.compile(
    rb"GET /(ws|sse)(?:\?([A-Za-z0-9\-._~:,=&!$'()*@/?%]*))? HTTP/1\.1\r\n"
    rb"((?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[ \t]*[ -~]*\r\n){0,64})\r\n"
)
_UNSAFE_HEADERS = frozenset(("content-length", "transfer-encoding"))
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


class Head:
    __slots__ = ("headers", "kind", "query", "tail")

    def __init__(
        self, kind: str, query: dict[str, str], headers: CIMultiDict[str], tail: bytes
    ) -> None:
        self.kind = kind
        self.query = query
        self.headers = headers
        self.tail = tail


def parse_head(data: bytes) -> Head | None:
    """The request in ``data`` if it is in the fast path's grammar (module docstring), with
    the bytes after it; None for anything else (the full path will read it)."""
    end = data.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
    if end < 0:
        return None
    m = _HEAD.match(data, 0, end + 4)
    if m is None or m.end() != end + 4:
        return None
    query: dict[str, str] = {}
    if m.group(2):
        for pair in m.group(2).decode().split("&"):
            name, eq, value = pair.partition("=")
            if "%" in pair:
                decoded = _unquote(name), _unquote(value)
                if decoded[0] is None or decoded[1] is None:
                    return None
                name, value = decoded
            if not eq or name in query:
                return None
            query[name] = value
    headers: CIMultiDict[str] = CIMultiDict()
    for line in m.group(3).decode().split("\r\n")[:-1]:
        name, _, value = line.partition(":")
        if name.lower() in _UNSAFE_HEADERS:
            return None
        headers.add(name, value.strip(" \t"))
    return Head(m.group(1).decode(), query, headers, data[end + 4 :])


def _unquote(text: str) -> str | None:
    """Percent-decoded ``text`` when every escape is well formed and the result printable
    ASCII (what a browser's encoder makes of topics and cursors); None otherwise."""
    if _BAD_ESCAPE.search(text):
        return None
    decoded = urllib.parse.unquote(text)
    return decoded if decoded.isascii() and decoded.isprintable() else None


def admit(app: web.Application, head: Head) -> Claims | None:
    """The full path's connection checks (gateway/app.py ``_admit``) but the per-IP rate, as a
    predicate without side effects: the caller's claims, restricted to its current rights,
    when each passes; None when the full path must answer (a refusal, or a ticket)."""
    settings = app[SETTINGS]
    hub = app[HUB]
    if not hub.accepting or "ticket" in head.query:
        return None
    origin = head.headers.get("Origin")
    if not origin_allowed(origin, settings.allowed_origins, settings.allow_missing_origin):
        return None
    try:
        claims = verify_access_token(settings, token_of(head.headers, head.query))
    except AuthError:
        return None
    if hub.user_connections(claims.sub) >= settings.max_conns_per_user:
        return None
    if claims.sid and hub.is_revoked(claims.sid):
        return None
    return hub.restrict(claims)


def serve_fast(
    app: web.Application,
    transport: asyncio.Transport,
    data: bytes,
    fallback: Callable[[], asyncio.Protocol],
) -> bool:
    """Start the connection ``data`` asks for (or, for an SSE stream whose tail needs a Redis
    read, start waiting for it) and return True; or return False having changed nothing (the
    caller hands the socket to aiohttp)."""
    head = parse_head(data)
    if head is None:
        return False
    checked = _checked(app, head)
    if checked is None:
        return False
    claims, topics, cursors = checked
    if head.kind == "ws":
        return _start(app, transport, head, claims, topics, cursors, None)
    tails = app[HUB].tails_now(topics, cursors)
    if tails is not None:
        return _start(app, transport, head, claims, topics, cursors, tails)
    # Nothing is started or counted until the read is back; the socket is not read meanwhile.
    transport.pause_reading()
    task = asyncio.get_running_loop().create_task(
        _start_after_tails(app, transport, data, head, topics, cursors, fallback)
    )
    _WAITING.add(task)
    task.add_done_callback(_WAITING.discard)
    return True


def _checked(app: web.Application, head: Head) -> tuple[Claims, list[str], dict[str, str]] | None:
    """Every check but the per-IP rate (no side effect): the claims, topics and cursors, or
    None for the full path."""
    ws = head.kind == "ws"
    headers = head.headers
    if ws and upgrade_refusal(headers) is not None:
        return None
    cursor = (
        head.query.get("cursor")
        if ws
        else (headers.get("Last-Event-ID") or head.query.get("cursor"))
    )
    try:
        topics, cursors = parse_topics(app[SETTINGS], head.query.get("topics", ""), cursor)
    except Refusal:
        return None
    claims = admit(app, head)
    if claims is None:
        return None
    if not ws and (
        not topics
        or any(t.startswith(LIVE_PREFIX) or authorize(claims, t) is not None for t in topics)
    ):
        return None
    return claims, topics, cursors


#: SSE connects waiting for a tail read (referenced until done).
_WAITING: set[asyncio.Task[None]] = set()


async def _start_after_tails(
    app: web.Application,
    transport: asyncio.Transport,
    data: bytes,
    head: Head,
    topics: list[str],
    cursors: dict[str, str],
    fallback: Callable[[], asyncio.Protocol],
) -> None:
    """The SSE connect of :func:`serve_fast` once its tails are read: checked again (the
    gateway, the session or the rights may have changed during the read), then started with
    no await in between; when the read fails or a check does, the full path answers."""
    try:
        tails: dict[str, str] | None = await app[HUB].stream_tails(topics, cursors)
    except redisconn.ERRORS:
        tails = None
    if transport.is_closing():
        return
    try:
        checked = _checked(app, head) if tails is not None else None
        if checked is None or not _start(app, transport, head, checked[0], topics, cursors, tails):
            hand_to_aiohttp(transport, data, fallback)
        transport.resume_reading()
    except Exception:  # never leave a socket unread and unowned
        log.exception("SSE connect after its tail read failed")
        transport.abort()


def _start(
    app: web.Application,
    transport: asyncio.Transport,
    head: Head,
    claims: Claims,
    topics: list[str],
    cursors: dict[str, str],
    tails: dict[str, str] | None,
) -> bool:
    """Charge the IP's connect bucket and start the connection (SSE when ``tails`` is given);
    False, having changed nothing, when the bucket is empty."""
    peer = transport.get_extra_info("peername")
    ip = str(peer[0]) if peer else "?"
    # The one check with a side effect, last: a request refused here is counted once, by the
    # full path.
    if not app[IP_BUCKETS].allow(ip, time.monotonic()):
        return False
    hub = app[HUB]
    headers = head.headers
    if tails is None:
        binary, chosen = subprotocol(headers)
        wsconn = WsConn(hub, claims, ip, binary)
        transport.set_protocol(wsconn)
        wsconn.connection_made(transport)
        handshake = wsframe.handshake_response(headers["Sec-WebSocket-Key"], chosen)
        open_ws(wsconn, handshake, topics, cursors, head.tail)
    else:
        sse = SseConn(hub, claims, ip, topics)
        transport.set_protocol(sse)
        sse.connection_made(transport)
        open_sse(sse, cors_of(headers, app[SETTINGS]), cursors, tails)
    return True


def hand_to_aiohttp(
    transport: asyncio.Transport, data: bytes, fallback: Callable[[], asyncio.Protocol]
) -> None:
    """Give the socket and the bytes read so far to a fresh aiohttp ``RequestHandler``."""
    handler = fallback()
    transport.set_protocol(handler)
    handler.connection_made(transport)
    handler.data_received(data)


class Front(asyncio.Protocol):
    """The first protocol of every accepted socket (module docstring)."""

    __slots__ = ("app", "fallback", "timer", "transport")

    def __init__(self, app: web.Application, fallback: Callable[[], asyncio.Protocol]) -> None:
        self.app = app
        self.fallback = fallback
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.app[SETTINGS].http_idle_timeout_s, self._idle)

    def _idle(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        if transport is None:
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.transport = None
        if not serve_fast(self.app, transport, data, self.fallback):
            hand_to_aiohttp(transport, data, self.fallback)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.transport = None


class FastSite(web.SockSite):
    """A ``SockSite`` whose sockets meet :class:`Front` first."""

    def __init__(self, runner: web.AppRunner, sock: Any, *, backlog: int) -> None:
        super().__init__(runner, sock, backlog=backlog)
        self._app = runner.app

    async def start(self) -> None:
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        app = self._app
        self._server = await asyncio.get_running_loop().create_server(
            lambda: Front(app, server), sock=self._sock, backlog=self._backlog
        )
