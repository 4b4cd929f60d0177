"""The JSON API: ``create_app(settings)``.

Conventions for everyone adding to the API:

* **Route modules.** A module ``api/routes_<thing>.py`` exposes ``setup(app) -> None`` that
  declares its routes with ``api.openapi.Routes(app, tag=...)`` (never ``app.router`` directly,
  so the route lands in the OpenAPI document), and appends its name to :data:`ROUTE_MODULES`.
  Paths start with ``/api/v1``; integer path parameters are plain ``{id}`` read with
  ``api.deps.path_int``.
* **Who is calling.** ``claims = await api.deps.current_user(request)`` (401 otherwise), then
  ``require_admin`` / ``require_staff(claims, cohort_id)`` / ``require_member(...)``.
* **Bodies.** Request and response bodies are msgspec Structs: ``await api.deps.body(request,
  T)`` decodes (400 naming the field, 413 over 1 MiB); ``api.responses.json_response(
  obj, status=...)`` encodes.
* **Errors.** Raise ``api.errors.ApiError`` (or its helpers ``not_found`` ...); the middleware
  turns it, aiohttp's own 404/405/413 and any crash into ``{"error": {"code", "message",
  "details"}}``. Never return exception text from a library.
* **State.** ``request.app[api.state.DB]`` (asyncpg pool), ``[REDIS]``, ``[PUBLISHER]``,
  ``[SETTINGS]``. jsonb columns take and return JSON *text* (no codec is installed): encode
  with msgspec, decode with ``msgspec.json.decode``.
* **Events.** Never publish directly after a database change: call
  ``await workers.outbox_write.emit(conn, events.to(topic, data))`` inside the transaction of
  the change, ``data`` being the event's Struct from :mod:`workers.events`.
* **Logs.** ``log.info("...", extra={"request_id": request[REQUEST_ID], ...})``.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import redis.exceptions
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api import errors, metrics, openapi
from api.migrate import migrate
from api.passwords import Hasher
from api.responses import error_response, json_response
from api.state import DB, HASHER, PUBLISHER, REDIS, REQUEST_ID, SETTINGS
from config import redisconn
from config.settings import Settings
from gateway import sessions as open_sessions
from gateway.publish import Publisher

log = logging.getLogger("lectern.api")

#: Modules whose ``setup(app)`` declares routes, in order. Add yours here.
ROUTE_MODULES: list[str] = [
    "api.openapi",
    "api.routes_auth",
    "api.routes_ticket",
    "api.routes_cohorts",
    "api.routes_lessons",
    "api.routes_progress",
    "api.routes_certificates",
    "api.routes_sessions",
    "api.routes_room_state",
    "api.routes_quizzes",
    "api.routes_submissions",
    "api.routes_quiz_stats",
    "api.routes_feedback",
    "api.routes_activity",
    "api.routes_dashboard",
    "api.routes_notifications",
    "api.routes_sync",
    "api.routes_announcements",
    "api.routes_pages",
]

#: Largest body aiohttp itself will read (``request.read()``); api.deps applies tighter limits.
CLIENT_MAX_SIZE = 8 * 1024 * 1024
DB_POOL_MAX = 20

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}
_KEEP_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")


@web.middleware
async def request_id_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Take ``X-Request-ID`` from the client when sane, else make one; echo it back."""
    given = request.headers.get("X-Request-ID", "")
    rid = given if _VALID_REQUEST_ID.match(given) else uuid.uuid4().hex
    request[REQUEST_ID] = rid
    response: web.StreamResponse = await handler(request)
    if not response.prepared:
        response.headers["X-Request-ID"] = rid
    return response


