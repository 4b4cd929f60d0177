"""Lessons: staff CRUD, member reads, HTTP caching (ETag/304) and cache invalidation."""

from __future__ import annotations

from config import keys
from tests.api.conftest import Api, User


async def staffed(api: Api, cohort: int) -> tuple[User, User]:
    teacher = await api.user("instructor")
    student = await api.user()
    await api.enroll(cohort, teacher, "staff")
    await api.enroll(cohort, student)
    return teacher, student


async def test_staff_crud_and_member_reads(api: Api, cohort: int) -> None:
    teacher, student = await staffed(api, cohort)
    path = f"/api/v1/cohorts/{cohort}/lessons"
    status, one, _ = await api.request("POST", path, teacher, json={"title": "One", "body": "b1"})
    assert status == 201 and one["position"] == 0 and one["version"] == 1
    status, two, _ = await api.request("POST", path, teacher, json={"title": "Two"})
    assert two["position"] == 1
    status, data, _ = await api.request("POST", path, teacher, json={"title": "X", "position": 0})
    assert status == 409 and data["error"]["code"] == "position_taken"
    status, data, resp = await api.request("GET", path, student)
    assert status == 200
    assert [lesson["title"] for lesson in data["lessons"]] == ["One", "Two"]
    assert "body" not in data["lessons"][0]
    assert resp.headers["Cache-Control"] == "private, max-age=30"
    status, data, resp = await api.request("GET", f"/api/v1/lessons/{one['id']}", student)
    assert status == 200 and data["body"] == "b1"
    assert resp.headers["Cache-Control"] == "private, max-age=3600"
    status, data, _ = await api.request(
        "PATCH", f"/api/v1/lessons/{one['id']}", teacher, json={"body": "b2", "version": 1}
    )
    assert status == 200 and data["version"] == 2 and data["title"] == "One"
    status, data, _ = await api.request(
        "PATCH", f"/api/v1/lessons/{one['id']}", teacher, json={"body": "b3", "version": 1}
    )
    assert status == 409 and data["error"]["code"] == "version_conflict"
    status, _, _ = await api.request("DELETE", f"/api/v1/lessons/{two['id']}", teacher)
    assert status == 204
    assert (await api.request("GET", f"/api/v1/lessons/{two['id']}", student))[0] == 404
    ops = [e["data"]["op"] for e in await api.outbox(f"cohort:{cohort}", "lesson.changed")]
    assert ops == ["created", "created", "updated", "deleted"]


async def test_students_and_outsiders_cannot_write_or_read_elsewhere(api: Api, cohort: int) -> None:
    teacher, student = await staffed(api, cohort)
    _, lesson, _ = await api.request(
        "POST", f"/api/v1/cohorts/{cohort}/lessons", teacher, json={"title": "L"}
    )
    lesson_path = f"/api/v1/lessons/{lesson['id']}"
    assert (
        await api.request("POST", f"/api/v1/cohorts/{cohort}/lessons", student, json={"title": "x"})
    )[0] == 403
    assert (await api.request("PATCH", lesson_path, student, json={"title": "x"}))[0] == 403
    assert (await api.request("DELETE", lesson_path, student))[0] == 403
    other_cohort = await api.cohort()
    other_teacher = await api.user("instructor")
    await api.enroll(other_cohort, other_teacher, "staff")
    # Outside the cohort a lesson is as absent as a made-up id (404), so ids reveal nothing.
    assert (await api.request("PATCH", lesson_path, other_teacher, json={"title": "x"}))[0] == 404
    assert (await api.request("DELETE", lesson_path, other_teacher))[0] == 404
    outsider = await api.user()
    assert (await api.request("GET", lesson_path, outsider))[0] == 404
    assert (await api.request("GET", f"/api/v1/cohorts/{cohort}/lessons", outsider))[0] == 403
    # Cached or not, the answer for an outsider stays 404.
    assert (await api.request("GET", lesson_path, student))[0] == 200
    assert (await api.request("GET", lesson_path, outsider))[0] == 404


async def _cache_keys(api: Api, lesson_id: int) -> list[bytes]:
    found = []
    for pattern in (
        keys.cache_version_key("lesson", str(lesson_id)),
        keys.cache_key("lesson", str(lesson_id), "*"),
    ):
        found += [k async for k in api.redis.scan_iter(match=pattern)]
    return found


