"""Sign-in and accounts: login, refresh, logout, invitations, ``/me``.

See :mod:`api.login_sessions` for how sessions, refresh rotation and revocation work.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated

import asyncpg
import msgspec
from aiohttp import web

from api import errors, invites, login_limits, login_sessions, metrics, ratelimit
from api.deps import body, current_user, path_int, require_admin, require_staff, user_id
from api.openapi import Routes
from api.passwords import MAX_LENGTH, MIN_LENGTH, needs_rehash
from api.responses import json_response
from api.schemas import Email, Id, Kind, Name, Role, UserOut, normalize_email
from api.state import DB, HASHER, REDIS, REQUEST_ID, SETTINGS

log = logging.getLogger("lectern.api.auth")

Password = Annotated[str, msgspec.Meta(min_length=MIN_LENGTH, max_length=MAX_LENGTH)]
AnyPassword = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_LENGTH)]


class LoginIn(msgspec.Struct):
    email: Email
    password: AnyPassword


class RefreshIn(msgspec.Struct):
    refresh_token: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class TokenOut(msgspec.Struct):
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int
    session_id: str
    user_id: int
    token_type: str = "bearer"


class AccessOut(msgspec.Struct):
    access_token: str
    expires_in: int
    token_type: str = "bearer"


class RevokedOut(msgspec.Struct):
    revoked: int


class UserCreateIn(msgspec.Struct, kw_only=True):
    email: Email
    display_name: Name
    role: Role = "student"
    #: Optional: without one the account cannot sign in until it registers with an invite.
    password: Password | None = None


class InviteIn(msgspec.Struct, kw_only=True):
    email: Email | None = None
    role: Role = "student"
    cohort_id: Id | None = None
    kind: Kind = "member"


class InviteOut(msgspec.Struct):
    id: int
    token: str
    expires_at: datetime
    email: str | None
    role: str
    cohort_id: int | None
    kind: str


class RegisterIn(msgspec.Struct, kw_only=True):
    invite_token: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    email: Email
    display_name: Name
    password: Password


class MeCohort(msgspec.Struct):
    id: int
    slug: str
    title: str
    kind: str


class MeOut(msgspec.Struct):
    id: int
    email: str
    display_name: str
    role: str
    cohorts: list[MeCohort]
    session_id: str


def _token_out(issued: login_sessions.Issued) -> TokenOut:
    return TokenOut(
        access_token=issued.access_token,
        refresh_token=issued.refresh_token,
        expires_in=issued.expires_in,
        refresh_expires_in=issued.refresh_expires_in,
        session_id=issued.session_id,
        user_id=issued.user_id,
    )


def _client(request: web.Request) -> tuple[str, str]:
    return request.headers.get("User-Agent", "")[:512], (request.remote or "")[:64]


async def login(request: web.Request) -> web.Response:
    """Sign in; throttled by failed attempts only (:mod:`api.login_limits`)."""
    data = await body(request, LoginIn)
    settings = request.app[SETTINGS]
    redis = request.app[REDIS]
    email = normalize_email(data.email)
    user_agent, ip = _client(request)
    refusal = await login_limits.check(redis, settings, email, ip or "?")
    if refusal is not None:
        metrics.login_attempts.labels("rate_limited").inc()
        raise errors.too_many(refusal.retry_after_s, "too many failed logins; try again later")
    pool = request.app[DB]
    row = await pool.fetchrow("SELECT id, password_hash FROM users WHERE email = $1", email)
    stored = row["password_hash"] if row is not None else None
    hasher = request.app[HASHER]
    if not await hasher.verify(stored, data.password) or row is None:
        await login_limits.failed(redis, settings, email, ip or "?")
        metrics.login_attempts.labels("bad_credentials").inc()
        raise errors.unauthorized("wrong email or password", "invalid_credentials")
    await login_limits.succeeded(redis, settings, email, ip or "?")
    if stored and needs_rehash(stored):
        new_hash = await hasher.hash(data.password)
        await pool.execute("UPDATE users SET password_hash = $1 WHERE id = $2", new_hash, row["id"])
    async with pool.acquire() as conn:
        claims = await login_sessions.load_claims(conn, row["id"])
        assert claims is not None
        issued = await login_sessions.start_session(
            conn, settings, claims, user_agent=user_agent, ip=ip
        )
    metrics.login_attempts.labels("ok").inc()
    log.info(
        "login",
        extra={"request_id": request[REQUEST_ID], "user": row["id"], "sid": issued.session_id},
    )
    return json_response(_token_out(issued))


async def refresh(request: web.Request) -> web.Response:
    data = await body(request, RefreshIn)
    settings = request.app[SETTINGS]
    async with request.app[DB].acquire() as conn:
        try:
            issued = await login_sessions.rotate(conn, settings, data.refresh_token)
        except login_sessions.RefreshRefused as exc:
            if exc.revoked_session is not None:
                metrics.refresh_reuse.inc()
                log.warning(
                    "refresh token reuse: session revoked",
                    extra={"request_id": request[REQUEST_ID], "sid": exc.revoked_session},
                )
                await login_sessions.announce_revoked(
                    request.app[REDIS], settings, [exc.revoked_session]
                )
            raise errors.unauthorized("the refresh token cannot be used", exc.code) from None
    return json_response(_token_out(issued))


async def token(request: web.Request) -> web.Response:
    """A fresh access token for the current session, with claims recomputed from the database
    (after an enrollment change)."""
    claims = await current_user(request)
    settings = request.app[SETTINGS]
    async with request.app[DB].acquire() as conn:
        if not await login_sessions.session_active(conn, claims.sid):
            raise errors.unauthorized("this session was signed out", "session_revoked")
        fresh = await login_sessions.load_claims(conn, user_id(claims))
    if fresh is None:
        raise errors.unauthorized("the account no longer exists", "invalid_token")
    access = login_sessions.access_token_for(settings, fresh, claims.sid)
    return json_response(AccessOut(access, settings.access_token_ttl_s))


async def logout(request: web.Request) -> web.Response:
    claims = await current_user(request)
    async with request.app[DB].acquire() as conn, conn.transaction():
        await login_sessions.end_sessions(conn, [claims.sid])
    await login_sessions.announce_revoked(request.app[REDIS], request.app[SETTINGS], [claims.sid])
    return web.Response(status=204)


async def logout_all(request: web.Request) -> web.Response:
    claims = await current_user(request)
    async with request.app[DB].acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            "SELECT id FROM login_sessions WHERE user_id = $1 AND revoked_at IS NULL",
            user_id(claims),
        )
        sids = {str(r["id"]) for r in rows} | {claims.sid}
        await login_sessions.end_sessions(conn, sids)
    await login_sessions.announce_revoked(request.app[REDIS], request.app[SETTINGS], sorted(sids))
    return json_response(RevokedOut(len(rows)))


async def me(request: web.Request) -> web.Response:
    claims = await current_user(request)
    pool = request.app[DB]
    uid = user_id(claims)
    row = await pool.fetchrow("SELECT id, email, display_name, role FROM users WHERE id = $1", uid)
    if row is None:
        raise errors.unauthorized("the account no longer exists", "invalid_token")
    cohorts = await pool.fetch(
        "SELECT c.id, c.slug, c.title, e.kind FROM enrollments e"
        " JOIN cohorts c ON c.id = e.cohort_id WHERE e.user_id = $1 ORDER BY c.id",
        uid,
    )
    return json_response(
        MeOut(
            id=row["id"],
            email=row["email"],
            display_name=row["display_name"],
            role=row["role"],
            cohorts=[MeCohort(r["id"], r["slug"], r["title"], r["kind"]) for r in cohorts],
            session_id=claims.sid,
        )
    )


async def create_user(request: web.Request) -> web.Response:
    claims = await current_user(request)
    require_admin(claims)
    data = await body(request, UserCreateIn)
    password_hash = await request.app[HASHER].hash(data.password) if data.password else None
    try:
        row = await request.app[DB].fetchrow(
            "INSERT INTO users (email, display_name, role, password_hash)"
            " VALUES ($1, $2, $3, $4) RETURNING id, email, display_name, role",
            normalize_email(data.email),
            data.display_name.strip(),
            data.role,
            password_hash,
        )
    except asyncpg.UniqueViolationError:
        raise errors.conflict(
            "a user with this email exists", {"field": "email"}, "email_taken"
        ) from None
    except asyncpg.CheckViolationError:
        raise errors.bad_request(
            "invalid email or name", {"field": "email"}, "invalid_field"
        ) from None
    return json_response(UserOut(**dict(row)), 201)


async def get_user(request: web.Request) -> web.Response:
    claims = await current_user(request)
    ident = path_int(request)
    if str(ident) != claims.sub:
        require_admin(claims)
    row = await request.app[DB].fetchrow(
        "SELECT id, email, display_name, role FROM users WHERE id = $1", ident
    )
    if row is None:
        raise errors.not_found(f"user {ident} does not exist")
    return json_response(UserOut(**dict(row)))


async def create_invite(request: web.Request) -> web.Response:
    claims = await current_user(request)
    data = await body(request, InviteIn)
    if data.cohort_id is not None and data.role == "student" and data.kind == "member":
        require_staff(claims, data.cohort_id)  # staff may invite students to their cohort
    else:
        require_admin(claims)
    settings = request.app[SETTINGS]
    secret = login_sessions.new_token()
    expires = datetime.now(UTC) + timedelta(seconds=settings.invite_ttl_s)
    email = normalize_email(data.email) if data.email else None
    try:
        row = await request.app[DB].fetchrow(
            "INSERT INTO invites (token_hash, email, role, cohort_id, kind, created_by, expires_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
            login_sessions.hash_token(secret),
            email,
            data.role,
            data.cohort_id,
            data.kind,
            user_id(claims),
            expires,
        )
    except asyncpg.ForeignKeyViolationError:
        raise errors.not_found(f"cohort {data.cohort_id} does not exist") from None
    out = InviteOut(row["id"], secret, expires, email, data.role, data.cohort_id, data.kind)
    return json_response(out, 201)


async def register(request: web.Request) -> web.Response:
    """Redeem an invite: create the account (or set the password of a passwordless account
    with the invite's email), enroll it when the invite names a cohort, and sign in.

    Cheap checks first: the per-IP limit, the body, then the invite and the email (read without
    locks). Only a request that would succeed pays for argon2; the transaction checks it all
    again under locks, since another request may have used the invite meanwhile."""
    settings = request.app[SETTINGS]
    user_agent, ip = _client(request)
    retry = await ratelimit.hit(
        request.app[REDIS],
        "register-ip",
        ip or "?",
        settings.register_attempts_per_ip,
        settings.register_window_s,
    )
    if retry:
        raise errors.too_many(retry, "too many registrations from this address; try again later")
    data = await body(request, RegisterIn)
    email = normalize_email(data.email)
    token_hash = login_sessions.hash_token(data.invite_token)
    pool = request.app[DB]
    async with pool.acquire() as conn:
        invite = await invites.valid_invite(conn, token_hash, email, lock=False)
        existing = await conn.fetchrow("SELECT password_hash FROM users WHERE email = $1", email)
        invites.refuse_taken(existing, invite)
    password_hash = await request.app[HASHER].hash(data.password)
    async with pool.acquire() as conn:
        async with conn.transaction():
            invite = await invites.valid_invite(conn, token_hash, email, lock=True)
            existing = await conn.fetchrow(
                "SELECT id, password_hash FROM users WHERE email = $1 FOR UPDATE", email
            )
            invites.refuse_taken(existing, invite)
            uid = await invites.upsert_user(
                conn, existing, invite, email, data.display_name, password_hash
            )
            await invites.enroll_invited(conn, invite, uid)
            await conn.execute(
                "UPDATE invites SET used_at = now(), used_by = $1 WHERE id = $2", uid, invite["id"]
            )
        claims = await login_sessions.load_claims(conn, uid)
        assert claims is not None
        issued = await login_sessions.start_session(
            conn, settings, claims, user_agent=user_agent, ip=ip
        )
    return json_response(_token_out(issued), 201)


def setup(app: web.Application) -> None:
    """Register this module's routes with their OpenAPI descriptions.

    Long because a route table reads best as one list.
    """
    r = Routes(app, "auth")
    r.post(
        "/api/v1/auth/login",
        login,
        summary="Sign in with email and password (failed attempts throttled; docs/security.md)",
        auth="none",
        request=LoginIn,
        response=TokenOut,
    )
    r.post(
        "/api/v1/auth/refresh",
        refresh,
        summary="Rotate a refresh token: a new access and refresh token; reuse revokes all",
        auth="none",
        request=RefreshIn,
        response=TokenOut,
    )
    r.post(
        "/api/v1/auth/token",
        token,
        summary="A fresh access token for this session, with up-to-date cohort claims",
        response=AccessOut,
    )
    r.post("/api/v1/auth/logout", logout, summary="Sign out this session", status=204)
    r.post(
        "/api/v1/auth/logout-all",
        logout_all,
        summary="Sign out every session of the current user",
        response=RevokedOut,
    )
    r.post(
        "/api/v1/auth/register",
        register,
        summary="Create an account (or set its password) with an invitation (rate-limited per IP)",
        auth="none",
        request=RegisterIn,
        response=TokenOut,
        status=201,
    )
    r.get("/api/v1/me", me, summary="The current user and their cohorts", response=MeOut)
    r.post(
        "/api/v1/users",
        create_user,
        summary="Create a user",
        auth="admin",
        request=UserCreateIn,
        response=UserOut,
        status=201,
    )
    r.get(
        "/api/v1/users/{id}",
        get_user,
        summary="A user (admins; anyone for themselves)",
        response=UserOut,
    )
    r.post(
        "/api/v1/invites",
        create_invite,
        summary="Create an invitation (admins; staff for students of their cohort)",
        request=InviteIn,
        response=InviteOut,
        status=201,
    )