@web.middleware
async def metrics_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    start = time.perf_counter()
    status = 500
    try:
        response: web.StreamResponse = await handler(request)
        status = response.status
        return response
    finally:
        info = request.match_info
        route = info.route.resource.canonical if info.route.resource is not None else "unmatched"
        if info.http_exception is not None:
            route = "unmatched"
        metrics.request_seconds.labels(route, request.method, str(status)).observe(
            time.perf_counter() - start
        )


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every failure leaves as the one JSON error shape; internals never reach the client."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except errors.ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {h: exc.headers[h] for h in _KEEP_HEADERS if h in exc.headers}
        code = _STATUS_CODES.get(exc.status, "error" if exc.status < 500 else "internal")
        return error_response(exc.status, code, exc.reason, None, headers)
    except (
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        # The cluster client's "no node reachable" / "slot not covered".
        redis.exceptions.RedisClusterException,
        OSError,
    ) as exc:
        backend = "network" if isinstance(exc, OSError) else "redis"
        return _unavailable(request, backend, "backing service unavailable", exc)
    except (
        asyncpg.exceptions.CharacterNotInRepertoireError,
        asyncpg.exceptions.UntranslatableCharacterError,
    ):
        # A backstop: input is checked where it arrives (api.deps refuses NUL in JSON), but a
        # character PostgreSQL cannot store is the client's input, not a server fault.
        return error_response(
            400, "invalid_field", "the input holds a character that cannot be stored"
        )
    except (
        asyncpg.PostgresConnectionError,
        asyncpg.exceptions.AdminShutdownError,
        asyncpg.exceptions.CrashShutdownError,
        asyncpg.exceptions.CannotConnectNowError,
        asyncpg.exceptions.TooManyConnectionsError,
    ) as exc:
        # PostgreSQL went away under the request (restart, failover, terminated backend) or
        # cannot take it now: the client retries after Retry-After. A connection lost during
        # COMMIT leaves the outcome unknown, which is why writes that matter carry keys
        # (a quiz attempt's number, an invite's token) that make the retry safe.
        return _unavailable(request, "postgres", "database unavailable", exc)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception(
            "unhandled error",
            extra={"request_id": request.get(REQUEST_ID), "path": request.path},
        )
        return error_response(500, "internal", "internal server error")


def _unavailable(request: web.Request, backend: str, message: str, exc: Exception) -> web.Response:
    """503 with Retry-After for a backing service that failed under the request (counted)."""
    metrics.backend_errors.labels(backend).inc()
    log.warning(message, extra={"request_id": request.get(REQUEST_ID), "error": repr(exc)})
    exc503 = errors.unavailable()
    return error_response(503, exc503.code, exc503.message, None, exc503.headers)


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(2):
            await request.app[REDIS].ping()
        checks["redis"] = "ok"
    except Exception:
        checks["redis"] = "unreachable"
    try:
        async with asyncio.timeout(2):
            await request.app[DB].fetchval("SELECT 1")
        checks["postgres"] = "ok"
    except Exception:
        checks["postgres"] = "unreachable"
    ok = all(v == "ok" for v in checks.values())
    return json_response(
        {"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503
    )


async def metrics_handler(request: web.Request) -> web.Response:
    resp = web.Response(body=generate_latest(metrics.registry))
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


def create_metrics_app() -> web.Application:
    """``GET /metrics`` alone, for the API's metrics port: the public port does not serve
    them (they would tell anyone the routes, the load and the error rates)."""
    app = web.Application()
    app.router.add_get("/metrics", metrics_handler, allow_head=False)
    return app


async def _services(app: web.Application) -> AsyncIterator[None]:
    """Connect the PostgreSQL pool and migrate; close the pool and Redis on shutdown."""
    pool = app[DB]
    try:
        await pool  # created unconnected in create_app: app state is frozen once it starts
        async with pool.acquire() as conn:
            applied = await migrate(conn)
            # Sessions scheduled before the registry existed (or a flushed Redis) stay open.
            await open_sessions.register_open(conn, app[REDIS])
        if applied:
            log.info("migrations applied", extra={"versions": applied})
        yield
    finally:
        await pool.close()
        await app[REDIS].aclose()


def _route_modules() -> list[Any]:
    modules = []
    for name in ROUTE_MODULES:
        modules.append(importlib.import_module(name))
    return modules


def create_app(settings: Settings) -> web.Application:
    """The API application; Redis and PostgreSQL connect when it starts (cleanup_ctx)."""
    if not settings.database_url or not settings.redis_url:
        raise ValueError("the API needs settings.database_url and settings.redis_url")
    app = web.Application(
        middlewares=[request_id_middleware, metrics_middleware, error_middleware],
        client_max_size=CLIENT_MAX_SIZE,
    )
    redis_client = redisconn.connect(
        settings.redis_url,
        cluster=settings.redis_cluster,
        socket_connect_timeout=2,
        socket_timeout=5,
    )
    app[SETTINGS] = settings
    app[REDIS] = redis_client
    app[PUBLISHER] = Publisher(redis_client, settings)
    app[HASHER] = Hasher(settings.password_hash_concurrency)
    app[DB] = asyncpg.create_pool(settings.database_url, min_size=1, max_size=DB_POOL_MAX)
    openapi.init(app)
    app.cleanup_ctx.append(_services)
    app.router.add_get("/healthz", healthz, allow_head=False)
    app.router.add_get("/readyz", readyz, allow_head=False)
    for module in _route_modules():
        module.setup(app)
    return app
