"""Bulk enrollment: the upload endpoint and the ``csv_import`` job handler."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import pytest

from config import keys
from gateway.publish import Publisher
from tests.api.conftest import Api, User
from workers.context import WorkerContext
from workers.csv_import import QUEUE, CsvError, handle_csv_import, parse_csv


@pytest.fixture
async def ctx(api: Api) -> AsyncIterator[WorkerContext]:
    yield WorkerContext(api.settings, api.redis, api.db, Publisher(api.redis, api.settings))


async def upload(api: Api, user: User, cohort: int, text: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    status, data, _ = await api.request(
        "POST",
        f"/api/v1/cohorts/{cohort}/enrollments/import",
        user,
        data=text.encode(),
        headers={"Content-Type": "text/csv"},
    )
    return status, data


def test_parse_csv() -> None:
    rows = parse_csv("\ufeffEmail,Name,Role\r\na@x.io,A,student\r\n\r\nb@x.io\r\n")
    assert [(r.line, r.email, r.name, r.role) for r in rows] == [
        (2, "a@x.io", "A", "student"),
        (4, "b@x.io", "", ""),
    ]
    with pytest.raises(CsvError):
        parse_csv("name,role\nA,student\n")
    with pytest.raises(CsvError):
        parse_csv("")


async def test_import_end_to_end(api: Api, ctx: WorkerContext, cohort: int) -> None:
    teacher = await api.user("instructor")
    await api.enroll(cohort, teacher, "staff")
    existing = await api.user()
    await api.enroll(cohort, existing)
    new = f"new-{uuid.uuid4().hex[:8]}@example.test"
    text = (
        "email,name,role\n"
        f"{new},New Person,student\n"
        f"{existing.email},Old,student\n"
        "not-an-email,X,student\n"
        f"ok-{uuid.uuid4().hex[:6]}@example.test,Bad Role,janitor\n"
        f"{new.upper()},Dup,\n"
    )
    status, data = await upload(api, teacher, cohort, text)
    assert status == 202, data
    assert data["status"] == "pending" and data["total"] == 5
    import_id = data["id"]
    entries = await api.redis.xrange(keys.job_stream(QUEUE))
    assert any(json.loads(f[b"p"]) == {"import_id": import_id} for _, f in entries)

    await handle_csv_import(ctx, {"import_id": import_id})
    status, data, _ = await api.request("GET", f"/api/v1/imports/{import_id}", teacher)
    assert status == 200
    assert data["status"] == "done" and data["processed"] == 5
    assert [r["status"] for r in data["results"]] == [
        "created",
        "already_enrolled",
        "invalid",
        "invalid",
        "already_enrolled",
    ]
    assert "role" in data["results"][3]["reason"]
    user_id = await api.db.fetchval("SELECT id FROM users WHERE email = $1", new)
    assert (
        await api.db.fetchval(
            "SELECT kind FROM enrollments WHERE cohort_id = $1 AND user_id = $2", cohort, user_id
        )
        == "member"
    )
    # Progress goes to the cohort's staff, rows included, never to a user's own topic.
    assert await api.outbox(f"user:{teacher.id}", "import.progress") == []
    progress = await api.outbox(f"staff:{cohort}", "import.progress")
    assert progress[-1]["data"]["status"] == "done"
    assert progress[-1]["data"]["counts"] == {
        "created": 1,
        "already_enrolled": 2,
        "invalid": 2,
        "new_users": 1,
    }
    running = [p["data"] for p in progress if p["data"]["status"] == "running"]
    rows = [r for p in running for r in p["rows"]]
    assert [r["line"] for r in rows] == [r["line"] for r in data["results"]]
    assert rows[0]["new_user"] is True and rows[0]["email"] == new
    assert all(p["uploaded_by"] == teacher.id for p in running)

    # Idempotent: a redelivered job changes nothing.
    await handle_csv_import(ctx, {"import_id": import_id})
    assert len(await api.outbox(f"staff:{cohort}", "import.progress")) == len(progress)


async def test_only_an_admin_import_grants_staff(api: Api, ctx: WorkerContext, cohort: int) -> None:
    """An instructor's file cannot make anyone staff; an admin's can."""
    teacher = await api.user("instructor")
    await api.enroll(cohort, teacher, "staff")
    admin = await api.user("admin")
    mine = f"mine-{uuid.uuid4().hex[:8]}@example.test"
    status, data = await upload(api, teacher, cohort, f"email,role\n{mine},instructor\n")
    assert status == 202, data
    await handle_csv_import(ctx, {"import_id": data["id"]})
    _, data, _ = await api.request("GET", f"/api/v1/imports/{data['id']}", teacher)
    assert [r["status"] for r in data["results"]] == ["invalid"]
    assert "admin" in data["results"][0]["reason"]
    assert await api.db.fetchval("SELECT id FROM users WHERE email = $1", mine) is None

    granted = f"granted-{uuid.uuid4().hex[:8]}@example.test"
    status, data = await upload(api, admin, cohort, f"email,role\n{granted},staff\n")
    await handle_csv_import(ctx, {"import_id": data["id"]})
    kind = await api.db.fetchval(
        "SELECT e.kind FROM enrollments e JOIN users u ON u.id = e.user_id"
        " WHERE e.cohort_id = $1 AND u.email = $2",
        cohort,
        granted,
    )
    assert kind == "staff"


async def test_import_resumes_after_a_crash(api: Api, ctx: WorkerContext, cohort: int) -> None:
    """A job that died after its first batch continues where it stopped, never twice."""
    import workers.csv_import as module

    admin = await api.user("admin")
    emails = [f"r{i}-{uuid.uuid4().hex[:6]}@example.test" for i in range(5)]
    status, data = await upload(api, admin, cohort, "email\n" + "\n".join(emails) + "\n")
    assert status == 202
    import_id = data["id"]
    calls = 0
    real_apply = module._apply

    async def flaky(conn, cohort_id, row, may_grant_staff):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("worker died")
        return await real_apply(conn, cohort_id, row, may_grant_staff)

    module.BATCH, old_batch = 2, module.BATCH
    module._apply = flaky  # type: ignore[assignment]
    try:
        with pytest.raises(RuntimeError):
            await handle_csv_import(ctx, {"import_id": import_id})
        assert (
            await api.db.fetchval("SELECT processed FROM csv_imports WHERE id = $1", import_id) == 2
        )
        await handle_csv_import(ctx, {"import_id": import_id})
    finally:
        module.BATCH = old_batch
        module._apply = real_apply  # type: ignore[assignment]
    _, data, _ = await api.request("GET", f"/api/v1/imports/{import_id}", admin)
    assert data["status"] == "done"
    assert [r["status"] for r in data["results"]] == ["created"] * 5
    assert [r["line"] for r in data["results"]] == [2, 3, 4, 5, 6]


async def test_import_validation_and_authorization(api: Api, cohort: int) -> None:
    teacher = await api.user("instructor")
    await api.enroll(cohort, teacher, "staff")
    student = await api.user()
    await api.enroll(cohort, student)
    assert (await upload(api, student, cohort, "email\na@b.io\n"))[0] == 403
    status, data = await upload(api, teacher, cohort, "name\nA\n")
    assert status == 400 and data["error"]["code"] == "invalid_csv"
    status, data, _ = await api.request(
        "POST", f"/api/v1/cohorts/{cohort}/enrollments/import", teacher, json={"email": "x"}
    )
    assert status == 415
    status, data, _ = await api.request(
        "POST",
        f"/api/v1/cohorts/{cohort}/enrollments/import",
        teacher,
        data=b"\xff\xfe\x00bad",
        headers={"Content-Type": "text/csv"},
    )
    assert status == 400
    big = "email\n" + "a@b.io\n" * 400_000
    assert (await upload(api, teacher, cohort, big))[0] == 413
    _, data = await upload(api, teacher, cohort, "email\na@b.io\n")
    assert (await api.request("GET", f"/api/v1/imports/{data['id']}", student))[0] == 403
