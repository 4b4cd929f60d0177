"""The gateway application: ``/ws``, ``/sse``, health and metrics, its routes and lifecycle.

Admission (every refusal before the upgrade) is gateway/admission.py; the HTTP fallback
(``/poll``, ``POST /cmd``) is gateway/fallback.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

import msgspec
import redis.asyncio as aioredis
import redis.exceptions
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from config import keys, redisconn
from config.settings import Settings
from gateway import metrics, protocol, wsframe
from gateway.admission import (
    BUS,
    CMD_BUCKETS,
    HUB,
    IP_BUCKETS,
    POLLS,
    REDIS,
    SETTINGS,
    Refusal,
    admit,
    client_ip,
    cors_headers,
    denied_topic,
    json_error,
    live_not_open,
    topics_and_cursors,
)
from gateway.bus import BusReader
from gateway.detach import detach, detached
from gateway.fallback import cmd_handler, poll_handler, preflight
from gateway.hub import Hub
from gateway.limits import KeyedBuckets
from gateway.polling import PollSlots
from gateway.record import WS_MSGPACK
from gateway.sseconn import SseConn
from gateway.wsconn import WsConn
from gateway.wsecho import EchoConn

__all__ = ["BUS", "HUB", "POLLS", "create_app", "metrics_handler", "shutdown_connections"]

log = logging.getLogger("lectern.gateway")


# -- WebSocket --------------------------------------------------------------------------------


def upgrade_refusal(headers: Mapping[str, str]) -> web.Response | None:
    """The HTTP error for a request that is not a valid WebSocket version 13 upgrade."""
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
    not_upgrade = upgrade_refusal(headers)
    if not_upgrade is not None:
        return not_upgrade
    key = headers["Sec-WebSocket-Key"]
    try:
        claims = await admit(request, connection=True, ticket_ok=True)
        topics, cursors = topics_and_cursors(request, request.query.get("cursor"))
    except Refusal as refusal:
        return refusal.response
    binary, chosen = subprotocol(headers)
    conn = WsConn(request.app[HUB], claims, client_ip(request), binary)
    # From here the connection is registered (Conn.connection_made) until it ends.
    tail = detach(request, conn, b"")
    if tail is not None:
        open_ws(conn, wsframe.handshake_response(key, chosen), topics, cursors, tail)
    return detached()


def subprotocol(headers: Mapping[str, str]) -> tuple[bool, str | None]:
    """Whether the client asked for msgpack frames, and the subprotocol to answer with."""
    offered = [p.strip() for p in headers.get("Sec-WebSocket-Protocol", "").split(",")]
    if protocol.SUBPROTOCOL_MSGPACK in offered:
        return True, protocol.SUBPROTOCOL_MSGPACK
    return False, (protocol.SUBPROTOCOL_JSON if protocol.SUBPROTOCOL_JSON in offered else None)


def open_ws(
    conn: WsConn, handshake: bytes, topics: list[str], cursors: dict[str, str], tail: bytes
) -> None:
    """Start a WebSocket connection that owns its socket: the 101, the hello and the acks of
    the subscriptions asked for in the URL (one write), then the frames that came with the
    request."""
    conn.cork(handshake)
    conn.send(_hello(conn.hub, conn, "msgpack" if conn.kind == WS_MSGPACK else "json"))
    if topics:
        conn.hub.subscribe(conn, topics, cursors, None)
    conn.uncork()
    if tail:
        # Frames the client sent with its upgrade request, after the hello as if read later.
        conn.data_received(tail)


async def ws_echo_handler(request: web.Request) -> web.StreamResponse:
    """``/ws-echo`` (only with ``ws_echo``, dev mode only): the WebSocket connection core with
    every message echoed, for RFC 6455 conformance runs (gateway/wsecho.py). No token."""
    not_upgrade = upgrade_refusal(request.headers)
    if not_upgrade is not None:
        return not_upgrade
    hub = request.app[HUB]
    if not hub.accepting:
        return json_error(503, "shutting_down", "gateway restarting; reconnect elsewhere")
    conn = EchoConn(hub, client_ip(request))
    tail = detach(
        request, conn, wsframe.handshake_response(request.headers["Sec-WebSocket-Key"], None)
    )
    if tail:
        conn.data_received(tail)
    return detached()


def _hello(
    hub: Hub,
    conn: WsConn | SseConn,
    encoding: str,
    tails: dict[str, str] | msgspec.UnsetType = msgspec.UNSET,
) -> protocol.Hello:
    s = hub.settings
    limits = protocol.Limits(
        s.max_frame_bytes, s.cmd_rate_per_s, s.cmd_burst, s.max_topics_per_conn
    )
    heartbeat = s.ping_interval_s if isinstance(conn, WsConn) else s.sse_heartbeat_s
    return protocol.Hello(
        protocol.PROTOCOL_VERSION, conn.conn_id, conn.claims.sub, heartbeat, limits, encoding, tails
    )


# -- SSE --------------------------------------------------------------------------------------


async def sse_handler(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    cors = cors_headers(request, settings)
    cursor = request.headers.get("Last-Event-ID") or request.query.get("cursor")
    try:
        claims = await admit(request, connection=True, ticket_ok=True)
        topics, cursors = topics_and_cursors(request, cursor)
    except Refusal as refusal:
        # With CORS headers, so a page on another origin can read why it was refused.
        refusal.response.headers.update(cors)
        return refusal.response
    if not topics:
        return json_error(400, "no_topics", "give the topics to stream: ?topics=a,b", **cors)
    hub = request.app[HUB]
    denied = denied_topic(claims, topics) or await live_not_open(hub, topics)
    if denied is not None:
        denied.headers.update(cors)
        return denied
    try:
        tails = await hub.stream_tails(topics, cursors)
    except redisconn.ERRORS:
        return json_error(503, "unavailable", "try again shortly", **cors)
    # No await from here to the subscription: the tails taken without a read stay true.
    conn = SseConn(hub, claims, client_ip(request), topics)
    if detach(request, conn, b"") is not None:  # an SSE client's later bytes are ignored
        open_sse(conn, cors, cursors, tails)
    return detached()


def open_sse(
    conn: SseConn, cors: dict[str, str], cursors: dict[str, str], tails: dict[str, str]
) -> None:
    """Start an SSE stream that owns its socket: headers, retry, hello (one write), then the
    subscriptions (replays follow as their history is read). ``tails``: from
    ``Hub.stream_tails``, with no await since."""
    head = protocol.SSE_HEADERS
    for name, value in cors.items():
        head += f"{name}: {value}\r\n".encode()
    conn.cork(head + b"\r\n" + protocol.sse_retry(conn.hub.settings.sse_retry_ms))
    conn.send(_hello(conn.hub, conn, "json", tails))
    conn.hub.subscribe(conn, conn.order, cursors, None, quiet=True)
    conn.uncork()


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
        loop.create_task(hub.online.run(), name="online-writer"),
        loop.create_task(_sweep(app), name="sweep"),
    ]
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(bus.ready.wait(), 10)
    yield
    await shutdown_connections(app)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(hub.presence.release(), 2)  # the closed connections' leaves
    with contextlib.suppress(TimeoutError, *redisconn.ERRORS):
        await asyncio.wait_for(hub.online.flush(), 2)  # their users go offline at once
    await stop_tasks(tasks)
    with contextlib.suppress(*redisconn.ERRORS):
        await app[REDIS].delete(keys.reply_key(hub.gateway_id, app[SETTINGS].bus_shards))
    await app[REDIS].aclose()


#: How long the background tasks get to end once cancelled at shutdown.
STOP_TASKS_S = 5.0


async def stop_tasks(tasks: list[asyncio.Task[Any]], within_s: float = STOP_TASKS_S) -> None:
    """Cancel ``tasks`` and wait at most ``within_s`` for them to end. A task still running
    then (one that swallowed its cancel) is logged with where it is stuck and left behind: a
    gateway told to stop always stops, and the log says what to fix."""
    for task in tasks:
        task.cancel()
    _, stuck = await asyncio.wait(tasks, timeout=within_s)
    for task in stuck:
        where = "".join(
            f"\n  {frame.f_code.co_filename}:{frame.f_lineno}" for frame in task.get_stack()
        )
        log.error(
            "task %s did not stop within %.0f s of its cancel; at:%s",
            task.get_name(),
            within_s,
            where,
        )
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.debug("task %s ended with %r", task.get_name(), task.exception())


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
