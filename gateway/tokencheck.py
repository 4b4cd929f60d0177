"""HS256 access-token verification without PyJWT, and a bounded cache of verified tokens.

A connect storm verifies one token per connection; PyJWT spends ~30 µs on one HS256 token
(key preparation, two ``json.loads``, generic claim validation). :func:`verify_hs256` does the
same checks with ``hmac`` and one typed msgspec decode (a few µs), and :class:`VerifiedCache`
lets a token seen before skip even that until it expires.

:func:`verify_hs256` guarantees, for a token it accepts:

- exactly three base64url segments (no padding, no other characters), at most 8 KiB;
- a JSON object header whose ``alg`` is exactly ``"HS256"`` (``none``, ``HS512``, ``EdDSA``
  and anything else are refused: no algorithm confusion) and with no ``crit`` or ``b64``
  (no extension this verifier would have to understand);
- an HMAC-SHA256 of ``header.payload`` under the key equal to the signature, compared in
  constant time, before the payload is parsed;
- a JSON object payload with integer ``exp`` and ``iat``, string ``sub``, a string or a list
  of strings ``aud`` containing the audience, and the :class:`Claims` fields typed as declared;
- ``exp > now - leeway``, ``iat <= now + leeway`` and, when present, integer
  ``nbf <= now + leeway``: the same bounds PyJWT's ``decode`` applies with ``leeway``.

Every refusal is a :class:`TokenRefused` with ``expired`` set only for a good token past its
``exp``; the caller maps it to its own error codes. Tokens are checked as text: no claim is
trusted before the signature is.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
from collections.abc import Callable
from typing import Generic, TypeVar

import msgspec

MAX_TOKEN_CHARS = 8192
MALFORMED = "malformed claims"  # the reason for a signed token with claims of the wrong shape

T = TypeVar("T")


class TokenRefused(Exception):
    def __init__(self, reason: str, *, expired: bool = False) -> None:
        super().__init__(reason)
        self.expired = expired


class _Header(msgspec.Struct, gc=False):
    alg: str
    crit: object = msgspec.UNSET
    b64: object = msgspec.UNSET


class _Times(msgspec.Struct, gc=False):
    exp: int
    iat: int
    sub: str
    aud: str | list[str]
    nbf: int | None = None


_HEADER = msgspec.json.Decoder(_Header)
_TIMES = msgspec.json.Decoder(_Times)
_HEADERS_SEEN: dict[str, bool] = {}  # header segment -> acceptable (tokens share a few headers)
_URLSAFE = bytes.maketrans(b"-_", b"+/")
_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def b64url(segment: bytes) -> bytes:
    """Strict base64url decode (no padding, only the url-safe alphabet); ValueError else."""
    if not _ALPHABET.issuperset(segment) or len(segment) % 4 == 1:
        raise ValueError("not base64url")
    padded = segment.translate(_URLSAFE) + b"=" * (-len(segment) % 4)
    try:
        return binascii.a2b_base64(padded, strict_mode=True)
    except binascii.Error:
        raise ValueError("not base64url") from None


def _header_ok(segment: bytes) -> bool:
    try:
        header = _HEADER.decode(b64url(segment))
    except (ValueError, msgspec.DecodeError):
        return False
    return header.alg == "HS256" and header.crit is msgspec.UNSET and header.b64 is msgspec.UNSET


def signed_payload(token: str, key: bytes) -> bytes:
    """The decoded payload of an HS256 ``token`` whose signature under ``key`` is good."""
    if len(token) > MAX_TOKEN_CHARS or not token.isascii():
        raise TokenRefused("malformed")
    raw = token.encode()
    parts = raw.split(b".")
    if len(parts) != 3:
        raise TokenRefused("malformed")
    head, body, sig = parts
    text = head.decode()
    ok = _HEADERS_SEEN.get(text)
    if ok is None:
        ok = _header_ok(head)
        if len(_HEADERS_SEEN) < 64:  # an attacker's endless headers are checked, not kept
            _HEADERS_SEEN[text] = ok
    if not ok:
        raise TokenRefused("bad header")
    try:
        signature = b64url(sig)
        expected = hmac.digest(key, raw[: len(head) + 1 + len(body)], hashlib.sha256)
        if not hmac.compare_digest(signature, expected):
            raise TokenRefused("bad signature")
        return b64url(body)
    except ValueError:
        raise TokenRefused("malformed") from None


def check_times(payload: bytes, audience: str, now: float, leeway: float) -> int:
    """Validate the registered claims of a signed payload; returns its ``exp``."""
    try:
        times = _TIMES.decode(payload)
    except msgspec.DecodeError:
        raise TokenRefused(MALFORMED) from None
    auds = [times.aud] if isinstance(times.aud, str) else times.aud
    if audience not in auds:
        raise TokenRefused("audience")
    if times.iat > now + leeway or (times.nbf is not None and times.nbf > now + leeway):
        raise TokenRefused("not yet valid")
    if times.exp <= now - leeway:
        raise TokenRefused("expired", expired=True)
    return times.exp


class VerifiedCache(Generic[T]):
    """Verified tokens (the exact string) -> their claims, for at most ``size`` tokens.

    A hit still checks ``exp`` against the caller's clock, so a cached token expires exactly
    when an uncached one would; revocation and rights are not cached here (the gateway checks
    them on every connect, after this). When full, the oldest entry goes first: a storm of new
    tokens only costs their verification, never unbounded memory.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: dict[str, tuple[int, T]] = {}

    def get(self, token: str, now: float, leeway: float, verify: Callable[[], tuple[int, T]]) -> T:
        hit = self._entries.get(token)
        if hit is None:
            hit = verify()
            if len(self._entries) >= self.size:
                del self._entries[next(iter(self._entries))]
            self._entries[token] = hit
        elif hit[0] <= now - leeway:
            del self._entries[token]
            raise TokenRefused("expired", expired=True)
        return hit[1]

    def __len__(self) -> int:
        return len(self._entries)
