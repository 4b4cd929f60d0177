"""Access tokens and topic authorization (pure functions of the JWT claims)."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from config.settings import load_settings
from config.topics import Denial, authorize
from gateway.auth import AuthError, Claims, issue_access_token, verify_access_token

SETTINGS = load_settings({})


def claims(
    role: str = "student", *, cohorts: tuple[str, ...] = (), staff: tuple[str, ...] = ()
) -> Claims:
    return Claims(
        "u1", role, exp=2**31, iat=0, sid="s", cohorts=frozenset(cohorts), staff=frozenset(staff)
    )


MEMBER = claims(cohorts=("c1",))
STAFF = claims("instructor", staff=("c1",))
OTHER = claims(cohorts=("c2",))
ADMIN = claims("admin")


@pytest.mark.parametrize(
    ("who", "topic", "allowed"),
    [
        (MEMBER, "user:u1", True),
        (MEMBER, "user:u2", False),
        (MEMBER, "cohort:c1", True),
        (MEMBER, "live:c1:s1", True),
        (MEMBER, "staff:c1", False),
        (MEMBER, "cohort:c2", False),
        (MEMBER, "live:c2:s1", False),
        (STAFF, "staff:c1", True),
        (STAFF, "cohort:c1", True),
        (STAFF, "live:c1:s9", True),
        (STAFF, "staff:c2", False),
        (STAFF, "cohort:c2", False),
        (STAFF, "user:u2", False),
        (OTHER, "cohort:c1", False),
        (OTHER, "live:c1:s1", False),
        (OTHER, "staff:c1", False),
        (OTHER, "cohort:c2", True),
        (OTHER, "staff:c2", False),  # a member is not staff
        (ADMIN, "user:u2", True),
        (ADMIN, "staff:c9", True),
        (ADMIN, "cohort:c9", True),
        (ADMIN, "live:c9:s1", True),
    ],
)
def test_authorize_topic(who: Claims, topic: str, allowed: bool) -> None:
    """Each topic kind against member, staff, member of another cohort and admin."""
    denial = authorize(who, topic)
    assert (denial is None) is allowed, denial
    assert denial is None or denial.code == "forbidden"


@pytest.mark.parametrize("who", [MEMBER, STAFF, ADMIN])
def test_malformed_topics_are_refused_even_for_admins(who: Claims) -> None:
    assert authorize(who, "bad_topic") is Denial.MALFORMED
    assert authorize(who, "live:c1") is Denial.MALFORMED
    assert Denial.MALFORMED.code == "bad_topic"


# -- tokens -----------------------------------------------------------------------------------


def test_issue_and_verify_round_trip() -> None:
    token = issue_access_token(
        SETTINGS, sub="u1", role="student", cohorts=["c1"], staff=["c2"], sid="s1"
    )
    got = verify_access_token(SETTINGS, token)
    assert got.sub == "u1" and got.role == "student" and got.sid == "s1"
    assert got.cohorts == frozenset({"c1"}) and got.staff == frozenset({"c2"})
    assert got.exp - got.iat == SETTINGS.access_token_ttl_s


def _raw(payload: dict, key: str = SETTINGS.jwt_secret, alg: str = "HS256") -> str:
    return jwt.encode(payload, key, algorithm=alg)


def _payload(**over: object) -> dict:
    now = int(time.time())
    # Parameters are built at collection time, minutes before a full run gets here: a day of
    # validity keeps "expired" out of the cases that test something else.
    base: dict = {
        "sub": "u1",
        "role": "student",
        "sid": "s1",
        "iat": now,
        "exp": now + 86400,
        "aud": "lectern",
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def _unsigned(payload: dict) -> str:
    def b64(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(payload)}."


@pytest.mark.parametrize(
    ("token", "code"),
    [
        ("", "missing_token"),
        ("not-a-jwt", "invalid_token"),
        ("x" * 9000, "invalid_token"),
        (_raw(_payload(exp=int(time.time()) - 60)), "token_expired"),
        (_raw(_payload(aud="someone-else")), "invalid_token"),
        (_raw(_payload(), key="another-secret-of-decent-length-000"), "invalid_token"),
        (_unsigned(_payload()), "invalid_token"),  # alg none
        (_raw(_payload(exp=None)), "invalid_token"),
        (_raw(_payload(iat=None)), "invalid_token"),
        (_raw(_payload(sub=None)), "invalid_token"),
        (_raw(_payload(aud=None)), "invalid_token"),
        (_raw(_payload(role=None)), "invalid_token"),  # claims without a role
        (_raw(_payload(cohorts="c1")), "invalid_token"),  # malformed claim type
        (_raw(_payload(sid=None)), "invalid_token"),  # no session: could not be revoked
        (_raw(_payload(sid="")), "invalid_token"),
        (_raw(_payload(role="superuser")), "invalid_token"),  # a role outside ROLES
    ],
)
def test_verify_refuses(token: str, code: str) -> None:
    """Missing, malformed, expired, wrong audience, wrong secret, alg none, missing claims."""
    with pytest.raises(AuthError) as err:
        verify_access_token(SETTINGS, token)
    assert err.value.code == code
    assert err.value.message


def test_verify_accepts_the_reference_payload() -> None:
    """The payload the refusal cases start from is itself valid (so each case tests one thing)."""
    assert verify_access_token(SETTINGS, _raw(_payload())).sid == "s1"


def test_verify_has_a_small_leeway() -> None:
    """A token expired 2 s ago still passes (clock skew); one expired a minute ago does not."""
    now = time.time()
    token = issue_access_token(SETTINGS, sub="u", role="student", ttl_s=10, now=now - 12)
    assert verify_access_token(SETTINGS, token).sub == "u"


def test_unknown_role_cannot_be_issued() -> None:
    with pytest.raises(ValueError):
        issue_access_token(SETTINGS, sub="u", role="superuser")
