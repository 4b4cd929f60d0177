"""Instructor feedback in real browsers: a short-text answer waiting for a human shows up in
the instructor's grading queue live, is graded by hand with a comment, and the student sees
the feedback, the new score and the notification without a reload; a score override from
the instructor's review panel reaches the student the same way."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.browser.conftest import Pages, expect
from tests.browser.stack import Person, Stack
from workers.grading import ShortText, SingleChoice, questions_to_json


@dataclass
class Graded:
    cohort: int
    instructor: Person
    student: Person
    quiz: int


@pytest.fixture
def graded(stack: Stack) -> Graded:
    async def make() -> Graded:
        cohort = await stack.cohort()
        instructor = await stack.person("instructor", "Iris Instructor")
        await stack.enroll(cohort, instructor, "staff")
        student = await stack.person("student", "Sam Student")
        await stack.enroll(cohort, student)
        questions = (
            SingleChoice(id="q1", prompt="Which one pushes?", options=("FTP", "SSE"), correct=1),
            ShortText(id="q2", prompt="Redis type we fan out with?", accepted=("stream",)),
        )
        quiz = await stack.db.fetchval(
            "INSERT INTO quizzes (cohort_id, title, questions, max_attempts)"
            " VALUES ($1, 'Real-time basics', $2::jsonb, 2) RETURNING id",
            cohort,
            questions_to_json(questions).decode(),
        )
        return Graded(cohort, instructor, student, int(quiz))

    return stack.call(make())


def test_a_typo_is_graded_by_hand_and_the_student_sees_the_feedback_live(
    pages: Pages, graded: Graded, shot: Callable[[Any, str], None]
) -> None:
    student = pages.open(graded.student, "/student")
    teacher = pages.open(graded.instructor, "/instructor")
    for page in (student, teacher):
        pages.ready(page)
    expect(teacher.locator("#grading-list")).to_contain_text("Nothing to grade.")
    expect(student.locator("#feedback-list")).to_contain_text("No feedback yet.")

    student.locator(f"#quiz-list li[data-id='{graded.quiz}'] button.take").click()
    student.locator("fieldset[data-question='q1'] input[value='1']").check()
    student.locator("fieldset[data-question='q2'] input").fill("Streams!")
    student.click("#quiz-form button[type=submit]")
    expect(student.locator("#quiz-result .quiz-score")).to_have_text("1 / 2")

    # The grader queued the answer for a human: it appears on the instructor's page live.
    item = teacher.locator("#grading-list li form.grade-form")
    expect(item).to_have_count(1)
    expect(teacher.locator("#grading-count")).to_have_attribute("data-n", "1")
    expect(item.locator("fieldset[data-question='q2'] .answer")).to_contain_text("Streams!")
    expect(item).to_contain_text("Sam Student")
    item.locator("input.points").fill("1")
    item.locator("textarea.comment").fill("Plural and excitement accepted.")
    shot(teacher, "instructor-grading")
    item.locator("button[type=submit]").click()
    expect(teacher.locator("#grading-list")).to_contain_text("Nothing to grade.")
    expect(teacher.locator("#grading-count")).to_have_attribute("data-n", "0")

    card = student.locator("#feedback-list li")
    expect(card).to_have_count(1)
    expect(card.locator(".feedback-comment")).to_have_text("Plural and excitement accepted.")
    expect(card.locator(".feedback-score")).to_have_text("2 / 2 (100%)")
    expect(card).to_contain_text("Iris Instructor")
    expect(student.locator(f"#quiz-list li[data-id='{graded.quiz}'] .score")).to_contain_text(
        "100%"
    )
    # quiz.graded and feedback.posted: two notifications in the bell.
    expect(student.locator("#unread")).to_have_attribute("data-n", "2")
    student.click("#bell")
    expect(student.locator("#notification-list li").first).to_contain_text(
        "Feedback on Real-time basics"
    )
    shot(student, "student-feedback")

    # A reload shows the same: the feedback and the grade are stored, not only pushed.
    student.reload()
    pages.ready(student)
    expect(student.locator("#feedback-list li .feedback-comment")).to_have_text(
        "Plural and excitement accepted."
    )


def test_an_instructor_overrides_a_score_from_the_review_panel(
    pages: Pages, stack: Stack, graded: Graded
) -> None:
    token = stack.call(stack.login(graded.student))["access_token"]
    sub = stack.call(
        stack.api(
            "POST",
            f"/api/v1/quizzes/{graded.quiz}/submissions",
            token,
            {"answers": {"q1": 0, "q2": "stream"}},
        )
    )
    student = pages.open(graded.student, "/student")
    teacher = pages.open(graded.instructor, "/instructor")
    for page in (student, teacher):
        pages.ready(page)
    expect(student.locator(f"#quiz-list li[data-id='{graded.quiz}'] .score")).to_contain_text(
        "1 / 2"
    )

    teacher.locator(f"#quiz-rows tr[data-id='{graded.quiz}'] button.review").click()
    form = teacher.locator(f"#review-panel form[data-submission='{sub['id']}']")
    expect(form).to_contain_text("Sam Student")
    form.locator("textarea.comment").fill("Your reasoning on q1 was right; half a point back.")
    form.locator("input.score").fill("1.5")
    form.locator("button[type=submit]").click()
    expect(form.locator(".sub-score")).to_have_text("1.5 / 2 (set by hand)")

    card = student.locator("#feedback-list li")
    expect(card.locator(".feedback-score")).to_have_text("1.5 / 2 (75%)")
    expect(card.locator(".feedback-comment")).to_contain_text("half a point back")
    expect(student.locator(f"#quiz-list li[data-id='{graded.quiz}'] .score")).to_contain_text(
        "1.5 / 2"
    )
