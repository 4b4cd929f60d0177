"""Quizzes through the real API and workers: definitions and who sees the answer key,
submitting and attempts, grading delivered live to a gateway connection, statistics and the
leaderboard."""

from __future__ import annotations

import asyncio
from typing import Any

from config.servers import SmtpCatcher
from tests.api.conftest import Api, User
from tests.workers.helpers import QUESTIONS, classroom_workers, eventually, listening, received_by

ALL_RIGHT = {"q1": 1, "q2": 3.14, "q3": " paris "}
ONE_RIGHT = {"q1": 1, "q2": 2, "q3": "Rome"}


class Class:
    """A cohort with a teacher (staff) and two students, and a stranger from another cohort."""

    def __init__(self, cohort: int, teacher: User, students: list[User], stranger: User) -> None:
        self.cohort = cohort
        self.teacher = teacher
        self.students = students
        self.stranger = stranger


async def make_class(api: Api) -> Class:
    cohort, other = await api.cohort(), await api.cohort()
    teacher = await api.user("instructor")
    await api.enroll(cohort, teacher, "staff")
    students = [await api.user(name=f"Student {i}") for i in range(2)]
    for s in students:
        await api.enroll(cohort, s)
    stranger = await api.user()
    await api.enroll(other, stranger)
    return Class(cohort, teacher, students, stranger)


async def create_quiz(api: Api, c: Class, **kw: Any) -> dict[str, Any]:
    body = {"title": "Warm-up", "questions": QUESTIONS, **kw}
    status, data, _ = await api.request(
        "POST", f"/api/v1/cohorts/{c.cohort}/quizzes", c.teacher, json=body
    )
    assert status == 201, data
    return dict(data)


async def test_staff_define_quizzes_and_students_never_see_the_key(api: Api) -> None:
    c = await make_class(api)
    quiz = await create_quiz(api, c, max_attempts=2)
    assert quiz["view"] == "full" and quiz["max_score"] == 3.0 and quiz["question_count"] == 3
    assert quiz["questions"][0]["correct"] == 1

    status, data, _ = await api.request("GET", f"/api/v1/quizzes/{quiz['id']}", c.students[0])
    assert status == 200 and data["view"] == "public" and data["attempts_used"] == 0
    for q in data["questions"]:
        assert not {"correct", "answer", "accepted", "tolerance"} & set(q)
    assert data["questions"][0]["options"] == ["3", "4"]

    status, data, _ = await api.request("GET", f"/api/v1/quizzes/{quiz['id']}", c.teacher)
    assert status == 200 and data["view"] == "full"
    status, data, _ = await api.request("GET", f"/api/v1/quizzes/{quiz['id']}", c.stranger)
    assert status == 403
    status, _, _ = await api.request("GET", f"/api/v1/quizzes/{quiz['id']}")
    assert status == 401
    status, data, _ = await api.request("GET", "/api/v1/quizzes/999999999", c.teacher)
    assert status == 404

    status, data, _ = await api.request("GET", f"/api/v1/cohorts/{c.cohort}/quizzes", c.students[0])
    assert status == 200 and [q["id"] for q in data] == [quiz["id"]]
    assert "questions" not in data[0]


async def test_only_staff_create_and_definitions_are_validated(api: Api, admin: User) -> None:
    c = await make_class(api)
    path = f"/api/v1/cohorts/{c.cohort}/quizzes"
    status, data, _ = await api.request(
        "POST", path, c.students[0], json={"title": "Mine", "questions": QUESTIONS}
    )
    assert status == 403
    bad = [
        {"type": "single_choice", "id": "a", "prompt": "?", "options": ["x", "y"], "correct": 5},
        {"type": "short_text", "id": "a", "prompt": "", "accepted": []},
    ]
    status, data, _ = await api.request(
        "POST", path, c.teacher, json={"title": "Bad", "questions": bad}
    )
    assert status == 400 and data["error"]["code"] == "invalid_quiz"
    problems = " | ".join(data["error"]["details"]["problems"])
    assert "out of range" in problems and "duplicate id" in problems and "empty prompt" in problems
    status, data, _ = await api.request(
        "POST", path, c.teacher, json={"title": "x", "questions": [{"type": "essay"}]}
    )
    assert status == 400 and data["error"]["code"] == "invalid_quiz"
    status, data, _ = await api.request(
        "POST", path, c.teacher, json={"title": "x", "questions": QUESTIONS, "max_attempts": 0}
    )
    assert status == 400 and data["error"]["details"]["field"] == "max_attempts"
    status, data, _ = await api.request(
        "POST", path, admin, json={"title": "By admin", "questions": QUESTIONS}
    )
    assert status == 201


