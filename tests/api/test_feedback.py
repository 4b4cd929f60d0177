"""Instructor feedback through the real API and workers: the hand-grading queue, comments,
hand grades and overrides reaching the student live, in the bell and by email (per their
preference), and every refusal (rights, malformed, oversized, out of order) losing nothing."""

from __future__ import annotations

import json
from typing import Any

import msgspec

from config.servers import SmtpCatcher
from tests.api.conftest import Api, User
from tests.api.test_quizzes import Class, create_quiz, make_class
from tests.workers.helpers import (
    classroom_workers,
    eventually,
    listening,
    received_by,
    steady,
)
from workers.grading import grade, questions_from_json
from workers.review import waiting_questions

#: q3 ("Capital of France?", accepted "Paris") answered with a typo: it waits for a human.
TYPO = {"q1": 1, "q2": 3.14, "q3": "Pariss"}


async def graded_submission(api: Api, quiz: dict[str, Any], student: User, answers: Any) -> int:
    """A submission stored as the grading worker would store it (no workers needed)."""
    raw = await api.db.fetchval("SELECT questions::text FROM quizzes WHERE id = $1", quiz["id"])
    questions = questions_from_json(raw)
    result = grade(questions, answers)
    return int(
        await api.db.fetchval(
            "INSERT INTO quiz_submissions (quiz_id, user_id, attempt, answers, status, score,"
            " max_score, feedback, graded_at, review) VALUES ($1, $2, 1 + (SELECT count(*) FROM"
            " quiz_submissions WHERE quiz_id = $1 AND user_id = $2), $3::jsonb, 'graded', $4,"
            " $5, $6::jsonb, now(), $7) RETURNING id",
            quiz["id"],
            student.id,
            json.dumps(answers),
            result.score,
            result.max_score,
            msgspec.json.encode(result).decode(),
            "waiting" if waiting_questions(questions, result) else "none",
        )
    )


def feedback_path(submission: int) -> str:
    return f"/api/v1/submissions/{submission}/feedback"


async def feedback_rows(api: Api, submission: int) -> int:
    return int(
        await api.db.fetchval(
            "SELECT count(*) FROM submission_feedback WHERE submission_id = $1", submission
        )
    )


async def test_hand_grading_reaches_the_student_live_in_the_bell_and_by_email(
    api: Api, smtp: SmtpCatcher
) -> None:
    """Submit a typo through the API: the grader queues it for a human; the teacher grades
    it by hand with a comment; the student's connection gets feedback.posted and the
    notification, the email arrives, and the grade, queue and leaderboard follow."""
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
            "POST", f"/api/v1/quizzes/{quiz['id']}/submissions", student, json={"answers": TYPO}
        )
        assert status == 202
        graded = await client.next_event("quiz.graded")
        assert graded["data"]["score"] == 2.0
        waiting = await api.outbox(f"staff:{c.cohort}", "grading.waiting")
        assert [w["data"] for w in waiting] == [
            {
                "submission_id": sub["id"],
                "quiz_id": quiz["id"],
                "user_id": student.id,
                "question_ids": ["q3"],
            }
        ]

        status, queue, _ = await api.request(
            "GET", f"/api/v1/cohorts/{c.cohort}/grading-queue", c.teacher
        )
        assert status == 200 and [q["submission_id"] for q in queue] == [sub["id"]]
        item = queue[0]
        assert item["student_name"] == "Student 0" and item["score"] == 2.0
        assert item["waiting"] == [
            {
                "question_id": "q3",
                "prompt": "Capital of France?",
                "answer": "Pariss",
                "accepted": ["Paris"],
                "max_points": 1.0,
                "points_awarded": 0.0,
            }
        ]
        status, data, _ = await api.request("GET", f"/api/v1/submissions/{sub['id']}", student)
        assert data["review"] == "waiting"

        status, fb, _ = await api.request(
            "POST",
            feedback_path(sub["id"]),
            c.teacher,
            json={"comment": "A typo only: full marks.", "question_points": {"q3": 1}},
        )
        assert status == 201, fb
        assert (fb["score"], fb["max_score"], fb["percentage"]) == (3.0, 3.0, 100.0)
        assert fb["review"] == "done" and fb["author_id"] == c.teacher.id

        event = await client.next_event("feedback.posted")
        assert event["data"]["feedback"]["id"] == fb["id"]
        assert event["data"]["feedback"]["comment"] == "A typo only: full marks."
        assert [r["outcome"] for r in event["data"]["results"]] == ["correct"] * 3
        note = await client.next_event("notification.new")
        while note["data"]["kind"] != "feedback.posted":
            note = await client.next_event("notification.new")
        assert note["data"]["title"] == "Feedback on Warm-up"
        assert "A typo only" in note["data"]["body"]
        mails = await eventually(
            lambda: [m for m in received_by(smtp, student.email) if "Feedback" in m["Subject"]]
        )
        assert mails[0]["Subject"] == "Feedback on Warm-up"

        status, data, _ = await api.request("GET", f"/api/v1/submissions/{sub['id']}", student)
        assert data["score"] == 3.0 and data["review"] == "done"
        assert data["results"][2]["feedback"] == "Graded by your instructor."
        status, queue, _ = await api.request(
            "GET", f"/api/v1/cohorts/{c.cohort}/grading-queue", c.teacher
        )
        assert queue == []
        resolved = await api.outbox(f"staff:{c.cohort}", "grading.resolved")
        assert [r["data"]["submission_id"] for r in resolved] == [sub["id"]]

        async def board() -> Any:
            _, data, _ = await api.request(
                "GET", f"/api/v1/cohorts/{c.cohort}/leaderboard", student
            )
            return data["entries"] and data["entries"][0]["score"] == 3.0

        await eventually(board)
        status, mine, _ = await api.request("GET", f"/api/v1/cohorts/{c.cohort}/feedback", student)
        assert status == 200 and [f["id"] for f in mine] == [fb["id"]]


