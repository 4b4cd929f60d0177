"""Access tokens.

Topic authorization (config.topics.authorize) is a pure function of these claims (DESIGN.md
section 2): the gateway never touches the database to accept a connection or a subscription.
Tokens are verified with a fixed algorithm list: HS256 with the shared secret, or EdDSA when a
public key is configured. ``exp``, ``iat``, ``sub``, ``aud`` and a non-empty ``sid`` are
required, and ``role`` must be one of :data:`ROLES`.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt
import msgspec

from config.settings import Settings

ROLES = ("student", "instructor", "admin")


class Claims(msgspec.Struct, frozen=True, gc=False):
    sub: str
    role: str
    exp: int
    iat: int
    sid: str = ""
    cohorts: frozenset[str] = frozenset()
    staff: frozenset[str] = frozenset()


class AuthError(Exception):
    """Token missing or invalid; ``message`` is safe to return to the client."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _keys(settings: Settings) -> tuple[Any, Any, str]:
    if settings.jwt_public_key:
        return settings.jwt_private_key or None, settings.jwt_public_key, "EdDSA"
    return settings.jwt_secret, settings.jwt_secret, "HS256"


def issue_access_token(
    settings: Settings,
    *,
    sub: str,
    role: str,
    cohorts: list[str] | tuple[str, ...] = (),
    staff: list[str] | tuple[str, ...] = (),
    sid: str | None = None,
    ttl_s: int | None = None,
    now: float | None = None,
) -> str:
    """Sign an access token with the claims of DESIGN.md section 2."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}")
    signing_key, _, alg = _keys(settings)
    if signing_key is None:
        raise RuntimeError("EdDSA verification is configured but no private key to sign with")
    iat = int(time.time() if now is None else now)
    payload = {
        "sub": sub,
        "role": role,
        "cohorts": sorted(cohorts),
        "staff": sorted(staff),
        "sid": sid or uuid.uuid4().hex,
        "iat": iat,
        "exp": iat + (settings.access_token_ttl_s if ttl_s is None else ttl_s),
        "aud": settings.jwt_audience,
    }
    return jwt.encode(payload, signing_key, algorithm=alg)


def verify_access_token(settings: Settings, token: str, *, leeway_s: int = 5) -> Claims:
    """Verify signature, audience and lifetime; raise :class:`AuthError` otherwise."""
    if not token:
        raise AuthError("missing_token", "an access token is required")
    if len(token) > 8192:
        raise AuthError("invalid_token", "token too long")
    _, verify_key, alg = _keys(settings)
    try:
        payload = jwt.decode(
            token,
            verify_key,
            algorithms=[alg],
            audience=settings.jwt_audience,
            leeway=leeway_s,
            options={"require": ["exp", "iat", "sub", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("token_expired", "the access token has expired") from None
    except jwt.InvalidTokenError:
        raise AuthError("invalid_token", "the access token is invalid") from None
    try:
        claims = msgspec.convert(payload, Claims)
    except msgspec.ValidationError:
        raise AuthError("invalid_token", "the access token has malformed claims") from None
    # Without a session id the token could not be revoked; an unknown role would fall through
    # role checks written for the three known ones.
    if not claims.sid or claims.role not in ROLES:
        raise AuthError("invalid_token", "the access token has malformed claims")
    return claims


def is_staff(claims: Claims, cohort: str) -> bool:
    return claims.role == "admin" or cohort in claims.staff
