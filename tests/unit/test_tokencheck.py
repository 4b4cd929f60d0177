"""The HS256 verifier without PyJWT (gateway/tokencheck.py) and the verified-token cache.

Tokens are signed by PyJWT (the issuer's library) or forged by hand, so every refusal here is
one a client could try; PyJWT's own ``decode`` is the reference for what must be accepted.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import jwt
import msgspec
import pytest

from config.settings import load_settings
from gateway import auth
from gateway.auth import AuthError, issue_access_token, verify_access_token
from gateway.tokencheck import TokenRefused, VerifiedCache, b64url, check_times, signed_payload

SETTINGS = load_settings({})
KEY = SETTINGS.jwt_secret.encode()
NOW = int(time.time())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(header: dict, payload: dict, key: bytes = KEY) -> str:
    """A token signed with HMAC-SHA256 whatever its header says (alg-confusion attempts)."""
    head = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(payload).encode())
    return head + "." + _b64(hmac.digest(key, head.encode(), hashlib.sha256))


def _payload(**over: object) -> dict:
    base: dict = {
        "sub": "u1",
        "role": "student",
        "sid": "s1",
        "iat": NOW,
        "exp": NOW + 3600,
        "aud": "lectern",
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def _verify(token: str, now: float = NOW, leeway: float = 5) -> int:
    return check_times(signed_payload(token, KEY), "lectern", now, leeway)


def test_accepts_what_pyjwt_accepts() -> None:
    token = jwt.encode(_payload(aud=["other", "lectern"], nbf=NOW - 1), KEY, algorithm="HS256")
    reference = jwt.decode(token, KEY, algorithms=["HS256"], audience="lectern")
    assert _verify(token) == reference["exp"]


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "none", "typ": "JWT"},
        {"alg": "HS512"},
        {"alg": "EdDSA"},
        {"alg": "hs256"},
        {"typ": "JWT"},  # no alg
        {"alg": "HS256", "crit": ["exp"]},  # an extension we would have to understand
        {"alg": "HS256", "b64": False},
    ],
)
def test_refuses_other_algorithms_and_extensions(header: dict) -> None:
    """Signed correctly with the HS256 key, but the header asks for something else."""
    with pytest.raises(TokenRefused):
        _verify(_forge(header, _payload()))


@pytest.mark.parametrize(
    "token",
    [
        "",
        "a.b",
        "a.b.c.d",
        "é" + jwt.encode(_payload(), KEY, algorithm="HS256"),
        jwt.encode(_payload(), KEY, algorithm="HS256") + "=",  # padding
        jwt.encode(_payload(), KEY, algorithm="HS256").replace(".", ".!", 1),
        jwt.encode(_payload(), KEY, algorithm="HS256")[:-2],  # truncated signature
        jwt.encode(_payload(), b"another-key-of-a-decent-length-000", algorithm="HS256"),
        "x" * 9000,
    ],
)
def test_refuses_malformed_and_badly_signed(token: str) -> None:
    with pytest.raises(TokenRefused) as err:
        _verify(token)
    assert not err.value.expired


def test_a_changed_payload_breaks_the_signature() -> None:
    head, _, sig = jwt.encode(_payload(), KEY, algorithm="HS256").split(".")
    body = _b64(json.dumps(_payload(role="admin")).encode())
    with pytest.raises(TokenRefused):
        _verify(f"{head}.{body}.{sig}")


@pytest.mark.parametrize(
    ("over", "expired"),
    [
        ({"exp": NOW - 6}, True),  # past the 5 s leeway
        ({"exp": NOW - 5}, True),  # exp <= now - leeway, as PyJWT
        ({"iat": NOW + 60}, False),  # issued in the future
        ({"nbf": NOW + 60}, False),
        ({"nbf": "soon"}, False),
        ({"aud": "someone-else"}, False),
        ({"aud": ["a", "b"]}, False),
        ({"aud": None}, False),
        ({"exp": None}, False),
        ({"iat": None}, False),
        ({"sub": None}, False),
        ({"sub": 7}, False),
        ({"exp": "later"}, False),
    ],
)
def test_time_and_audience_bounds(over: dict, expired: bool) -> None:
    with pytest.raises(TokenRefused) as err:
        _verify(jwt.encode(_payload(**over), KEY, algorithm="HS256"))
    assert err.value.expired is expired


def test_leeway_matches_pyjwt() -> None:
    """Expired 4 s ago with 5 s of leeway passes; a token issued 4 s ahead passes too."""
    assert _verify(jwt.encode(_payload(exp=NOW - 4, iat=NOW + 4), KEY, algorithm="HS256"))


def test_b64url_is_strict() -> None:
    assert b64url(b"aGk") == b"hi"
    for bad in (b"aGk=", b"a+k", b"a/k", b"a", b"aG k"):
        with pytest.raises(ValueError):
            b64url(bad)


# -- the cache, through verify_access_token ---------------------------------------------------


def test_cached_token_still_expires() -> None:
    """A token verified while valid is refused as expired once its exp passes (injected now)."""
    cache: VerifiedCache[str] = VerifiedCache(4)
    assert cache.get("t", 100, 5, lambda: (200, "claims")) == "claims"
    assert cache.get("t", 190, 5, lambda: pytest.fail("verified twice")) == "claims"
    with pytest.raises(TokenRefused) as err:
        cache.get("t", 206, 5, lambda: pytest.fail("verified twice"))
    assert err.value.expired


def test_cache_is_bounded_and_keeps_no_refusal() -> None:
    cache: VerifiedCache[int] = VerifiedCache(3)
    for i in range(10):
        cache.get(f"t{i}", 0, 0, lambda i=i: (10, i))  # type: ignore[misc]
    assert len(cache) == 3
    with pytest.raises(TokenRefused):
        cache.get("bad", 0, 0, lambda: (_ for _ in ()).throw(TokenRefused("x")))
    assert len(cache) == 3


def test_cache_is_per_key() -> None:
    """A token verified under one secret is not accepted from the cache under another."""
    token = issue_access_token(SETTINGS, sub="u", role="student")
    assert verify_access_token(SETTINGS, token).sub == "u"
    other = msgspec.structs.replace(SETTINGS, jwt_secret="a-different-secret-" + "x" * 32)
    with pytest.raises(AuthError) as err:
        verify_access_token(other, token)
    assert err.value.code == "invalid_token"
    aud = msgspec.structs.replace(SETTINGS, jwt_audience="elsewhere")
    with pytest.raises(AuthError):
        verify_access_token(aud, token)


def test_cached_verify_refuses_an_expired_token(monkeypatch: pytest.MonkeyPatch) -> None:
    token = issue_access_token(SETTINGS, sub="u", role="student", ttl_s=60)
    assert verify_access_token(SETTINGS, token).sub == "u"
    later = time.time() + 120
    monkeypatch.setattr(auth.time, "time", lambda: later)
    with pytest.raises(AuthError) as err:
        verify_access_token(SETTINGS, token)
    assert err.value.code == "token_expired"