async def test_an_override_notifies_without_email_when_the_student_turned_it_off(
    api: Api, smtp: SmtpCatcher
) -> None:
    c = await make_class(api)
    student = c.students[1]
    quiz = await create_quiz(api, c)
    sub = await graded_submission(api, quiz, student, {"q1": 0})
    status, _, _ = await api.request(
        "PUT",
        "/api/v1/me/notification-prefs",
        student,
        json={"prefs": [{"kind": "feedback.posted", "email": False}]},
    )
    assert status == 200
    async with classroom_workers(api.settings, smtp.url):
        status, fb, _ = await api.request(
            "POST", feedback_path(sub), c.teacher, json={"score": 2.5, "comment": "Generous."}
        )
        assert status == 201 and fb["score"] == 2.5 and fb["score_override"] == 2.5

        async def notified() -> Any:
            return await api.db.fetchval(
                "SELECT notified_at FROM submission_feedback WHERE id = $1", fb["id"]
            )

        await eventually(notified)
        notes = await api.db.fetch(
            "SELECT id FROM notifications WHERE user_id = $1 AND kind = 'feedback.posted'",
            student.id,
        )
        assert len(notes) == 1

        async def emails() -> int:
            return int(
                await api.db.fetchval(
                    "SELECT count(*) FROM email_deliveries WHERE notification_id = $1",
                    notes[0]["id"],
                )
            )

        await steady(emails, 0, for_s=1.0)
        assert not received_by(smtp, student.email)
    _, data, _ = await api.request("GET", f"/api/v1/submissions/{sub}", student)
    assert data["score"] == 2.5 and data["score_overridden"] is True
    # Question points without a score clear the override: the total follows the questions.
    status, fb, _ = await api.request(
        "POST", feedback_path(sub), c.teacher, json={"question_points": {"q1": 1}}
    )
    assert status == 201 and fb["score"] == 1.0 and fb["score_override"] is None
    _, data, _ = await api.request("GET", f"/api/v1/submissions/{sub}", student)
    assert data["score"] == 1.0 and data["score_overridden"] is False


