"""Progress: idempotent completion, its events and milestones, debounced staff aggregates."""

from __future__ import annotations

import json

from config import keys
from gateway.publish import Publisher
from tests.api.conftest import Api, User
from workers import certificates
from workers.certificates import reached
from workers.context import WorkerContext
from workers.progress import STAFF_PROGRESS_QUEUE
from workers.staff_progress import handle_staff_progress


async def course(api: Api, cohort: int, lessons: int) -> tuple[User, User, list[int]]:
    teacher = await api.user("instructor")
    student = await api.user()
    await api.enroll(cohort, teacher, "staff")
    await api.enroll(cohort, student)
    ids = []
    for i in range(lessons):
        ids.append(
            await api.db.fetchval(
                "INSERT INTO lessons (cohort_id, position, title) VALUES ($1, $2, $3) RETURNING id",
                cohort,
                i,
                f"L{i}",
            )
        )
    return teacher, student, ids


def test_milestones_reached() -> None:
    assert reached(1, 4) == [25]
    assert reached(1, 1) == [25, 50, 75, 100]
    assert reached(2, 3) == [25, 50]
    assert reached(3, 3) == [25, 50, 75, 100]
    assert reached(1, 5) == []
    assert reached(0, 0) == []


async def test_complete_is_idempotent_and_emits_once(api: Api, cohort: int) -> None:
    _, student, lessons = await course(api, cohort, 4)
    path = f"/api/v1/lessons/{lessons[0]}/complete"
    status, first, _ = await api.request("PUT", path, student)
    assert status == 200
    assert first["completed"] is True
    assert (first["completed_count"], first["total"], first["percentage"]) == (1, 4, 25.0)
    status, second, _ = await api.request("PUT", path, student)
    assert status == 200 and second == first
    topic = f"user:{student.id}"
    updates = await api.outbox(topic, "progress.update")
    assert [u["data"] for u in updates] == [
        {
            "lesson_id": lessons[0],
            "cohort_id": cohort,
            "completed": True,
            "completed_count": 1,
            "total": 4,
            "percentage": 25.0,
        }
    ]
    certs = await api.outbox(topic, "certificate.progress")
    assert [c["data"] for c in certs] == [
        {"cohort_id": cohort, "percentage": 25.0, "milestone": 25}
    ]


async def test_milestones_are_emitted_once_each(api: Api, cohort: int) -> None:
    _, student, lessons = await course(api, cohort, 3)
    for lesson in lessons:
        assert (await api.request("PUT", f"/api/v1/lessons/{lesson}/complete", student))[0] == 200
    certs = await api.outbox(f"user:{student.id}", "certificate.progress")
    assert [c["data"]["milestone"] for c in certs] == [25, 50, 75, 100]
    _, mine, _ = await api.request("GET", f"/api/v1/cohorts/{cohort}/progress", student)
    assert (mine["completed_count"], mine["total"], mine["percentage"]) == (3, 3, 100.0)
    assert all(lesson["completed"] for lesson in mine["lessons"])


async def test_only_members_of_the_cohort_complete(api: Api, cohort: int) -> None:
    teacher, _, lessons = await course(api, cohort, 1)
    outsider = await api.user()
    path = f"/api/v1/lessons/{lessons[0]}/complete"
    status, data, _ = await api.request("PUT", path, outsider)
    assert status == 403 and data["error"]["code"] == "not_enrolled"
    assert (await api.request("PUT", path, teacher))[0] == 403
    assert (await api.request("PUT", "/api/v1/lessons/987654321/complete", teacher))[0] == 404
    assert (await api.request("GET", f"/api/v1/cohorts/{cohort}/progress", outsider))[0] == 403


async def test_staff_view(api: Api, cohort: int) -> None:
    teacher, student, lessons = await course(api, cohort, 2)
    other = await api.user()
    await api.enroll(cohort, other)
    await api.request("PUT", f"/api/v1/lessons/{lessons[0]}/complete", student)
    await api.request("PUT", f"/api/v1/lessons/{lessons[1]}/complete", student)
    await api.request("PUT", f"/api/v1/lessons/{lessons[0]}/complete", other)
    path = f"/api/v1/cohorts/{cohort}/progress/students"
    status, data, _ = await api.request("GET", path, teacher)
    assert status == 200
    assert (data["total"], data["students"], data["average_percentage"]) == (2, 2, 75.0)
    assert [lesson["completed_count"] for lesson in data["lessons"]] == [2, 1]
    by_user = {s["user_id"]: s["percentage"] for s in data["per_student"]}
    assert by_user == {student.id: 100.0, other.id: 50.0}
    assert (await api.request("GET", path, student))[0] == 403