async def test_graded_submission_reaches_the_student_live(api: Api, smtp: SmtpCatcher) -> None:
    """Submit through the API; the grading worker's quiz.graded and notification.new events
    reach the student's WebSocket through the outbox relay and a real gateway; the grade is
    in the API, the email is delivered, and the leaderboard moves."""
    c = await make_class(api)
    student = c.students[0]
    quiz = await create_quiz(api, c)
    async with (
        classroom_workers(api.settings, smtp.url),
        listening(
            api.settings,
            str(student.id),
            [f"user:{student.id}", f"cohort:{c.cohort}"],
            cohorts=[str(c.cohort)],
        ) as client,
    ):
        status, sub, _ = await api.request(
            "POST",
            f"/api/v1/quizzes/{quiz['id']}/submissions",
            student,
            json={"answers": ALL_RIGHT},
        )
        assert status == 202 and sub["status"] == "pending" and sub["attempt"] == 1

        event = await client.next_event("quiz.graded")
        assert event["data"]["submission_id"] == sub["id"]
        assert (event["data"]["score"], event["data"]["max_score"]) == (3.0, 3.0)
        assert event["data"]["percentage"] == 100.0 and len(event["data"]["results"]) == 3
        note = await client.next_event("notification.new")
        assert note["data"]["kind"] == "quiz.graded" and note["data"]["read"] is False
        board = await client.next_event("leaderboard.update")
        assert board["data"]["entries"][0]["user_id"] == student.id

        status, data, _ = await api.request("GET", f"/api/v1/submissions/{sub['id']}", student)
        assert status == 200 and data["status"] == "graded" and data["score"] == 3.0
        assert [r["outcome"] for r in data["results"]] == ["correct"] * 3
        await eventually(lambda: received_by(smtp, student.email))

        status, data, _ = await api.request(
            "GET", f"/api/v1/cohorts/{c.cohort}/leaderboard", c.students[1]
        )
        assert status == 200 and data["total"] == 1 and data["me"] is None
        assert data["entries"][0] == {
            "rank": 1,
            "user_id": student.id,
            "display_name": "Student 0",
            "score": 3.0,
        }
        status, data, _ = await api.request(
            "GET", f"/api/v1/cohorts/{c.cohort}/leaderboard", c.stranger
        )
        assert status == 403


async def test_attempts_are_limited_and_a_retried_submit_is_idempotent(api: Api) -> None:
    c = await make_class(api)
    student = c.students[0]
    quiz = await create_quiz(api, c, max_attempts=2)
    path = f"/api/v1/quizzes/{quiz['id']}/submissions"

    status, first, _ = await api.request(
        "POST", path, student, json={"answers": ONE_RIGHT, "attempt": 1}
    )
    assert status == 202
    status, again, _ = await api.request(
        "POST", path, student, json={"answers": ONE_RIGHT, "attempt": 1}
    )
    assert status == 200 and again["id"] == first["id"]
    status, data, _ = await api.request(
        "POST", path, student, json={"answers": ALL_RIGHT, "attempt": 1}
    )
    assert status == 409 and data["error"]["code"] == "attempt_taken"
    status, data, _ = await api.request(
        "POST", path, student, json={"answers": ALL_RIGHT, "attempt": 3}
    )
    assert status == 409 and data["error"]["code"] == "attempt_out_of_order"
    status, second, _ = await api.request("POST", path, student, json={"answers": ALL_RIGHT})
    assert status == 202 and second["attempt"] == 2
    status, data, _ = await api.request("POST", path, student, json={"answers": ALL_RIGHT})
    assert status == 409 and data["error"]["code"] == "attempts_exhausted"

    # Two submits at once with one attempt allowed: exactly one gets through.
    other = c.students[1]
    once = await create_quiz(api, c, max_attempts=1)
    results = await asyncio.gather(
        *(
            api.request(
                "POST", f"/api/v1/quizzes/{once['id']}/submissions", other, json={"answers": {}}
            )
            for _ in range(2)
        )
    )
    assert sorted(r[0] for r in results) == [202, 409]
    count = await api.db.fetchval(
        "SELECT count(*) FROM quiz_submissions WHERE quiz_id = $1", once["id"]
    )
    assert count == 1


