"""The cohort activity feed through the real API (and the grading worker): joins, first lesson
completions and passed quizzes are announced on cohort:{id} once each, rendered with the
cohort's privacy switch (off, initials, names) now and in the history, and only staff of the
cohort flip the switch."""

from __future__ import annotations

from typing import Any

from config.servers import SmtpCatcher
from tests.api.conftest import Api, User
from tests.api.test_feedback import graded_submission
from tests.api.test_quizzes import ALL_RIGHT, create_quiz, make_class
from tests.workers.helpers import classroom_workers, eventually


async def feed(api: Api, cohort: int, user: User, query: str = "") -> Any:
    status, data, _ = await api.request("GET", f"/api/v1/cohorts/{cohort}/activity{query}", user)
    assert status == 200, data
    return data


async def lesson(api: Api, cohort: int, title: str) -> int:
    return int(
        await api.db.fetchval(
            "INSERT INTO lessons (cohort_id, position, title) VALUES ($1,"
            " (SELECT count(*) FROM lessons WHERE cohort_id = $1), $2) RETURNING id",
            cohort,
            title,
        )
    )


async def test_the_feed_announces_joins_lessons_and_passes_with_initials_by_default(
    api: Api, admin: User, smtp: SmtpCatcher
) -> None:
    c = await make_class(api)
    ada = await api.user(name="Ada Lovelace")
    status, _, _ = await api.request(
        "POST", f"/api/v1/cohorts/{c.cohort}/enrollments", c.teacher, json={"user_id": ada.id}
    )
    assert status == 201
    await api.refresh_token(ada)
    streams = await lesson(api, c.cohort, "Streams")
    for _ in range(2):  # the second completion changes nothing and posts nothing
        status, _, _ = await api.request("PUT", f"/api/v1/lessons/{streams}/complete", ada)
        assert status == 200
    quiz = await create_quiz(api, c)
    async with classroom_workers(api.settings, smtp.url):
        status, _, _ = await api.request(
            "POST", f"/api/v1/quizzes/{quiz['id']}/submissions", ada, json={"answers": ALL_RIGHT}
        )
        assert status == 202

        async def passed() -> Any:
            items = (await feed(api, c.cohort, ada))["items"]
            return items if items and items[0]["kind"] == "quiz.passed" else None

        items = await eventually(passed)
    assert [(i["kind"], i["actor"], i["subject_title"]) for i in items] == [
        ("quiz.passed", "A. L.", "Warm-up"),
        ("lesson.completed", "A. L.", "Streams"),
        ("member.joined", "A. L.", None),
    ]
    events = await api.outbox(f"cohort:{c.cohort}", "activity")
    assert [e["data"]["kind"] for e in events] == [
        "member.joined",
        "lesson.completed",
        "quiz.passed",
    ]
    assert all(e["data"]["actor"] == "A. L." for e in events)
    # A failing hand-graded submission posts nothing; raising it to a pass posts once.
    bob = c.students[1]
    sub = await graded_submission(api, quiz, bob, {"q1": 0})
    status, _, _ = await api.request(
        "POST", f"/api/v1/submissions/{sub}/feedback", c.teacher, json={"score": 1.0}
    )
    assert status == 201
    assert len(await api.outbox(f"cohort:{c.cohort}", "activity")) == 3
    status, _, _ = await api.request(
        "POST", f"/api/v1/submissions/{sub}/feedback", c.teacher, json={"score": 2.5}
    )
    assert status == 201
    last = (await api.outbox(f"cohort:{c.cohort}", "activity"))[-1]["data"]
    assert (last["kind"], last["actor"]) == ("quiz.passed", "S. 1.")


async def test_the_privacy_switch_renders_the_history_and_off_records_nothing(
    api: Api, admin: User
) -> None:
    c = await make_class(api)
    student = c.students[0]
    await api.db.execute("UPDATE users SET display_name = 'Ada Lovelace' WHERE id = $1", student.id)
    one, two = await lesson(api, c.cohort, "One"), await lesson(api, c.cohort, "Two")
    await api.request("PUT", f"/api/v1/lessons/{one}/complete", student)
    path = f"/api/v1/cohorts/{c.cohort}/activity-settings"

    status, data, _ = await api.request("PUT", path, c.teacher, json={"privacy": "names"})
    assert status == 200 and data == {"cohort_id": c.cohort, "privacy": "names"}
    page = await feed(api, c.cohort, c.students[1])
    assert page["privacy"] == "names" and page["items"][0]["actor"] == "Ada Lovelace"
    settings = await api.outbox(f"cohort:{c.cohort}", "activity.settings")
    assert [s["data"]["privacy"] for s in settings] == ["names"]
    # Setting the same value again announces nothing.
    await api.request("PUT", path, c.teacher, json={"privacy": "names"})
    assert len(await api.outbox(f"cohort:{c.cohort}", "activity.settings")) == 1

    status, _, _ = await api.request("PUT", path, admin, json={"privacy": "off"})
    assert status == 200
    assert await feed(api, c.cohort, student) == {"privacy": "off", "items": []}
    await api.request("PUT", f"/api/v1/lessons/{two}/complete", student)
    assert (
        await api.db.fetchval("SELECT count(*) FROM cohort_activity WHERE cohort_id = $1", c.cohort)
        == 1
    )
    await api.request("PUT", path, c.teacher, json={"privacy": "initials"})
    page = await feed(api, c.cohort, student)
    assert [i["actor"] for i in page["items"]] == ["A. L."]  # "Two" was done while off

    # Refusals: who, what, and the query.
    for who, want in ((student, 403), (c.stranger, 403)):
        status, _, _ = await api.request("PUT", path, who, json={"privacy": "names"})
        assert status == want
    status, _, _ = await api.request("PUT", path, json={"privacy": "names"})
    assert status == 401
    for bad in ({"privacy": "everyone"}, {"privacy": None}, {}, {"privacy": "names", "x": 1}):
        status, data, _ = await api.request("PUT", path, c.teacher, json=bad)
        assert status == 400 and data["error"]["code"] == "invalid_field", bad
    status, data, _ = await api.request("PUT", path, c.teacher, data=b"{oops")
    assert status == 400 and data["error"]["code"] == "invalid_json"
    status, data, _ = await api.request("PUT", path, c.teacher, data=b"x" * 5000)
    assert status == 413
    assert (
        await api.db.fetchval("SELECT activity_privacy FROM cohorts WHERE id = $1", c.cohort)
        == "initials"
    )
    for query in ("?limit=0", "?limit=101", "?limit=x", "?limit=1e3"):
        status, data, _ = await api.request(
            "GET", f"/api/v1/cohorts/{c.cohort}/activity{query}", student
        )
        assert status == 400, query
    assert len((await feed(api, c.cohort, student, "?limit=1"))["items"]) == 1
    status, _, _ = await api.request("GET", f"/api/v1/cohorts/{c.cohort}/activity", c.stranger)
    assert status == 403
    status, _, _ = await api.request("GET", "/api/v1/cohorts/999999999/activity", admin)
    assert status == 404
    status, _, _ = await api.request(
        "PUT", "/api/v1/cohorts/999999999/activity-settings", admin, json={"privacy": "off"}
    )
    assert status == 404