async def test_staff_aggregates_are_debounced(api: Api, cohort: int) -> None:
    """Many completions inside the window queue one aggregate job, which reads the final
    state when it runs."""
    _, student, lessons = await course(api, cohort, 3)
    for lesson in lessons:
        await api.request("PUT", f"/api/v1/lessons/{lesson}/complete", student)
    delayed = await api.redis.zrange(keys.job_delayed_key(STAFF_PROGRESS_QUEUE), 0, -1)
    mine = [m for m in delayed if json.loads(json.loads(m)["p"]) == {"cohort_id": cohort}]
    assert len(mine) == 1
    assert await api.outbox(f"staff:{cohort}", "staff.progress") == []
    ctx = WorkerContext(api.settings, api.redis, api.db, Publisher(api.redis, api.settings))
    await handle_staff_progress(ctx, {"cohort_id": cohort})
    events = await api.outbox(f"staff:{cohort}", "staff.progress")
    assert len(events) == 1
    data = events[0]["data"]
    assert data["average_percentage"] == 100.0 and data["students"] == 1
    assert [lesson["completed_count"] for lesson in data["lessons"]] == [1, 1, 1]
    assert "per_student" not in data


async def test_certificate_progress_keeps_what_was_earned(api: Api, cohort: int) -> None:
    teacher, student, lessons = await course(api, cohort, 2)
    path = f"/api/v1/cohorts/{cohort}/certificate"
    status, cert, _ = await api.request("GET", path, student)
    assert status == 200
    assert [(m["milestone"], m["unlocked"], m["unlocked_at"]) for m in cert["milestones"]] == [
        (25, False, None),
        (50, False, None),
        (75, False, None),
        (100, False, None),
    ]
    assert cert["certificate"] is None
    for lesson in lessons:
        assert (await api.request("PUT", f"/api/v1/lessons/{lesson}/complete", student))[0] == 200
    _, cert, _ = await api.request("GET", path, student)
    assert all(m["unlocked"] and m["unlocked_at"] for m in cert["milestones"])
    code = cert["certificate"]["code"]
    # A lesson added afterwards lowers the percentage, not what was earned; completing it
    # unlocks nothing new, so no milestone event or notification comes twice.
    status, added, _ = await api.request(
        "POST", f"/api/v1/cohorts/{cohort}/lessons", teacher, json={"title": "Extra"}
    )
    assert status == 201
    _, cert, _ = await api.request("GET", path, student)
    assert cert["certificate"]["code"] == code
    assert all(m["unlocked"] for m in cert["milestones"])
    assert (await api.request("PUT", f"/api/v1/lessons/{added['id']}/complete", student))[0] == 200
    certs = await api.outbox(f"user:{student.id}", "certificate.progress")
    assert [c["data"]["milestone"] for c in certs] == [25, 50, 75, 100]
    kinds = await api.db.fetch(
        "SELECT data->>'milestone' AS m FROM notifications"
        " WHERE user_id = $1 AND kind = 'certificate.milestone' ORDER BY id",
        student.id,
    )
    assert [int(r["m"]) for r in kinds] == [25, 50, 75, 100]
    # Their emails: queued while unsent (any number of times), none once email is off.
    assert await certificates.send_emails(api.db, api.redis, student.id, cohort) == 4
    status, _, _ = await api.request(
        "PUT",
        "/api/v1/me/notification-prefs",
        student,
        json={"prefs": [{"kind": "certificate.milestone", "email": False}]},
    )
    assert status == 200
    assert await certificates.send_emails(api.db, api.redis, student.id, cohort) == 0
    # Members only.
    outsider = await api.user()
    assert (await api.request("GET", path, outsider))[0] == 403
