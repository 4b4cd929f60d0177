"""Admission: every check that can refuse a client before the upgrade, and the app's keys.

Every refusal is an HTTP error with one JSON body shape, ``{"error": {"code", "message"}}``
(:func:`json_error`): bad or expired token (401), revoked session (401), origin not allowed
(403), malformed request (400), too many connections (429), shutting down (503; /poll and
/cmd also when Redis is unreachable). The endpoints (gateway/app.py, gateway/fallback.py)
call :func:`admit` first and send a :class:`Refusal`'s response as it is.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import msgspec
import redis.asyncio as aioredis
from aiohttp import web

from config import redisconn
from config.settings import Settings
from config.topics import LIVE_PREFIX, authorize
from config.topics import parse as parse_topic
from gateway import metrics, protocol
from gateway import ticket as ticket_mod
from gateway.auth import AuthError, Claims, verify_access_token
from gateway.bus import BusReader
from gateway.hub import Hub
from gateway.limits import KeyedBuckets, origin_allowed
from gateway.polling import PollSlots

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


def bearer_token(request: web.Request) -> str:
    return token_of(request.headers, request.query)


def token_of(headers: Mapping[str, str], query: Mapping[str, str]) -> str:
    """The access token: a Bearer ``Authorization`` header, else the ``token`` parameter."""
    auth = headers.get("Authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    # No cookie path: a browser attaches cookies to cross-site WebSocket handshakes, so cookie
    # auth would let any page the user visits open a socket as them.
    return query.get("token", "")


def client_ip(request: web.Request) -> str:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return str(peer[0]) if peer else "?"


def cors_headers(request: web.Request, settings: Settings) -> dict[str, str]:
    return cors_of(request.headers, settings)


def cors_of(headers: Mapping[str, str], settings: Settings) -> dict[str, str]:
    """The CORS headers answering a request with these headers (none for a foreign origin)."""
    origin = headers.get("Origin")
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


async def claims_of(request: web.Request, *, ticket_ok: bool) -> Claims:
    """The caller's claims from a one-time ``?ticket=`` (when ``ticket_ok``; costs one Redis
    ``GETDEL``) or else from the access token (no Redis call); :class:`AuthError` otherwise."""
    settings = request.app[SETTINGS]
    ticket = request.query.get("ticket") if ticket_ok else None
    if ticket is None:
        return verify_access_token(settings, bearer_token(request))
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


async def admit(request: web.Request, *, connection: bool, ticket_ok: bool = False) -> Claims:
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
    if connection and not app[IP_BUCKETS].allow(client_ip(request), time.monotonic()):
        metrics.rejected.labels("ip_rate").inc()
        raise Refusal(
            json_error(
                429, "too_many_connections", "too many new connections", **{"Retry-After": "1"}
            )
        )
    try:
        claims = await claims_of(request, ticket_ok=ticket_ok)
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


def topics_and_cursors(
    request: web.Request, cursor: str | None
) -> tuple[list[str], dict[str, str]]:
    return parse_topics(request.app[SETTINGS], request.query.get("topics", ""), cursor)


def parse_topics(
    settings: Settings, raw: str, cursor: str | None
) -> tuple[list[str], dict[str, str]]:
    """The ``topics`` parameter's topics (in order, once each) and their cursor positions;
    :class:`Refusal` for too many, a malformed topic or a malformed cursor."""
    topics = list(dict.fromkeys(t for t in raw.split(",") if t))
    if len(topics) > settings.max_topics_per_conn:
        raise Refusal(json_error(400, "too_many_topics", "too many topics"))
    for topic in topics:
        if parse_topic(topic) is None:
            raise Refusal(json_error(400, "bad_topic", f"malformed topic {topic[:80]!r}"))
    try:
        positions = protocol.parse_cursor(cursor or "", topics)
    except ValueError as exc:
        raise Refusal(json_error(400, "bad_cursor", str(exc))) from None
    return topics, positions


async def live_not_open(hub: Hub, topics: list[str]) -> web.Response | None:
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


def denied_topic(claims: Claims, topics: list[str]) -> web.Response | None:
    """403 naming the first of ``topics`` that ``claims`` may not read, else ``None``."""
    for topic in topics:
        if (denial := authorize(claims, topic)) is not None:
            return json_error(403, denial.code, f"{topic}: {denial.reason}")
    return None
