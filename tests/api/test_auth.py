"""Sign-in: login, refresh rotation and reuse detection, logout, invites, rate limits."""

from __future__ import annotations

import time
import uuid
from typing import Any

import jwt

from config import keys
from gateway.auth import verify_access_token
from tests.api.conftest import PASSWORD, Api, User


async def login(api: Api, email: str, password: str = PASSWORD) -> tuple[int, Any]:
    status, data, _ = await api.request(
        "POST", "/api/v1/auth/login", json={"email": email, "password": password}
    )
    return status, data


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_login_issues_tokens_with_claims_from_the_database(api: Api, cohort: int) -> None:
    student = await api.user()
    teacher = await api.user("instructor")
    await api.enroll(cohort, student)
    await api.enroll(cohort, teacher, "staff")
    status, data = await login(api, student.email.upper() + "  ")
    assert status == 200, data
    assert data["token_type"] == "bearer"
    assert data["expires_in"] == 900 and data["refresh_expires_in"] == 7 * 24 * 3600
    claims = verify_access_token(api.settings, data["access_token"])
    assert claims.sub == str(student.id) and claims.role == "student"
    assert claims.cohorts == {str(cohort)} and claims.staff == frozenset()
    assert claims.sid == data["session_id"]
    assert claims.exp - claims.iat == 900
    payload = jwt.decode(data["access_token"], options={"verify_signature": False})
    assert payload["aud"] == "lectern"
    _, data = await login(api, teacher.email)
    assert verify_access_token(api.settings, data["access_token"]).staff == {str(cohort)}
    refresh_hash = await api.db.fetchval(
        "SELECT token_hash FROM refresh_tokens WHERE session_id = $1::uuid", data["session_id"]
    )
    assert data["refresh_token"].encode() not in bytes(refresh_hash)


async def test_wrong_password_and_unknown_email_look_the_same(api: Api) -> None:
    user = await api.user()
    status, wrong = await login(api, user.email, "not the password")
    status2, unknown = await login(api, f"nobody-{uuid.uuid4().hex}@example.test")
    assert status == status2 == 401
    assert wrong["error"] == unknown["error"]
    assert wrong["error"]["code"] == "invalid_credentials"


async def test_account_without_password_cannot_log_in(api: Api) -> None:
    user = await api.user(password=None)
    status, data = await login(api, user.email, "anything-at-all")
    assert status == 401 and data["error"]["code"] == "invalid_credentials"


async def test_me_and_bad_tokens(api: Api, cohort: int) -> None:
    user = await api.user()
    await api.enroll(cohort, user)
    status, data, _ = await api.request("GET", "/api/v1/me", user)
    assert status == 200
    assert data["id"] == user.id and data["email"] == user.email
    assert [c["id"] for c in data["cohorts"]] == [cohort]
    status, data, resp = await api.request("GET", "/api/v1/me")
    assert status == 401 and data["error"]["code"] == "missing_token"
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    status, data, _ = await api.request("GET", "/api/v1/me", headers=bearer("garbage"))
    assert status == 401 and data["error"]["code"] == "invalid_token"
    expired = jwt.encode(
        {"sub": str(user.id), "role": "student", "iat": 1, "exp": 2, "aud": "lectern"},
        api.settings.jwt_secret,
    )
    status, data, _ = await api.request("GET", "/api/v1/me", headers=bearer(expired))
    assert status == 401 and data["error"]["code"] == "token_expired"
    # A token without a session id (unrevocable) or with an unknown role is refused.
    now = int(time.time())
    base = {"sub": str(user.id), "iat": now, "exp": now + 60, "aud": "lectern"}
    for extra in ({"role": "student"}, {"role": "superuser", "sid": "s1"}):
        forged = jwt.encode(base | extra, api.settings.jwt_secret)
        status, data, _ = await api.request("GET", "/api/v1/me", headers=bearer(forged))
        assert status == 401 and data["error"]["code"] == "invalid_token", extra