async def test_absent_and_foreign_lessons_look_alike_and_leave_no_keys(
    api: Api, cohort: int
) -> None:
    """A made-up id and another cohort's lesson get the same 404 and write nothing to Redis;
    what a member's read caches expires."""
    teacher, student = await staffed(api, cohort)
    _, lesson, _ = await api.request(
        "POST", f"/api/v1/cohorts/{cohort}/lessons", teacher, json={"title": "Mine"}
    )
    await api.redis.delete(keys.cache_version_key("lesson", str(lesson["id"])))
    outsider = await api.user()
    await api.enroll(await api.cohort(), outsider)
    absent = int(await api.db.fetchval("SELECT coalesce(max(id), 0) + 1000 FROM lessons"))
    answers = []
    for lesson_id in (absent, lesson["id"]):
        for _ in range(2):
            status, data, _ = await api.request("GET", f"/api/v1/lessons/{lesson_id}", outsider)
            answers.append((status, data["error"]["code"]))
        assert await _cache_keys(api, lesson_id) == [], lesson_id
    assert set(answers) == {(404, "not_found")}
    assert (await api.request("GET", f"/api/v1/lessons/{lesson['id']}", student))[0] == 200
    written = await _cache_keys(api, lesson["id"])
    assert len(written) == 2
    for key in written:
        assert 0 < await api.redis.ttl(key) <= 24 * 3600, key


async def test_etag_and_304(api: Api, cohort: int) -> None:
    teacher, student = await staffed(api, cohort)
    _, lesson, _ = await api.request(
        "POST", f"/api/v1/cohorts/{cohort}/lessons", teacher, json={"title": "L", "body": "v1"}
    )
    for path in (f"/api/v1/lessons/{lesson['id']}", f"/api/v1/cohorts/{cohort}/lessons"):
        status, _, resp = await api.request("GET", path, student)
        etag = resp.headers["ETag"]
        assert status == 200 and etag.startswith('"')
        status, data, resp = await api.request(
            "GET", path, student, headers={"If-None-Match": etag}
        )
        assert status == 304 and data is None
        assert resp.headers["ETag"] == etag
        status, _, _ = await api.request(
            "GET", path, student, headers={"If-None-Match": f'"other", W/{etag}'}
        )
        assert status == 304
        status, _, _ = await api.request("GET", path, student, headers={"If-None-Match": '"x"'})
        assert status == 200


async def test_edit_invalidates_the_cache(api: Api, cohort: int) -> None:
    teacher, student = await staffed(api, cohort)
    _, lesson, _ = await api.request(
        "POST", f"/api/v1/cohorts/{cohort}/lessons", teacher, json={"title": "Old", "body": "v1"}
    )
    lesson_path = f"/api/v1/lessons/{lesson['id']}"
    catalog_path = f"/api/v1/cohorts/{cohort}/lessons"
    _, _, lesson_resp = await api.request("GET", lesson_path, student)
    _, _, catalog_resp = await api.request("GET", catalog_path, student)
    # Served from Redis now: a change behind the cache's back stays invisible...
    await api.db.execute("UPDATE lessons SET body = 'sneaky' WHERE id = $1", lesson["id"])
    _, data, _ = await api.request("GET", lesson_path, student)
    assert data["body"] == "v1"
    # ...while an edit through the API is seen at once, with new validators.
    await api.request("PATCH", lesson_path, teacher, json={"title": "New", "body": "v2"})
    status, data, resp = await api.request(
        "GET", lesson_path, student, headers={"If-None-Match": lesson_resp.headers["ETag"]}
    )
    assert status == 200 and data["body"] == "v2"
    assert resp.headers["ETag"] != lesson_resp.headers["ETag"]
    status, data, resp = await api.request(
        "GET", catalog_path, student, headers={"If-None-Match": catalog_resp.headers["ETag"]}
    )
    assert status == 200 and data["lessons"][0]["title"] == "New"


async def test_lost_version_key_never_serves_old_entries(api: Api, cohort: int) -> None:
    teacher, student = await staffed(api, cohort)
    _, lesson, _ = await api.request(
        "POST", f"/api/v1/cohorts/{cohort}/lessons", teacher, json={"title": "T", "body": "v1"}
    )
    path = f"/api/v1/lessons/{lesson['id']}"
    await api.request("GET", path, student)
    await api.redis.delete(keys.cache_version_key("lesson", str(lesson["id"])))
    await api.db.execute("UPDATE lessons SET body = 'v2' WHERE id = $1", lesson["id"])
    _, data, _ = await api.request("GET", path, student)
    assert data["body"] == "v2"
