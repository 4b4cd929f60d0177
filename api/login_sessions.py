"""Login sessions, rotating refresh tokens and revocation.

* A **login session** (``login_sessions`` row) is one sign-in; its id is the ``sid`` claim of
  every access token issued for it.
* A **refresh token** is 32 random bytes (url-safe base64), stored only as its SHA-256. Each
  use marks it used and issues the next token of the same *family*. Presenting a token that was
  already used is **reuse**: someone holds a copy, so the whole family and its login session are
  revoked, and the legitimate holder's newest token stops working too.
* **Revocation** of a session: ``revoked_at`` in PostgreSQL (refresh refuses it), then in Redis
  ``SET rt:revoked:{sid} 1 EX access_token_ttl_s`` (the API and the gateways refuse its access
  tokens until they expire anyway) and ``XADD rt:revoke {sid}`` (gateways close its live
  connections). The Redis step is idempotent; callers run it after the commit.
* Claims are recomputed from the database on every issue (login, refresh, ``/auth/token``), so
  an enrollment change reaches the token at the next refresh.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import asyncpg
import msgspec
import redis.asyncio as aioredis

from config import keys, streams
from config.settings import Settings
from gateway.auth import issue_access_token

REVOKE_STREAM_MAXLEN = 10_000


class UserClaims(msgspec.Struct, frozen=True):
    user_id: int
    role: str
    cohorts: tuple[str, ...]
    staff: tuple[str, ...]


class Issued(msgspec.Struct, frozen=True):
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int
    session_id: str
    user_id: int


class RefreshRefused(Exception):
    """The refresh token cannot be used. ``code``: ``invalid_refresh_token``,
    ``refresh_token_expired``, ``session_revoked`` or ``refresh_token_reused`` (in which case
    ``revoked_session`` names the session that was just revoked in PostgreSQL and still needs
    :func:`announce_revoked`)."""

    def __init__(self, code: str, revoked_session: str | None = None) -> None:
        super().__init__(code)
        self.code = code
        self.revoked_session = revoked_session


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


async def load_claims(conn: asyncpg.Connection, user_id: int) -> UserClaims | None:
    """Role and cohort claims of a user from the database; ``None`` when there is no user."""
    role = await conn.fetchval("SELECT role FROM users WHERE id = $1", user_id)
    if role is None:
        return None
    rows = await conn.fetch("SELECT cohort_id, kind FROM enrollments WHERE user_id = $1", user_id)
    cohorts = tuple(sorted(str(r["cohort_id"]) for r in rows if r["kind"] == "member"))
    staff = tuple(sorted(str(r["cohort_id"]) for r in rows if r["kind"] == "staff"))
    return UserClaims(user_id, role, cohorts, staff)


def access_token_for(settings: Settings, claims: UserClaims, sid: str) -> str:
    return issue_access_token(
        settings,
        sub=str(claims.user_id),
        role=claims.role,
        cohorts=claims.cohorts,
        staff=claims.staff,
        sid=sid,
    )


async def _insert_refresh(
    conn: asyncpg.Connection, settings: Settings, sid: str, family: uuid.UUID
) -> str:
    token = new_token()
    expires = datetime.now(UTC) + timedelta(seconds=settings.refresh_token_ttl_s)
    await conn.execute(
        "INSERT INTO refresh_tokens (session_id, family, token_hash, expires_at)"
        " VALUES ($1, $2, $3, $4)",
        uuid.UUID(sid),
        family,
        hash_token(token),
        expires,
    )
    return token


def _issued(settings: Settings, claims: UserClaims, sid: str, refresh: str) -> Issued:
    return Issued(
        access_token=access_token_for(settings, claims, sid),
        refresh_token=refresh,
        expires_in=settings.access_token_ttl_s,
        refresh_expires_in=settings.refresh_token_ttl_s,
        session_id=sid,
        user_id=claims.user_id,
    )


async def start_session(
    conn: asyncpg.Connection,
    settings: Settings,
    claims: UserClaims,
    *,
    user_agent: str = "",
    ip: str = "",
) -> Issued:
    """Open a login session with its first refresh token (one transaction)."""
    async with conn.transaction():
        sid = await conn.fetchval(
            "INSERT INTO login_sessions (user_id, user_agent, ip) VALUES ($1, $2, $3) RETURNING id",
            claims.user_id,
            user_agent[:512],
            ip[:64],
        )
        refresh = await _insert_refresh(conn, settings, str(sid), uuid.uuid4())
    return _issued(settings, claims, str(sid), refresh)


async def issue_for_new_session(
    conn: asyncpg.Connection, settings: Settings, user_id: int, *, user_agent: str = ""
) -> Issued | None:
    claims = await load_claims(conn, user_id)
    if claims is None:
        return None
    return await start_session(conn, settings, claims, user_agent=user_agent)


async def rotate(conn: asyncpg.Connection, settings: Settings, refresh_token: str) -> Issued:
    """Use a refresh token: mark it used and issue the next one with fresh claims.

    Raises :class:`RefreshRefused`. On reuse the revocation is committed before raising.
    """
    if not refresh_token or len(refresh_token) > 256:
        raise RefreshRefused("invalid_refresh_token")
    reused: str | None = None
    issued: Issued | None = None
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT t.id, t.session_id, t.family, t.expires_at, t.used_at, t.revoked_at,"
            "       s.user_id, s.revoked_at AS session_revoked_at"
            "  FROM refresh_tokens t JOIN login_sessions s ON s.id = t.session_id"
            " WHERE t.token_hash = $1"
            " FOR UPDATE OF t, s",
            hash_token(refresh_token),
        )
        if row is None:
            raise RefreshRefused("invalid_refresh_token")
        sid = str(row["session_id"])
        if row["session_revoked_at"] is not None or row["revoked_at"] is not None:
            raise RefreshRefused("session_revoked")
        if row["used_at"] is not None:
            await _revoke_family(conn, row["family"], sid)
            reused = sid
        elif row["expires_at"] <= datetime.now(UTC):
            raise RefreshRefused("refresh_token_expired")
        else:
            await conn.execute("UPDATE refresh_tokens SET used_at = now() WHERE id = $1", row["id"])
            claims = await load_claims(conn, row["user_id"])
            if claims is None:  # pragma: no cover - the FK cascades users to sessions
                raise RefreshRefused("invalid_refresh_token")
            refresh = await _insert_refresh(conn, settings, sid, row["family"])
            issued = _issued(settings, claims, sid, refresh)
    if issued is None:
        raise RefreshRefused("refresh_token_reused", reused)
    return issued


async def _revoke_family(conn: asyncpg.Connection, family: uuid.UUID, sid: str) -> None:
    await conn.execute(
        "UPDATE refresh_tokens SET revoked_at = now() WHERE family = $1 AND revoked_at IS NULL",
        family,
    )
    await end_sessions(conn, [sid])


async def end_sessions(conn: asyncpg.Connection, sids: Iterable[str]) -> None:
    """Mark login sessions and their refresh tokens revoked in PostgreSQL."""
    ids = [uuid.UUID(s) for s in sids]
    if not ids:
        return
    await conn.execute(
        "UPDATE login_sessions SET revoked_at = now() WHERE id = ANY($1) AND revoked_at IS NULL",
        ids,
    )
    await conn.execute(
        "UPDATE refresh_tokens SET revoked_at = now()"
        " WHERE session_id = ANY($1) AND revoked_at IS NULL",
        ids,
    )


async def session_active(conn: asyncpg.Connection, sid: str) -> bool:
    try:
        ident = uuid.UUID(sid)
    except ValueError:
        return False
    revoked = await conn.fetchval(
        "SELECT revoked_at IS NULL FROM login_sessions WHERE id = $1", ident
    )
    return bool(revoked)


async def announce_revoked(redis: aioredis.Redis, settings: Settings, sids: Iterable[str]) -> None:
    """Make the API and every gateway refuse the sessions' access tokens (idempotent)."""
    pipe = redis.pipeline(transaction=False)
    count = 0
    for sid in sids:
        pipe.set(keys.revoked_key(sid), 1, ex=settings.access_token_ttl_s + 60)
        pipe.xadd(
            keys.REVOKE_STREAM,
            streams.REVOCATION.encode(streams.Revocation(sid)),  # type: ignore[arg-type]
            maxlen=REVOKE_STREAM_MAXLEN,
            approximate=True,
        )
        count += 1
    if count:
        await pipe.execute()