async def test_refresh_rotates_and_recomputes_claims(api: Api, cohort: int) -> None:
    user = await api.user()
    _, first = await login(api, user.email)
    await api.db.execute(
        "INSERT INTO enrollments (cohort_id, user_id) VALUES ($1, $2)", cohort, user.id
    )
    status, second, _ = await api.request(
        "POST", "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert status == 200
    assert second["refresh_token"] != first["refresh_token"]
    assert second["session_id"] == first["session_id"]
    claims = verify_access_token(api.settings, second["access_token"])
    assert claims.cohorts == {str(cohort)}
    status, third, _ = await api.request(
        "POST", "/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]}
    )
    assert status == 200 and third["refresh_token"] != second["refresh_token"]


async def test_refresh_reuse_revokes_the_family(api: Api) -> None:
    """A stolen refresh token used after its owner rotated it kills the whole session."""
    user = await api.user()
    _, first = await login(api, user.email)
    _, second, _ = await api.request(
        "POST", "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    status, data, _ = await api.request(
        "POST", "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert status == 401 and data["error"]["code"] == "refresh_token_reused"
    # The newest token of the family stopped working too, and so did the access tokens.
    status, data, _ = await api.request(
        "POST", "/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]}
    )
    assert status == 401 and data["error"]["code"] == "session_revoked"
    status, data, _ = await api.request("GET", "/api/v1/me", headers=bearer(second["access_token"]))
    assert status == 401 and data["error"]["code"] == "session_revoked"
    sid = first["session_id"]
    assert await api.redis.exists(keys.revoked_key(sid))
    assert await api.db.fetchval(
        "SELECT revoked_at IS NOT NULL FROM login_sessions WHERE id = $1::uuid", sid
    )


async def test_unknown_and_expired_refresh_tokens(api: Api) -> None:
    status, data, _ = await api.request(
        "POST", "/api/v1/auth/refresh", json={"refresh_token": "nope"}
    )
    assert status == 401 and data["error"]["code"] == "invalid_refresh_token"
    user = await api.user()
    _, first = await login(api, user.email)
    await api.db.execute(
        "UPDATE refresh_tokens SET issued_at = now() - interval '8 days',"
        " expires_at = now() - interval '1 day' WHERE session_id = $1::uuid",
        first["session_id"],
    )
    status, data, _ = await api.request(
        "POST", "/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}
    )
    assert status == 401 and data["error"]["code"] == "refresh_token_expired"


async def stream_sids(api: Api) -> list[str]:
    entries = await api.redis.xrevrange(keys.REVOKE_STREAM, count=200)
    return [fields[b"sid"].decode() for _, fields in entries]


async def test_logout_revokes_the_session(api: Api) -> None:
    user = await api.user()
    _, data = await login(api, user.email)
    token = data["access_token"]
    status, _, _ = await api.request("POST", "/api/v1/auth/logout", headers=bearer(token))
    assert status == 204
    status, body, _ = await api.request("GET", "/api/v1/me", headers=bearer(token))
    assert status == 401 and body["error"]["code"] == "session_revoked"
    assert data["session_id"] in await stream_sids(api)
    ttl = await api.redis.ttl(keys.revoked_key(data["session_id"]))
    assert api.settings.access_token_ttl_s <= ttl <= api.settings.access_token_ttl_s + 60
    status, body, _ = await api.request(
        "POST", "/api/v1/auth/refresh", json={"refresh_token": data["refresh_token"]}
    )
    assert status == 401


async def test_logout_everywhere(api: Api) -> None:
    user = await api.user()
    _, one = await login(api, user.email)
    _, two = await login(api, user.email)
    status, data, _ = await api.request(
        "POST", "/api/v1/auth/logout-all", headers=bearer(one["access_token"])
    )
    assert status == 200 and data["revoked"] >= 2
    for session in (one, two):
        status, _, _ = await api.request(
            "GET", "/api/v1/me", headers=bearer(session["access_token"])
        )
        assert status == 401
    sids = await stream_sids(api)
    assert one["session_id"] in sids and two["session_id"] in sids
    # Other users' sessions are untouched.
    other = await api.user()
    assert (await api.request("GET", "/api/v1/me", other))[0] == 200


async def test_token_endpoint_picks_up_enrollment_changes(api: Api, cohort: int) -> None:
    user = await api.user()
    assert (await api.request("GET", f"/api/v1/cohorts/{cohort}", user))[0] == 403
    await api.db.execute(
        "INSERT INTO enrollments (cohort_id, user_id) VALUES ($1, $2)", cohort, user.id
    )
    status, data, _ = await api.request("POST", "/api/v1/auth/token", user)
    assert status == 200
    assert verify_access_token(api.settings, data["access_token"]).cohorts == {str(cohort)}
    status, _, _ = await api.request(
        "GET", f"/api/v1/cohorts/{cohort}", headers=bearer(data["access_token"])
    )
    assert status == 200


async def test_admin_creates_users(api: Api, admin: User) -> None:
    email = f"New-{uuid.uuid4().hex[:8]}@Example.test"
    payload = {"email": email, "display_name": "New", "role": "instructor", "password": PASSWORD}
    status, data, _ = await api.request("POST", "/api/v1/users", admin, json=payload)
    assert status == 201
    assert data["email"] == email.lower() and data["role"] == "instructor"
    status, data, _ = await api.request("POST", "/api/v1/users", admin, json=payload)
    assert status == 409 and data["error"]["code"] == "email_taken"
    assert (await login(api, email))[0] == 200
    student = await api.user()
    status, _, _ = await api.request("POST", "/api/v1/users", student, json=payload)
    assert status == 403
    payload["role"] = "superuser"
    status, data, _ = await api.request("POST", "/api/v1/users", admin, json=payload)
    assert status == 400 and data["error"]["details"]["field"] == "role"


async def test_invite_registration(api: Api, admin: User, cohort: int) -> None:
    status, invite, _ = await api.request(
        "POST", "/api/v1/invites", admin, json={"cohort_id": cohort}
    )
    assert status == 201
    email = f"invitee-{uuid.uuid4().hex[:8]}@example.test"
    body = {
        "invite_token": invite["token"],
        "email": email,
        "display_name": "Invitee",
        "password": "long enough password",
    }
    status, data, _ = await api.request("POST", "/api/v1/auth/register", json=body)
    assert status == 201, data
    claims = verify_access_token(api.settings, data["access_token"])
    assert claims.role == "student" and claims.cohorts == {str(cohort)}
    assert await api.outbox(f"user:{data['user_id']}", "enrollment.changed")
    # Single use.
    body["email"] = f"second-{uuid.uuid4().hex[:8]}@example.test"
    status, data, _ = await api.request("POST", "/api/v1/auth/register", json=body)
    assert status == 403 and data["error"]["code"] == "invalid_invite"
    # Short passwords are refused.
    _, invite, _ = await api.request("POST", "/api/v1/invites", admin, json={})
    body = {**body, "invite_token": invite["token"], "password": "short"}
    status, data, _ = await api.request("POST", "/api/v1/auth/register", json=body)
    assert status == 400 and data["error"]["details"]["field"] == "password"


async def test_invite_claims_a_passwordless_account(api: Api, admin: User) -> None:
    imported = await api.user(password=None)
    _, invite, _ = await api.request(
        "POST", "/api/v1/invites", admin, json={"email": imported.email}
    )
    body = {
        "invite_token": invite["token"],
        "email": "someone-else@example.test",
        "display_name": "X",
        "password": "long enough password",
    }
    status, data, _ = await api.request("POST", "/api/v1/auth/register", json=body)
    assert status == 403
    body["email"] = imported.email
    status, data, _ = await api.request("POST", "/api/v1/auth/register", json=body)
    assert status == 201 and data["user_id"] == imported.id
    assert (await login(api, imported.email, "long enough password"))[0] == 200


async def test_open_invite_cannot_claim_an_existing_account(api: Api, admin: User) -> None:
    """An invite without an email must not let anyone take over a passwordless account."""
    imported = await api.user(password=None)
    _, invite, _ = await api.request("POST", "/api/v1/invites", admin, json={})
    body = {
        "invite_token": invite["token"],
        "email": imported.email,
        "display_name": "Attacker",
        "password": "long enough password",
    }
    status, data, _ = await api.request("POST", "/api/v1/auth/register", json=body)
    assert status == 409 and data["error"]["code"] == "email_taken"
    assert (await login(api, imported.email, "long enough password"))[0] == 401
    # The invite is still good for a new account.
    body["email"] = f"fresh-{uuid.uuid4().hex[:8]}@example.test"
    status, data, _ = await api.request("POST", "/api/v1/auth/register", json=body)
    assert status == 201, data


async def test_who_may_invite(api: Api, cohort: int) -> None:
    teacher = await api.user("instructor")
    await api.enroll(cohort, teacher, "staff")
    student = await api.user()
    status, _, _ = await api.request("POST", "/api/v1/invites", teacher, json={"cohort_id": cohort})
    assert status == 201
    status, _, _ = await api.request(
        "POST", "/api/v1/invites", teacher, json={"cohort_id": cohort, "kind": "staff"}
    )
    assert status == 403
    status, _, _ = await api.request("POST", "/api/v1/invites", student, json={"cohort_id": cohort})
    assert status == 403
