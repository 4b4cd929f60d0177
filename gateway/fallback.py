"""The HTTP fallback for clients without WebSocket: ``GET /poll``, ``POST /cmd`` and their
CORS preflight (gateway/polling.py holds the reads and limits a poll relies on)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import msgspec
from aiohttp import web

from config import redisconn
from config.topics import authorize
from gateway import metrics, protocol
from gateway.admission import (
    CMD_BUCKETS,
    HUB,
    POLLS,
    SETTINGS,
    Refusal,
    admit,
    cors_headers,
    denied_topic,
    json_error,
    live_not_open,
    topics_and_cursors,
)
from gateway.auth import Claims
from gateway.polling import BodyError, PollSlots, poll_read, read_body, tails
from gateway.protocol import ErrorCode

# -- long-poll --------------------------------------------------------------------------------


async def poll_handler(request: web.Request) -> web.StreamResponse:
    """``GET /poll?topics=..&cursor=..``: events after the cursor, waiting up to ``timeout_s``.

    Stateless on the server: any gateway answers any poll. Without a cursor it answers at once
    with the current position of each topic (nothing to replay; ``0-0`` for a topic with no
    history yet, so that its first event is not skipped).
    """
    app = request.app
    settings = app[SETTINGS]
    cors = cors_headers(request, settings)
    try:
        # A poll is a new connection for the per-IP rate and, while held, a live connection
        # of its user (see gateway/polling.py).
        claims = await admit(request, connection=True, ticket_ok=True)
        topics, positions = topics_and_cursors(request, request.query.get("cursor"))
    except Refusal as refusal:
        refusal.response.headers.update(cors)
        return refusal.response
    if not topics:
        return json_error(400, "no_topics", "give the topics to poll: ?topics=a,b", **cors)
    denied = denied_topic(claims, topics) or await live_not_open(app[HUB], topics)
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
                denied = denied_topic(hub.restrict(claims), topics)
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
    cors = cors_headers(request, settings)
    try:
        # Each POST is a new request from its IP: the per-IP rate applies as to connections.
        claims = await admit(request, connection=True)
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
    cors = cors_headers(request, request.app[SETTINGS])
    if not cors:
        return json_error(403, "origin_not_allowed", "this origin may not call the gateway")
    cors["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
    cors["Access-Control-Allow-Headers"] = "Authorization, Content-Type, Last-Event-ID"
    cors["Access-Control-Max-Age"] = "600"
    return web.Response(status=204, headers=cors)
