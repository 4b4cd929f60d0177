"""The gateway's HTTP face: ``/ws``, ``/sse``, ``/poll``, ``POST /cmd``, health and metrics.

Everything that can refuse a client does so *before* the upgrade, as an HTTP error with a JSON
body ``{"error": {"code", "message"}}``: bad or expired token (401), revoked session (401),
origin not allowed (403), malformed request (400), too many connections (429), shutting down
(503; /poll and /cmd also when Redis is unreachable).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

import msgspec
import redis.asyncio as aioredis
import redis.exceptions
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from config import keys, redisconn
from config.settings import Settings
from config.topics import LIVE_PREFIX, authorize
from config.topics import parse as parse_topic
from gateway import metrics, protocol, wsframe
from gateway import ticket as ticket_mod
from gateway.auth import AuthError, Claims, verify_access_token
from gateway.bus import BusReader
from gateway.detach import detach, detached
from gateway.hub import Hub
from gateway.limits import KeyedBuckets, origin_allowed
from gateway.polling import BodyError, PollSlots, poll_read, read_body, tails
from gateway.protocol import ErrorCode
from gateway.sseconn import SseConn
from gateway.wsconn import WsConn
from gateway.wsecho import EchoConn

log = logging.getLogger("lectern.gateway")

SETTINGS = web.AppKey("settings", Settings)
HUB = web.AppKey("hub", Hub)
REDIS = web.AppKey("redis", aioredis.Redis)
BUS = web.AppKey("bus", BusReader)
IP_BUCKETS = web.AppKey("ip_buckets", KeyedBuckets)
CMD_BUCKETS = web.AppKey("cmd_buckets", KeyedBuckets)
POLLS = web.AppKey("polls", PollSlots)


def json_error(status: int, code: str, message: str, **headers: str) -> web.Response:
    """The one error shape; header names may be given with ``_`` for ``-``."""
    body = msgspec.json.encode({"error": {"code": code, "message": message}})
    headers = {k.replace("_", "-"): v for k, v in headers.items()}
    return web.Response(
        status=status, body=body, content_type="application/json", headers=headers or None
    )


def _token(request: web.Request) -> str:
    auth = request.headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    # No cookie path: a browser attaches cookies to cross-site WebSocket handshakes, so cookie
    # auth would let any page the user visits open a socket as them.
    return request.query.get("token", "")


def _client_ip(request: web.Request) -> str:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return str(peer[0]) if peer else "?"


def _cors(request: web.Request, settings: Settings) -> dict[str, str]:
    origin = request.headers.get("Origin")
    if origin and origin_allowed(origin, settings.allowed_origins, False):
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Vary": "Origin",
        }
    return {}


class Refusal(Exception):
    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


async def _claims(request: web.Request, *, ticket_ok: bool) -> Claims:
    """The caller's claims from a one-time ``?ticket=`` (when ``ticket_ok``; costs one Redis
    ``GETDEL``) or else from the access token (no Redis call); :class:`AuthError` otherwise."""
    settings = request.app[SETTINGS]
    ticket = request.query.get("ticket") if ticket_ok else None
    if ticket is None:
        return verify_access_token(settings, _token(request))
    try:
        claims = await ticket_mod.redeem(request.app[REDIS], ticket)
    except redisconn.ERRORS:
        raise Refusal(json_error(503, "unavailable", "cannot check the ticket now")) from None
    if claims is None:
        raise AuthError("invalid_ticket", "the connect ticket is unknown, used or expired")
    # The ticket outlives nothing: the token it was issued for must still be valid.
    if claims.exp <= time.time():
        raise AuthError("token_expired", "the access token has expired")
    return claims


async def _admit(request: web.Request, *, connection: bool, ticket_ok: bool = False) -> Claims:
    """Checks shared by every endpoint; raises :class:`Refusal` with the HTTP error."""
    app = request.app
    settings = app[SETTINGS]
    hub = app[HUB]
    if not hub.accepting:
        raise Refusal(json_error(503, "shutting_down", "gateway restarting; reconnect elsewhere"))
    origin = request.headers.get("Origin")
    if not origin_allowed(origin, settings.allowed_origins, settings.allow_missing_origin):
        metrics.rejected.labels("origin").inc()
        raise Refusal(json_error(403, "origin_not_allowed", "this origin may not connect"))
    if connection and not app[IP_BUCKETS].allow(_client_ip(request), time.monotonic()):
        metrics.rejected.labels("ip_rate").inc()
        raise Refusal(
            json_error(
                429, "too_many_connections", "too many new connections", **{"Retry-After": "1"}
            )
        )
    try:
        claims = await _claims(request, ticket_ok=ticket_ok)
    except AuthError as exc:
        metrics.rejected.labels(exc.code).inc()
        raise Refusal(json_error(401, exc.code, exc.message)) from None
    if connection and hub.user_connections(claims.sub) >= settings.max_conns_per_user:
        metrics.rejected.labels("user_limit").inc()
        raise Refusal(
            json_error(
                429,
                "too_many_connections",
                f"at most {settings.max_conns_per_user} live connections per user",
            )
        )
    if claims.sid and hub.is_revoked(claims.sid):
        metrics.rejected.labels("revoked").inc()
        raise Refusal(json_error(401, "session_revoked", "this login session was revoked"))
    # Cohorts taken away since the token was issued are not the caller's any more.
    return hub.restrict(claims)


def _topics_and_cursors(
    request: web.Request, cursor: str | None
) -> tuple[list[str], dict[str, str]]:
    raw = request.query.get("topics", "")
    topics = list(dict.fromkeys(t for t in raw.split(",") if t))
    if len(topics) > request.app[SETTINGS].max_topics_per_conn:
        raise Refusal(json_error(400, "too_many_topics", "too many topics"))
    for topic in topics:
        if parse_topic(topic) is None:
            raise Refusal(json_error(400, "bad_topic", f"malformed topic {topic[:80]!r}"))
    try:
        positions = protocol.parse_cursor(cursor or "", topics)
    except ValueError as exc:
        raise Refusal(json_error(400, "bad_cursor", str(exc))) from None
    return topics, positions


# -- WebSocket --------------------------------------------------------------------------------


def _upgrade_refusal(request: web.Request) -> web.Response | None:
    """The HTTP error for a request that is not a valid WebSocket version 13 upgrade."""
    headers = request.headers
    if (
        headers.get("Upgrade", "").lower() != "websocket"
        or "upgrade" not in headers.get("Connection", "").lower()
    ):
        return json_error(400, "not_websocket", "expected a WebSocket upgrade request")
    if headers.get("Sec-WebSocket-Version") != "13":
        return json_error(
            426, "bad_version", "WebSocket version 13 required", **{"Sec-WebSocket-Version": "13"}
        )
    if not wsframe.valid_client_key(headers.get("Sec-WebSocket-Key", "")):
        return json_error(400, "bad_key", "invalid Sec-WebSocket-Key")
    return None


async def ws_handler(request: web.Request) -> web.StreamResponse:
    headers = request.headers
    not_upgrade = _upgrade_refusal(request)
    if not_upgrade is not None:
        return not_upgrade
    key = headers["Sec-WebSocket-Key"]
    try:
        claims = await _admit(request, connection=True, ticket_ok=True)
        topics, cursors = _topics_and_cursors(request, request.query.get("cursor"))
    except Refusal as refusal:
        return refusal.response
    offered = [p.strip() for p in headers.get("Sec-WebSocket-Protocol", "").split(",")]
    binary = protocol.SUBPROTOCOL_MSGPACK in offered
    chosen = (
        protocol.SUBPROTOCOL_MSGPACK
        if binary
        else (protocol.SUBPROTOCOL_JSON if protocol.SUBPROTOCOL_JSON in offered else None)
    )
    hub = request.app[HUB]
    conn = WsConn(hub, claims, _client_ip(request), binary)
    # From here the connection is registered (Conn.connection_made) until it ends.
    tail = detach(request, conn, wsframe.handshake_response(key, chosen))
    if tail is None:
        return detached()
    conn.send(_hello(hub, conn, "msgpack" if binary else "json"))
    if topics:
        hub.subscribe(conn, topics, cursors, None)
    if tail:
        # Frames the client sent with its upgrade request, after the hello as if read later.
        conn.data_received(tail)
    return detached()


async def ws_echo_handler(request: web.Request) -> web.StreamResponse:
    """``/ws-echo`` (only with ``ws_echo``, dev mode only): the WebSocket connection core with
    every message echoed, for RFC 6455 conformance runs (gateway/wsecho.py). No token."""
    not_upgrade = _upgrade_refusal(request)
    if not_upgrade is not None:
        return not_upgrade
    hub = request.app[HUB]
    if not hub.accepting:
        return json_error(503, "shutting_down", "gateway restarting; reconnect elsewhere")
    conn = EchoConn(hub, _client_ip(request))
    tail = detach(
        request, conn, wsframe.handshake_response(request.headers["Sec-WebSocket-Key"], None)
    )
    if tail:
        conn.data_received(tail)
    return detached()


def _hello(hub: Hub, conn: WsConn | SseConn, encoding: str) -> protocol.Hello:
    s = hub.settings
    limits = protocol.Limits(
        s.max_frame_bytes, s.cmd_rate_per_s, s.cmd_burst, s.max_topics_per_conn
    )
    heartbeat = s.ping_interval_s if isinstance(conn, WsConn) else s.sse_heartbeat_s
    return protocol.Hello(
        protocol.PROTOCOL_VERSION, conn.conn_id, conn.claims.sub, heartbeat, limits, encoding
    )


# -- SSE --------------------------------------------------------------------------------------


async def sse_handler(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    cors = _cors(request, settings)
    cursor = request.headers.get("Last-Event-ID") or request.query.get("cursor")
    try:
        claims = await _admit(request, connection=True, ticket_ok=True)
        topics, cursors = _topics_and_cursors(request, cursor)
    except Refusal as refusal:
        # With CORS headers, so a page on another origin can read why it was refused.
        refusal.response.headers.update(cors)
        return refusal.response
    if not topics:
        return json_error(400, "no_topics", "give the topics to stream: ?topics=a,b", **cors)
    hub = request.app[HUB]
    denied = _denied(claims, topics) or await _not_open(hub, topics)
    if denied is not None:
        denied.headers.update(cors)
        return denied
    conn = SseConn(hub, claims, _client_ip(request), topics)
    head = protocol.SSE_HEADERS
    for name, value in cors.items():
        head += f"{name}: {value}\r\n".encode()
    first = head + b"\r\n" + protocol.sse_retry(settings.sse_retry_ms)
    if detach(request, conn, first) is None:  # an SSE client's later bytes are ignored
        return detached()
    conn.send(_hello(hub, conn, "json"))
    hub.subscribe(conn, topics, cursors, None, quiet=True)
    return detached()


# -- long-poll --------------------------------------------------------------------------------


async def poll_handler(request: web.Request) -> web.StreamResponse:
    """``GET /poll?topics=..&cursor=..``: events after the cursor, waiting up to ``timeout_s``.

    Stateless on the server: any gateway answers any poll. Without a cursor it answers at once
    with the current position of each topic (nothing to replay; ``0-0`` for a topic with no
    history yet, so that its first event is not skipped).
    """
    app = request.app
    settings = app[SETTINGS]
    cors = _cors(request, settings)
    try:
        # A poll is a new connection for the per-IP rate and, while held, a live connection
        # of its user (see gateway/polling.py).
        claims = await _admit(request, connection=True, ticket_ok=True)
        topics, positions = _topics_and_cursors(request, request.query.get("cursor"))
    except Refusal as refusal:
        refusal.response.headers.update(cors)
        return refusal.response
    if not topics:
        return json_error(400, "no_topics", "give the topics to poll: ?topics=a,b", **cors)
    denied = _denied(claims, topics) or await _not_open(app[HUB], topics)
    if denied is not None:
        denied.headers.update(cors)
        return denied
    try:
        wait = min(float(request.query.get("timeout_s", settings.poll_timeout_s)), 60.0)
    except ValueError:
        return json_error(400, "invalid", "timeout_s must be a number", **cors)
    with app[POLLS].hold(claims.sub) as held:
        if not held:
            metrics.rejected.labels("poll_limit").inc()
            return json_error(
                503, "too_many_polls", "gateway busy; retry shortly", **{"Retry-After": "1"}, **cors
            )
        return await _poll(
            app[POLLS], claims, topics, positions, wait, bool(request.query.get("cursor")), cors
        )


async def _not_open(hub: Hub, topics: list[str]) -> web.Response | None:
    """403 naming the first ``live:`` topic whose session is not open (gateway/sessions.py),
    503 when Redis cannot tell, else ``None``."""
    live = [t for t in topics if t.startswith(LIVE_PREFIX)]
    if not live:
        return None
    try:
        found = await hub.sessions.check(live)
    except redisconn.ERRORS:
        return json_error(503, "unavailable", "cannot check the session now; retry")
    for topic in live:
        if not found[topic]:
            return json_error(403, "forbidden", f"{topic}: no such live session")
    return None


def _denied(claims: Claims, topics: list[str]) -> web.Response | None:
    """403 naming the first of ``topics`` that ``claims`` may not read, else ``None``."""
    for topic in topics:
        if (denial := authorize(claims, topic)) is not None:
            return json_error(403, denial.code, f"{topic}: {denial.reason}")
    return None


async def _poll(
    slots: PollSlots,
    claims: Claims,
    topics: list[str],
    positions: dict[str, str],
    wait: float,
    has_cursor: bool,
    cors: dict[str, str],
) -> web.Response:
    hub = slots.hub
    try:
        if not has_cursor:
            positions = await tails(slots, topics)
            return _poll_body(topics, positions, [], cors)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        for topic in topics:
            hub.waiters[topic].add(fut)
        try:
            frames, positions = await poll_read(slots, topics, positions)
            if not frames and wait > 0 and hub.accepting:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(fut, wait)
                # Rights removed while the poll was held end it (gateway/rights.py).
                denied = _denied(hub.restrict(claims), topics)
                if denied is not None:
                    denied.headers.update(cors)
                    return denied
                frames, positions = await poll_read(slots, topics, positions)
        finally:
            for topic in topics:
                waiters = hub.waiters.get(topic)
                if waiters is not None:
                    waiters.discard(fut)
                    if not waiters:
                        del hub.waiters[topic]
    except redisconn.ERRORS:
        return json_error(503, "unavailable", "try again shortly", **cors)
    return _poll_body(topics, positions, frames, cors)


def _poll_body(
    topics: list[str], positions: dict[str, str], frames: list[bytes], cors: dict[str, str]
) -> web.Response:
    cursor = protocol.format_cursor(topics, positions)
    body = b'{"cursor":' + msgspec.json.encode(cursor) + b',"frames":[' + b",".join(frames) + b"]}"
    headers = {"Cache-Control": "no-store", **cors}
    return web.Response(body=body, content_type="application/json", headers=headers)


# -- commands over HTTP -----------------------------------------------------------------------


async def cmd_handler(request: web.Request) -> web.StreamResponse:
    """``POST /cmd``: the same command envelope as over WebSocket, for the SSE/poll fallback.
    Answers with the reply frame (HTTP 200 whether the command succeeded or not)."""
    app = request.app
    settings = app[SETTINGS]
    cors = _cors(request, settings)
    try:
        # Each POST is a new request from its IP: the per-IP rate applies as to connections.
        claims = await _admit(request, connection=True)
    except Refusal as refusal:
        refusal.response.headers.update(cors)
        return refusal.response
    try:
        body = await read_body(request, settings.max_frame_bytes, settings.http_idle_timeout_s)
    except BodyError as exc:
        refused = json_error(exc.status, exc.code, exc.message, **cors)
        # The rest of the body is not read: the socket closes with the answer.
        refused.force_close()
        return refused
    try:
        frame = protocol.decode_client_frame(body, False)
    except protocol.FrameError as exc:
        return json_error(400, exc.code.value, exc.message, **cors)
    if not isinstance(frame, protocol.Cmd):
        return json_error(400, ErrorCode.UNKNOWN_TYPE.value, "only cmd frames are accepted", **cors)
    if not app[CMD_BUCKETS].allow(claims.sub, time.monotonic()):
        reply = protocol.Reply(
            frame.ref, False, error=protocol.ErrorBody("rate_limited", "slow down")
        )
        return _reply(reply, cors, 429)
    if frame.topic is not None:
        denial = authorize(claims, frame.topic)
        if denial is not None:
            err = protocol.ErrorBody(denial.code, f"{frame.topic}: {denial.reason}")
            return _reply(protocol.Reply(frame.ref, False, error=err), cors, 200)
    conn_id = f"{app[HUB].gateway_id}.http.{uuid.uuid4().hex[:12]}"
    future = app[HUB].commands.submit_http(conn_id, claims, frame)
    reply = await future
    return _reply(reply, cors, 200)


def _reply(reply: protocol.Reply, cors: dict[str, str], status: int) -> web.Response:
    return web.Response(
        status=status,
        body=protocol.encode_json(reply),
        content_type="application/json",
        headers=cors,
    )


async def preflight(request: web.Request) -> web.StreamResponse:
    cors = _cors(request, request.app[SETTINGS])
    if not cors:
        return json_error(403, "origin_not_allowed", "this origin may not call the gateway")
    cors["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
    cors["Access-Control-Allow-Headers"] = "Authorization, Content-Type, Last-Event-ID"
    cors["Access-Control-Max-Age"] = "600"
    return web.Response(status=204, headers=cors)


# -- health and metrics -----------------------------------------------------------------------


async def healthz(request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.StreamResponse:
    app = request.app
    try:
        await asyncio.wait_for(app[REDIS].ping(), 2)
    except (
        redis.exceptions.RedisError,
        redis.exceptions.RedisClusterException,
        OSError,
        TimeoutError,
    ):
        return web.json_response({"status": "unavailable", "redis": False}, status=503)
    if not app[BUS].connected:
        return web.json_response({"status": "starting", "redis": True, "bus": False}, status=503)
    return web.json_response({"status": "ready", "redis": True, "bus": True})


async def metrics_handler(request: web.Request) -> web.StreamResponse:
    return web.Response(
        body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


# -- application ------------------------------------------------------------------------------


def create_app(
    settings: Settings, redis_url: str, gateway_id: str | None = None
) -> web.Application:
    """The gateway application; its background tasks start and stop with the app."""
    app = web.Application(client_max_size=settings.max_frame_bytes)
    app[SETTINGS] = settings
    # A bounded pool: a connect storm waits for a Redis connection instead of opening hundreds
    # of sockets next to ~19,000 client sockets under the 20,000 open-file limit.
    redis: aioredis.Redis
    if settings.redis_cluster:
        redis = redisconn.connect(
            redis_url, cluster=True, socket_connect_timeout=2, socket_timeout=5
        )
    else:
        pool = aioredis.BlockingConnectionPool.from_url(
            redis_url, max_connections=32, timeout=10, socket_connect_timeout=2, socket_timeout=5
        )
        redis = aioredis.Redis(connection_pool=pool)
    app[REDIS] = redis
    hub = Hub(settings, redis, gateway_id or uuid.uuid4().hex[:12])
    app[HUB] = hub
    app[BUS] = BusReader(hub, redis_url, settings)
    app[IP_BUCKETS] = KeyedBuckets(settings.conn_rate_per_ip_per_s, settings.conn_burst_per_ip)
    app[CMD_BUCKETS] = KeyedBuckets(settings.cmd_rate_per_s, settings.cmd_burst)
    app[POLLS] = PollSlots(hub, settings.max_held_polls, settings.poll_read_concurrency)
    app.router.add_get("/ws", ws_handler)
    if settings.ws_echo:
        app.router.add_get("/ws-echo", ws_echo_handler)
    app.router.add_get("/sse", sse_handler)
    app.router.add_get("/poll", poll_handler)
    app.router.add_post("/cmd", cmd_handler)
    app.router.add_route("OPTIONS", "/poll", preflight)
    app.router.add_route("OPTIONS", "/cmd", preflight)
    app.router.add_route("OPTIONS", "/sse", preflight)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler)
    app.cleanup_ctx.append(_background)
    return app


async def _background(app: web.Application) -> Any:
    hub = app[HUB]
    bus = app[BUS]
    loop = asyncio.get_running_loop()
    tasks = [
        loop.create_task(bus.run(), name="bus"),
        loop.create_task(hub.run_ticker(), name="tick"),
        loop.create_task(hub.commands.run_writer(), name="cmd-writer"),
        loop.create_task(hub.presence.run(), name="presence-writer"),
        loop.create_task(hub.presence.run_lease(), name="presence-lease"),
        loop.create_task(_sweep(app), name="sweep"),
    ]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(bus.ready.wait(), 10)
    yield
    await shutdown_connections(app)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(hub.presence.release(), 2)  # the closed connections' leaves
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    with contextlib.suppress(*redisconn.ERRORS):
        await app[REDIS].delete(keys.reply_key(hub.gateway_id, app[SETTINGS].bus_shards))
    await app[REDIS].aclose()


async def _sweep(app: web.Application) -> None:
    while True:
        await asyncio.sleep(10)
        now = time.monotonic()
        app[IP_BUCKETS].sweep(now)
        app[CMD_BUCKETS].sweep(now)


async def shutdown_connections(app: web.Application) -> None:
    """Close every connection with "server restart, reconnect" and wait (bounded) for the
    close frames to flush."""
    hub = app[HUB]
    if not hub.accepting:
        return
    hub.close_all(protocol.CloseCode.SERVER_RESTART)
    deadline = time.monotonic() + app[SETTINGS].shutdown_timeout_s
    while hub.pending_flush() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    for conn in list(hub.registry.closing):
        conn.abort()
