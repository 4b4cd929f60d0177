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
from gateway.tokencheck import (
    MALFORMED,
    MAX_TOKEN_CHARS,
    TokenRefused,
    VerifiedCache,
    check_times,
    signed_payload,
)

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
    """Verify signature, audience and lifetime; raise :class:`AuthError` otherwise.

    HS256 tokens are checked by :mod:`gateway.tokencheck` (the bounds of its docstring), EdDSA
    ones by PyJWT. A token verified before under the same key and audience is answered from a
    bounded cache until its ``exp`` (revocation is the caller's check, on every use)."""
    if not token:
        raise AuthError("missing_token", "an access token is required")
    if len(token) > MAX_TOKEN_CHARS:
        raise AuthError("invalid_token", "token too long")
    _, verify_key, alg = _keys(settings)
    cache_key = (alg, verify_key, settings.jwt_audience)
    cache = _CACHES.get(cache_key)
    if cache is None:
        cache = _CACHES[cache_key] = VerifiedCache(CACHE_SIZE)
    now = time.time()
    try:
        return cache.get(
            token, now, leeway_s, lambda: _verify(settings, token, alg, verify_key, now, leeway_s)
        )
    except TokenRefused as exc:
        if exc.expired:
            raise AuthError("token_expired", "the access token has expired") from None
        if str(exc) == MALFORMED:
            raise AuthError("invalid_token", "the access token has malformed claims") from None
        raise AuthError("invalid_token", "the access token is invalid") from None


#: Verified tokens kept per process and key: ~0.6 KB each, so at most ~2.5 MB.
CACHE_SIZE = 4096
_CACHES: dict[tuple[str, Any, str], VerifiedCache[Claims]] = {}
_CLAIMS = msgspec.json.Decoder(Claims)


def _verify(
    settings: Settings, token: str, alg: str, key: Any, now: float, leeway_s: int
) -> tuple[int, Claims]:
    if alg == "HS256":
        payload = signed_payload(token, key.encode() if isinstance(key, str) else key)
        check_times(payload, settings.jwt_audience, now, leeway_s)
        try:
            claims = _CLAIMS.decode(payload)
        except msgspec.DecodeError:
            raise TokenRefused(MALFORMED) from None
    else:
        claims = _pyjwt_verify(settings, token, key, alg, leeway_s)
    # Without a session id the token could not be revoked; an unknown role would fall through
    # role checks written for the three known ones.
    if not claims.sid or claims.role not in ROLES:
        raise TokenRefused(MALFORMED)
    return claims.exp, claims


def _pyjwt_verify(settings: Settings, token: str, key: Any, alg: str, leeway_s: int) -> Claims:
    try:
        payload = jwt.decode(
            token,
            key,
            algorithms=[alg],
            audience=settings.jwt_audience,
            leeway=leeway_s,
            options={"require": ["exp", "iat", "sub", "aud"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenRefused("expired", expired=True) from None
    except jwt.InvalidTokenError:
        raise TokenRefused("invalid") from None
    try:
        return msgspec.convert(payload, Claims)
    except msgspec.ValidationError:
        raise TokenRefused(MALFORMED) from None


def is_staff(claims: Claims, cohort: str) -> bool:
    return claims.role == "admin" or cohort in claims.staff
