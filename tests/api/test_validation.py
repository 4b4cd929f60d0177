"""Bodies: malformed JSON, wrong types, out-of-range values, oversized bodies, bad ids."""

from __future__ import annotations

from tests.api.conftest import Api, User


async def test_invalid_json_is_400(api: Api, admin: User) -> None:
    status, data, _ = await api.request(
        "POST",
        "/api/v1/cohorts",
        admin,
        data=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert status == 400
    assert data["error"]["code"] == "invalid_json"


async def test_empty_body_is_400(api: Api, admin: User) -> None:
    status, data, _ = await api.request("POST", "/api/v1/cohorts", admin, data=b"")
    assert status == 400
    assert data["error"]["code"] == "bad_request"


async def test_wrong_type_names_the_field(api: Api, admin: User) -> None:
    status, data, _ = await api.request(
        "POST", "/api/v1/cohorts", admin, json={"slug": "ok-slug", "title": 5}
    )
    assert status == 400
    assert data["error"]["code"] == "invalid_field"
    assert data["error"]["details"]["field"] == "title"


async def test_missing_field_names_the_field(api: Api, admin: User) -> None:
    status, data, _ = await api.request("POST", "/api/v1/cohorts", admin, json={"slug": "x1"})
    assert status == 400
    assert data["error"]["details"]["field"] == "title"


async def test_out_of_range_values(api: Api, admin: User, cohort: int) -> None:
    await api.enroll(cohort, admin, "staff")
    status, data, _ = await api.request(
        "POST", "/api/v1/cohorts", admin, json={"slug": "Bad Slug!", "title": "t"}
    )
    assert (status, data["error"]["details"]["field"]) == (400, "slug")
    status, data, _ = await api.request(
        "POST", f"/api/v1/cohorts/{cohort}/lessons", admin, json={"title": "x" * 201}
    )
    assert (status, data["error"]["details"]["field"]) == (400, "title")
    status, data, _ = await api.request(
        "POST", f"/api/v1/cohorts/{cohort}/lessons", admin, json={"title": "t", "position": -1}
    )
    assert (status, data["error"]["details"]["field"]) == (400, "position")
    status, data, _ = await api.request(
        "POST", f"/api/v1/cohorts/{cohort}/enrollments", admin, json={"user_id": 0}
    )
    assert (status, data["error"]["details"]["field"]) == (400, "user_id")


async def test_oversized_body_is_413(api: Api, admin: User) -> None:
    big = b'{"slug": "a", "title": "' + b"x" * (1024 * 1024) + b'"}'
    status, data, _ = await api.request("POST", "/api/v1/cohorts", admin, data=big)
    assert status == 413
    assert data["error"]["code"] == "payload_too_large"


async def test_unknown_and_malformed_ids_are_404(api: Api, admin: User) -> None:
    for path in (
        "/api/v1/cohorts/999999999",
        "/api/v1/cohorts/abc",
        "/api/v1/cohorts/99999999999999999999999",
        "/api/v1/lessons/999999999",
        "/api/v1/imports/999999999",
    ):
        status, data, _ = await api.request("GET", path, admin)
        assert status == 404, path
        assert data["error"]["code"] == "not_found"


async def test_crash_is_500_without_internals(api: Api, admin: User, monkeypatch: object) -> None:
    import api.routes_auth as routes_auth

    async def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(routes_auth.login_sessions, "load_claims", boom)  # type: ignore[attr-defined]
    status, data, _ = await api.request("POST", "/api/v1/auth/token", admin)
    assert status == 500
    assert data == {
        "error": {"code": "internal", "message": "internal server error", "details": {}}
    }


async def test_nul_characters_are_400_not_500(api: Api, admin: User, cohort: int) -> None:
    """PostgreSQL stores no NUL in text or jsonb: a JSON ``\\u0000`` (found by the fuzzer in
    POST /users) and a NUL byte in a CSV upload are refused as input errors; an escaped
    backslash followed by "u0000" is ordinary text."""
    nul = b'{"email": "nul@example.test", "display_name": "a\\u0000b", "role": "student"}'
    status, data, _ = await api.request(
        "POST", "/api/v1/users", admin, data=nul, headers={"Content-Type": "application/json"}
    )
    assert status == 400 and data["error"]["code"] == "invalid_field", data
    status, data, _ = await api.request(
        "POST",
        f"/api/v1/cohorts/{cohort}/announcements",
        admin,
        data=b'{"title": "t", "body": "x\\\\u0000"}',
        headers={"Content-Type": "application/json"},
    )
    assert status == 201 and data["body"] == "x\\u0000", data
    status, data, _ = await api.request(
        "POST",
        f"/api/v1/cohorts/{cohort}/enrollments/import",
        admin,
        data=b"email,display_name\na@example.test,A\x00B\n",
        headers={"Content-Type": "text/csv"},
    )
    assert status == 400 and data["error"]["code"] == "invalid_csv", data
