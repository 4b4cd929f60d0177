"""GET /api/v1/cohorts/{id}/dashboard: the instructor's figures on load, on a quiet day too,
the same as the scheduler's dashboard.update, for staff of the cohort only."""

from __future__ import annotations

from tests.api.conftest import Api, User
from tests.api.test_feedback import TYPO, graded_submission
from tests.api.test_quizzes import create_quiz, make_class


async def test_the_snapshot_has_every_figure_and_only_staff_read_it(api: Api, admin: User) -> None:
    c = await make_class(api)
    path = f"/api/v1/cohorts/{c.cohort}/dashboard"
    status, quiet, _ = await api.request("GET", path, c.teacher)
    assert status == 200
    assert quiet == {
        "cohort_id": c.cohort,
        "members": 2,
        "submissions_24h": 0,
        "pending_grading": 0,
        "average_percentage": None,
        "lessons_completed_24h": 0,
        "struggling": [],
        "active_24h": 0,
        "active_7d": 0,
        "alerts": [],
        "online": [],  # nobody connected to a gateway (tests/live/test_online.py)
        "online_version": 0,
    }

    quiz = await create_quiz(api, c)
    await graded_submission(api, quiz, c.students[0], {"q1": 0})  # 0 %: struggling
    await graded_submission(api, quiz, c.students[1], TYPO)  # waits for hand grading
    lesson = await api.db.fetchval(
        "INSERT INTO lessons (cohort_id, position, title) VALUES ($1, 0, 'One') RETURNING id",
        c.cohort,
    )
    status, _, _ = await api.request("PUT", f"/api/v1/lessons/{lesson}/complete", c.students[0])
    assert status == 200
    status, board, _ = await api.request("GET", path, c.teacher)
    assert status == 200
    assert board["submissions_24h"] == 2 and board["pending_grading"] == 1
    assert board["average_percentage"] == 33.33  # (0 + 66.67) / 2
    assert board["lessons_completed_24h"] == 1 and board["struggling"] == [c.students[0].id]
    assert (board["active_24h"], board["active_7d"]) == (2, 2)
    # student 0: 0 % average; student 1 did no lesson while the median is 50 %: 50 points behind.
    assert [(a["user_id"], a["rule"], a["reason"]) for a in board["alerts"]] == [
        (c.students[0].id, "low_quiz_average", "quiz average 0% (under 50%)"),
        (
            c.students[1].id,
            "behind",
            "0 of 1 lessons done, 50 points behind the cohort's median (50%)",
        ),
    ]

    status, _, _ = await api.request("GET", path, admin)
    assert status == 200
    for who in (c.students[0], c.stranger):
        status, data, _ = await api.request("GET", path, who)
        assert status == 403 and data["error"]["code"] == "forbidden"
    status, _, _ = await api.request("GET", path)
    assert status == 401
    for bad in ("/api/v1/cohorts/999999999/dashboard", "/api/v1/cohorts/abc/dashboard"):
        status, _, _ = await api.request("GET", bad, admin)
        assert status == 404


async def test_the_drill_down_shows_one_student_to_staff_only(api: Api, admin: User) -> None:
    c = await make_class(api)
    student = c.students[1]
    quiz = await create_quiz(api, c)
    sub = await graded_submission(api, quiz, student, TYPO)
    lesson = await api.db.fetchval(
        "INSERT INTO lessons (cohort_id, position, title) VALUES ($1, 0, 'One') RETURNING id",
        c.cohort,
    )
    session = await api.db.fetchval(
        "INSERT INTO live_sessions (cohort_id, title, starts_at, ends_at, state)"
        " VALUES ($1, 'Week 1', now() - interval '1 hour', now(), 'ended') RETURNING id",
        c.cohort,
    )
    await api.db.execute(
        "INSERT INTO attendance (session_id, user_id, seconds_attended) VALUES ($1, $2, 600)",
        session,
        student.id,
    )
    path = f"/api/v1/cohorts/{c.cohort}/students/{student.id}"
    status, data, _ = await api.request("GET", path, c.teacher)
    assert status == 200, data
    assert (data["user_id"], data["display_name"], data["email"]) == (
        student.id,
        "Student 1",
        student.email,
    )
    assert data["progress"]["total"] == 1 and data["progress"]["completed_count"] == 0
    assert data["progress"]["lessons"][0]["lesson_id"] == lesson
    assert [(s["submission_id"], s["review"], s["score"]) for s in data["submissions"]] == [
        (sub, "waiting", 2.0)
    ]
    assert data["attendance"] == [
        {
            "session_id": session,
            "title": "Week 1",
            "starts_at": data["attendance"][0]["starts_at"],
            "state": "ended",
            "attended": True,
            "seconds_attended": 600,
        }
    ]
    assert [a["rule"] for a in data["alerts"]] == []  # no lesson done by anyone: not behind

    for who, want in ((admin, 200), (student, 403), (c.students[0], 403), (c.stranger, 403)):
        status, _, _ = await api.request("GET", path, who)
        assert status == want
    status, _, _ = await api.request("GET", path)
    assert status == 401
    for bad in (
        f"/api/v1/cohorts/{c.cohort}/students/{c.stranger.id}",  # not in this cohort
        f"/api/v1/cohorts/{c.cohort}/students/{c.teacher.id}",  # staff, not a student
        f"/api/v1/cohorts/{c.cohort}/students/x",
        f"/api/v1/cohorts/{c.cohort}/students/99999999999",
    ):
        status, _, _ = await api.request("GET", bad, c.teacher)
        assert status == 404, bad