async def test_only_staff_of_the_cohort_give_feedback_and_bad_input_loses_nothing(
    api: Api, admin: User
) -> None:
    c: Class = await make_class(api)
    student, other = c.students
    quiz = await create_quiz(api, c)
    sub = await graded_submission(api, quiz, student, TYPO)
    path = feedback_path(sub)
    ok = {"comment": "Nice."}

    status, data, _ = await api.request("POST", path, json=ok)
    assert status == 401
    status, data, _ = await api.request("POST", path, student, json=ok)
    assert status == 403 and data["error"]["code"] == "forbidden"
    for outsider in (other, c.stranger):
        status, data, _ = await api.request("POST", path, outsider, json=ok)
        assert status == 404, data
    teacher_elsewhere = await api.user("instructor")
    await api.enroll(await api.cohort(), teacher_elsewhere, "staff")
    status, _, _ = await api.request("POST", path, teacher_elsewhere, json=ok)
    assert status == 404
    for bad_path in ("/api/v1/submissions/999999999999/feedback", "/api/v1/submissions/x/feedback"):
        status, _, _ = await api.request("POST", bad_path, c.teacher, json=ok)
        assert status == 404
    # Rights come before the body: a malformed or oversized body from someone who may not
    # give feedback still gets 403/404, never a hint about the body.
    for body in (b"{not json", b"x" * 70_000):
        status, _, _ = await api.request("POST", path, student, data=body)
        assert status == 403
        status, _, _ = await api.request("POST", path, c.stranger, data=body)
        assert status == 404

    refusals: list[tuple[Any, int, str]] = [
        (b"{not json", 400, "invalid_json"),
        (b"", 400, "bad_request"),
        (b"[]", 400, "invalid_field"),
        ({"comment": "x", "surprise": 1}, 400, "invalid_field"),
        ({}, 400, "empty_feedback"),
        ({"comment": "   "}, 400, "empty_feedback"),
        ({"comment": "nul\x00byte"}, 400, "invalid_field"),
        ({"comment": "x" * 5001}, 400, "invalid_field"),
        ({"comment": 5}, 400, "invalid_field"),
        ({"question_points": {"q9": 1}}, 400, "invalid_points"),
        ({"question_points": {"q3": 1.5}}, 400, "invalid_points"),
        ({"question_points": {"q3": -1}}, 400, "invalid_field"),
        ({"question_points": {"q3": "1"}}, 400, "invalid_field"),
        ({"question_points": {f"k{i}": 0 for i in range(201)}}, 400, "invalid_field"),
        ({"score": 3.5}, 400, "invalid_points"),
        ({"score": -0.5}, 400, "invalid_field"),
        ({"score": True}, 400, "invalid_field"),
        ({"comment": "x", "client_key": "has space"}, 400, "invalid_field"),
        ({"comment": "x" * 70_000}, 413, "payload_too_large"),
    ]
    for body, want_status, want_code in refusals:
        kw: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
        status, data, _ = await api.request("POST", path, c.teacher, **kw)
        assert (status, data["error"]["code"]) == (want_status, want_code), (body, data)
    assert await feedback_rows(api, sub) == 0
    row = await api.db.fetchrow(
        "SELECT score::float8 AS score, review, manual_points::text AS mp FROM quiz_submissions"
        " WHERE id = $1",
        sub,
    )
    assert (row["score"], row["review"], row["mp"]) == (2.0, "waiting", "{}")

    # Out of order: feedback before the automatic grade exists.
    pending = int(
        await api.db.fetchval(
            "INSERT INTO quiz_submissions (quiz_id, user_id, attempt, answers)"
            " VALUES ($1, $2, 1, '{}') RETURNING id",
            quiz["id"],
            other.id,
        )
    )
    status, data, _ = await api.request("POST", feedback_path(pending), c.teacher, json=ok)
    assert status == 409 and data["error"]["code"] == "not_graded"

    # A retry with the same client_key returns the stored feedback instead of adding one.
    keyed = {"comment": "Once.", "client_key": "retry-1"}
    status, first, _ = await api.request("POST", path, c.teacher, json=keyed)
    assert status == 201
    status, again, _ = await api.request("POST", path, c.teacher, json=keyed)
    assert status == 200 and again["id"] == first["id"]
    assert await feedback_rows(api, sub) == 1
    # A comment alone keeps the answer in the queue; the admin's hand grade takes it out.
    assert first["review"] == "waiting"
    status, fb, _ = await api.request("POST", path, admin, json={"question_points": {"q3": 0}})
    assert status == 201 and fb["review"] == "done" and fb["score"] == 2.0

    # Reading: the student and staff see the history; nobody else does.
    for reader, want in ((student, 200), (c.teacher, 200), (other, 404), (c.stranger, 404)):
        status, data, _ = await api.request("GET", path, reader)
        assert status == want, data
        if want == 200:
            assert [f["id"] for f in data] == [first["id"], fb["id"]]
    status, data, _ = await api.request("GET", f"/api/v1/cohorts/{c.cohort}/feedback", other)
    assert status == 200 and data == []
    status, data, _ = await api.request("GET", f"/api/v1/cohorts/{c.cohort}/feedback", c.teacher)
    assert status == 200 and len(data) == 2
    for outsider in (c.stranger,):
        status, _, _ = await api.request("GET", f"/api/v1/cohorts/{c.cohort}/feedback", outsider)
        assert status == 403
    for reader in (student, c.stranger):
        status, _, _ = await api.request("GET", f"/api/v1/cohorts/{c.cohort}/grading-queue", reader)
        assert status == 403
    status, _, _ = await api.request("GET", f"/api/v1/cohorts/{c.cohort}/grading-queue")
    assert status == 401