async def test_who_may_submit_and_read_submissions(api: Api) -> None:
    c = await make_class(api)
    quiz = await create_quiz(api, c, max_attempts=3)
    path = f"/api/v1/quizzes/{quiz['id']}/submissions"
    status, data, _ = await api.request("POST", path, c.teacher, json={"answers": {}})
    assert status == 403 and data["error"]["code"] == "not_a_student"
    status, data, _ = await api.request("POST", path, c.stranger, json={"answers": {}})
    assert status == 403
    status, data, _ = await api.request("POST", path, c.students[0], json={"answers": {"zz": 1}})
    assert status == 400 and data["error"]["code"] == "unknown_questions"
    status, data, _ = await api.request("POST", path, c.students[0], json={"answer": {}})
    assert status == 400 and data["error"]["details"]["field"] == "answers"

    status, mine, _ = await api.request("POST", path, c.students[0], json={"answers": ONE_RIGHT})
    assert status == 202
    status, _, _ = await api.request("POST", path, c.students[1], json={"answers": ALL_RIGHT})
    assert status == 202
    status, _, _ = await api.request("GET", f"/api/v1/submissions/{mine['id']}", c.students[1])
    assert status == 404
    status, data, _ = await api.request("GET", f"/api/v1/submissions/{mine['id']}", c.teacher)
    assert status == 200 and data["answers"] == ONE_RIGHT
    status, data, _ = await api.request("GET", path, c.students[0])
    assert [s["user_id"] for s in data] == [c.students[0].id]
    status, data, _ = await api.request("GET", path, c.teacher)
    assert sorted(s["user_id"] for s in data) == sorted(s.id for s in c.students)
    status, data, _ = await api.request("GET", f"{path}?user_id={c.students[1].id}", c.teacher)
    assert [s["user_id"] for s in data] == [c.students[1].id]


async def test_statistics_for_staff(api: Api, smtp: SmtpCatcher) -> None:
    c = await make_class(api)
    quiz = await create_quiz(api, c)
    path = f"/api/v1/quizzes/{quiz['id']}"
    async with classroom_workers(api.settings, smtp.url):
        for student, answers in zip(c.students, (ALL_RIGHT, ONE_RIGHT), strict=True):
            status, _, _ = await api.request(
                "POST", f"{path}/submissions", student, json={"answers": answers}
            )
            assert status == 202

        async def graded() -> Any:
            _, data, _ = await api.request("GET", f"{path}/stats", c.teacher)
            return data if data["graded"] == 2 else None

        stats = await eventually(graded)
    assert stats["submissions"] == 2 and stats["students"] == 2 and stats["pending"] == 0
    assert stats["average_percentage"] == 66.67 and stats["best_percentage"] == 100.0
    assert stats["distribution"][3] == 1 and stats["distribution"][9] == 1
    by_id = {q["question_id"]: q for q in stats["questions"]}
    assert by_id["q1"]["correct"] == 2 and by_id["q1"]["correct_rate"] == 1.0
    assert by_id["q3"]["correct"] == 1 and by_id["q3"]["average_points"] == 0.5
    status, _, _ = await api.request("GET", f"{path}/stats", c.students[0])
    assert status == 403

    status, data, _ = await api.request(
        "PATCH", path, c.teacher, json={"title": "Renamed", "max_attempts": 3}
    )
    assert status == 200 and data["title"] == "Renamed" and data["max_attempts"] == 3
    status, data, _ = await api.request("PATCH", path, c.teacher, json={"questions": QUESTIONS[:1]})
    assert status == 409 and data["error"]["code"] == "quiz_has_submissions"
    status, _, _ = await api.request("PATCH", path, c.students[0], json={"title": "Hacked"})
    assert status == 403
