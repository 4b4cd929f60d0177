"""What handlers call to authenticate, authorize and read their input.

* ``claims = await current_user(request)``: the verified access token (401 when missing,
  invalid, expired or revoked), minus the cohorts the user lost after it was issued
  (gateway/rights.py), so a removal takes effect at once. Authorization is otherwise a pure
  function of the claims, like the gateway's (DESIGN.md section 2); a user who was granted
  something gets fresh claims from ``POST /api/v1/auth/token`` or a refresh.
* ``require_admin(claims)``, ``require_staff(claims, cohort_id)``,
  ``require_member(claims, cohort_id)``: raise 403 unless allowed. Admins pass all three.
* ``data = await body(request, MyStruct)``: the JSON body decoded into a msgspec Struct; 413
  over :data:`MAX_BODY` bytes, 400 with ``details.field`` naming the offending field otherwise.
* ``path_int(request, "id")``: an integer path parameter; 404 when it is not one (ids are
  bigint, so anything else cannot name a row).
* ``query_int(request, "limit", 20, lo=1, hi=100)``: an integer query parameter; 400 naming the
  parameter unless it is ASCII digits (optionally signed) within ``[lo, hi]``. Every integer
  query parameter goes through it, so nothing a client types reaches int(), SQL or Redis
  unchecked (``str.isdigit`` accepts "²"; PostgreSQL and Redis refuse numbers past 2**63-1).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from api import errors
from api.state import CLAIMS, REDIS, SETTINGS
from config import keys
from gateway import rights
from gateway.auth import AuthError, Claims, verify_access_token

T = TypeVar("T")

#: Largest JSON body accepted (bytes).
MAX_BODY = 1024 * 1024
_MAX_BIGINT = 2**63 - 1
_INTEGER = re.compile(r"[+-]?[0-9]{1,19}")
#: A JSON ``\u0000`` escape (not an escaped backslash followed by "u0000"): PostgreSQL stores
#: no NUL in text or jsonb, so such a body is refused here rather than failing in the database.
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")

_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}
_AT = re.compile(r"^(?P<reason>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_MISSING = re.compile(r"missing required field `(?P<name>[^`]+)`")


def bearer_token(request: web.Request) -> str:
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return ""


async def current_user(request: web.Request) -> Claims:
    """The caller's claims; verified once per request, then cached on the request."""
    cached = request.get(CLAIMS)
    if cached is not None:
        return cached
    token = bearer_token(request)
    try:
        claims = verify_access_token(request.app[SETTINGS], token)
    except AuthError as exc:
        raise errors.unauthorized(exc.message, exc.code) from None
    # One round trip: is the session revoked, and which of the user's cohorts were taken away
    # after this token was issued (gateway/rights.py)?
    pipe = request.app[REDIS].pipeline(transaction=False)
    pipe.exists(keys.revoked_key(claims.sid))
    pipe.hgetall(keys.lost_rights_key(claims.sub))
    revoked, lost = await pipe.execute()
    if revoked:
        raise errors.unauthorized("this session was signed out", "session_revoked")
    if lost:
        claims = rights.restrict(claims, rights.parse_lost(lost))
    request[CLAIMS] = claims
    return claims


def user_id(claims: Claims) -> int:
    return int(claims.sub)


def is_admin(claims: Claims) -> bool:
    return claims.role == "admin"


def is_staff(claims: Claims, cohort_id: int) -> bool:
    return claims.role == "admin" or str(cohort_id) in claims.staff


def is_member(claims: Claims, cohort_id: int) -> bool:
    """Member or staff of the cohort (or admin): who may read the cohort's content."""
    return is_staff(claims, cohort_id) or str(cohort_id) in claims.cohorts


def require_admin(claims: Claims) -> None:
    if not is_admin(claims):
        raise errors.forbidden("administrators only")


def require_staff(claims: Claims, cohort_id: int) -> None:
    if not is_staff(claims, cohort_id):
        raise errors.forbidden("staff of this cohort only")


def require_member(claims: Claims, cohort_id: int) -> None:
    if not is_member(claims, cohort_id):
        raise errors.forbidden("members of this cohort only")


def path_int(request: web.Request, name: str = "id") -> int:
    raw = request.match_info.get(name, "")
    if not raw.isascii() or not raw.isdigit() or int(raw) > _MAX_BIGINT:
        raise errors.not_found(f"no such {name}")
    return int(raw)


def query_int(
    request: web.Request,
    name: str,
    default: int | None = None,
    *,
    lo: int = 0,
    hi: int = _MAX_BIGINT,
) -> int | None:
    """The integer query parameter ``name`` (``default`` when absent or empty); 400 when it is
    not ASCII digits (with an optional sign) or lies outside ``[lo, hi]``."""
    raw = request.query.get(name, "")
    if raw == "":
        return default
    # ASCII digits by fullmatch, not isdigit() (true for "²", which int() refuses) and not
    # `$` (which would let a trailing newline through).
    value = int(raw) if _INTEGER.fullmatch(raw) else None
    if value is None or not lo <= value <= hi:
        raise errors.bad_request(
            f"{name} must be an integer from {lo} to {hi}",
            {"field": name, "reason": "not an integer in range"},
            "invalid_field",
        )
    return value


async def read_limited(request: web.Request, limit: int) -> bytes:
    """The raw body, refusing with 413 as soon as it passes ``limit`` bytes, and with 408 when
    it has not all arrived within ``api_body_timeout_s`` (a slow-loris body)."""
    if request.content_length is not None and request.content_length > limit:
        raise errors.too_large(limit)
    chunks: list[bytes] = []
    size = 0
    timeout_s = request.app[SETTINGS].api_body_timeout_s
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > limit:
                    raise errors.too_large(limit)
                chunks.append(chunk)
    except TimeoutError:
        raise errors.request_timeout(timeout_s) from None
    return b"".join(chunks)


def validation_details(exc: msgspec.DecodeError) -> dict[str, Any]:
    """``{"field": "a.b[0]", "reason": "..."}`` from a msgspec error message."""
    text = str(exc)
    match = _AT.match(text)
    reason = match["reason"] if match else text
    path = (match["path"] or "") if match else ""
    missing = _MISSING.search(reason)
    if missing:
        path = f"{path}.{missing['name']}"
    return {"field": path.lstrip("."), "reason": reason}


def decode(raw: bytes, type_: type[T]) -> T:
    """Decode JSON ``raw`` into ``type_``; 400 naming the field on failure."""
    decoder = _decoders.get(type_)
    if decoder is None:
        decoder = _decoders[type_] = msgspec.json.Decoder(type_)
    if not raw.strip():
        raise errors.bad_request("a JSON body is required", {"field": "", "reason": "empty body"})
    if _NUL_ESCAPE.search(raw):
        raise errors.bad_request(
            "text may not contain NUL characters (\\u0000)",
            {"field": "", "reason": "NUL character"},
            "invalid_field",
        )
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        details = validation_details(exc)
        where = f" in `{details['field']}`" if details["field"] else ""
        raise errors.bad_request(
            f"invalid value{where}: {details['reason']}", details, "invalid_field"
        ) from None
    except msgspec.DecodeError as exc:
        raise errors.bad_request(
            "the body is not valid JSON", {"field": "", "reason": str(exc)}, "invalid_json"
        ) from None


async def body(request: web.Request, type_: type[T], limit: int = MAX_BODY) -> T:
    """The request's JSON body decoded into ``type_`` (a msgspec Struct, usually)."""
    return decode(await read_limited(request, limit), type_)
