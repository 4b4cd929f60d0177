"""Cohorts and enrollment: who may do what, and the events enrollment changes emit."""

from __future__ import annotations

import uuid

from tests.api.conftest import Api, User


def slug() -> str:
    return f"s-{uuid.uuid4().hex[:12]}"


async def test_admin_crud(api: Api, admin: User) -> None:
    s = slug()
    status, data, _ = await api.request(
        "POST", "/api/v1/cohorts", admin, json={"slug": s, "title": "  Spring  "}
    )
    assert status == 201 and data["slug"] == s and data["title"] == "Spring"
    cohort = data["id"]
    status, data, _ = await api.request(
        "POST", "/api/v1/cohorts", admin, json={"slug": s, "title": "Again"}
    )
    assert status == 409 and data["error"]["code"] == "slug_taken"
    status, data, _ = await api.request(
        "PATCH", f"/api/v1/cohorts/{cohort}", admin, json={"title": "Summer"}
    )
    assert status == 200 and data["title"] == "Summer" and data["slug"] == s
    status, data, _ = await api.request("GET", "/api/v1/cohorts", admin)
    assert cohort in [c["id"] for c in data]
    status, _, _ = await api.request("DELETE", f"/api/v1/cohorts/{cohort}", admin)
    assert status == 204
    assert (await api.request("GET", f"/api/v1/cohorts/{cohort}", admin))[0] == 404
    assert (await api.request("DELETE", f"/api/v1/cohorts/{cohort}", admin))[0] == 404
    assert await api.outbox(f"cohort:{cohort}", "cohort.deleted")


async def test_only_admins_write_cohorts(api: Api, cohort: int) -> None:
    teacher = await api.user("instructor")
    await api.enroll(cohort, teacher, "staff")
    for method, path, body in (
        ("POST", "/api/v1/cohorts", {"slug": slug(), "title": "t"}),
        ("PATCH", f"/api/v1/cohorts/{cohort}", {"title": "t"}),
        ("DELETE", f"/api/v1/cohorts/{cohort}", None),
    ):
        status, data, _ = await api.request(method, path, teacher, json=body)
        assert status == 403, (method, path)
        assert data["error"]["code"] == "forbidden"


async def test_reads_are_limited_to_members_and_staff(api: Api, cohort: int) -> None:
    member = await api.user()
    outsider = await api.user()
    await api.enroll(cohort, member)
    assert (await api.request("GET", f"/api/v1/cohorts/{cohort}", member))[0] == 200
    assert (await api.request("GET", f"/api/v1/cohorts/{cohort}", outsider))[0] == 403
    _, listed, _ = await api.request("GET", "/api/v1/cohorts", member)
    assert [c["id"] for c in listed] == [cohort]
    _, listed, _ = await api.request("GET", "/api/v1/cohorts", outsider)
    assert listed == []
    # Enrollment lists are for staff.
    assert (await api.request("GET", f"/api/v1/cohorts/{cohort}/enrollments", member))[0] == 403


async def test_staff_enroll_members_but_not_staff(api: Api, cohort: int) -> None:
    teacher = await api.user("instructor")
    await api.enroll(cohort, teacher, "staff")
    student = await api.user()
    path = f"/api/v1/cohorts/{cohort}/enrollments"
    status, data, _ = await api.request("POST", path, teacher, json={"email": student.email})
    assert status == 201 and data["user_id"] == student.id and data["kind"] == "member"
    status, data, _ = await api.request("POST", path, teacher, json={"user_id": student.id})
    assert status == 200  # already enrolled: same state, no second event
    events = await api.outbox(f"user:{student.id}", "enrollment.changed")
    assert [e["data"] for e in events] == [
        {"cohort_id": cohort, "kind": "member", "enrolled": True}
    ]
    other = await api.user("instructor")
    status, _, _ = await api.request(
        "POST", path, teacher, json={"user_id": other.id, "kind": "staff"}
    )
    assert status == 403
    _, listed, _ = await api.request("GET", path, teacher)
    assert {e["user_id"] for e in listed} == {teacher.id, student.id}
    status, _, _ = await api.request("DELETE", f"{path}/{student.id}", teacher)
    assert status == 204
    events = await api.outbox(f"user:{student.id}", "enrollment.changed")
    assert events[-1]["data"]["enrolled"] is False
    assert (await api.request("DELETE", f"{path}/{student.id}", teacher))[0] == 404
    # Staff cannot remove staff; admins can.
    assert (await api.request("DELETE", f"{path}/{teacher.id}", teacher))[0] == 403


async def test_staff_of_another_cohort_and_students_cannot_enroll(api: Api, cohort: int) -> None:
    elsewhere = await api.cohort()
    teacher = await api.user("instructor")
    await api.enroll(elsewhere, teacher, "staff")
    student = await api.user()
    await api.enroll(cohort, student)
    path = f"/api/v1/cohorts/{cohort}/enrollments"
    target = await api.user()
    for who in (teacher, student):
        status, _, _ = await api.request("POST", path, who, json={"user_id": target.id})
        assert status == 403


async def test_enroll_validation(api: Api, admin: User, cohort: int) -> None:
    path = f"/api/v1/cohorts/{cohort}/enrollments"
    status, data, _ = await api.request("POST", path, admin, json={})
    assert status == 400
    status, data, _ = await api.request("POST", path, admin, json={"user_id": 987654321})
    assert status == 404
    status, data, _ = await api.request(
        "POST", path, admin, json={"user_id": admin.id, "kind": "owner"}
    )
    assert status == 400 and data["error"]["details"]["field"] == "kind"
    status, data, _ = await api.request(
        "POST", "/api/v1/cohorts/987654321/enrollments", admin, json={"user_id": admin.id}
    )
    assert status == 404
