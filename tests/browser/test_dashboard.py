"""The student dashboard and the instructor view in real browsers: signing in, progress that
moves in every open tab, a quiz graded in the background, notifications, the leaderboard and
announcements, all without a reload."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.browser.conftest import PHONE, Pages, expect
from tests.browser.stack import PASSWORD, Person, Stack
from workers.grading import ShortText, SingleChoice, questions_to_json


@dataclass
class Course:
    cohort: int
    instructor: Person
    student: Person
    lessons: list[int]
    quiz: int
    session: int


@pytest.fixture
def course(stack: Stack) -> Course:
    async def make() -> Course:
        cohort = await stack.cohort()
        instructor = await stack.person("instructor", "Iris Instructor")
        await stack.enroll(cohort, instructor, "staff")
        student = await stack.person("student", "Sam Student")
        await stack.enroll(cohort, student)
        lessons = [
            await stack.lesson(cohort, i, title)
            for i, title in enumerate(("Welcome", "Streams", "Resume", "Scale"))
        ]
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
        session = await stack.live_session(cohort, "Week 1, live", state="scheduled")
        return Course(cohort, instructor, student, lessons, int(quiz), session)

    return stack.call(make())


def test_login_page_signs_in_to_the_dashboard(
    pages: Pages, course: Course, shot: Callable[[Any, str], None]
) -> None:
    page = pages.open(None, "/", viewport=PHONE)
    page.fill("#email", course.student.email)
    page.fill("#password", "not the password")
    page.click("#login-button")
    expect(page.locator("#login-error")).to_have_text("Wrong email or password.")
    shot(page, "login")
    page.fill("#password", PASSWORD)
    page.click("#login-button")
    page.wait_for_url("**/student")
    pages.ready(page)
    expect(page.locator("#who")).to_have_text("Sam Student")
    expect(page.locator("#lessons li")).to_have_count(4)


def test_lesson_completion_moves_the_bar_in_every_tab(
    pages: Pages, stack: Stack, course: Course, shot: Callable[[Any, str], None]
) -> None:
    """Completing a lesson in one tab moves the bar in the other tab and the instructor's
    cohort progress, with no reload."""
    tab1 = pages.open(course.student, "/student", viewport=PHONE)
    tab2 = pages.open(course.student, "/student")
    teacher = pages.open(course.instructor, "/instructor")
    for page in (tab1, tab2, teacher):
        pages.ready(page)
    expect(tab2.locator("#progress-bar")).to_have_attribute("data-percentage", "0")

    tab1.locator(f"#lessons li[data-id='{course.lessons[0]}'] button.complete").click()
    for page in (tab1, tab2):
        expect(page.locator("#progress-bar")).to_have_attribute("data-percentage", "25")
        expect(page.locator("#progress-text")).to_contain_text("1 of 4")
        expect(page.locator(f"#lessons li[data-id='{course.lessons[0]}']")).to_have_class(
            "lesson done"
        )
    lesson = teacher.locator(f"#lesson-progress li[data-id='{course.lessons[0]}']")
    expect(lesson.locator(".lesson-count")).to_have_text("1 / 1")
    expect(teacher.locator(f"#student-rows tr[data-user='{course.student.id}']")).to_contain_text(
        "25%"
    )

    # Progress made elsewhere (another device, the API) shows too.
    token = course.student.session["access_token"]
    stack.call(stack.api("PUT", f"/api/v1/lessons/{course.lessons[1]}/complete", token))
    for page in (tab1, tab2):
        expect(page.locator("#progress-bar")).to_have_attribute("data-percentage", "50")
    shot(tab1, "student")


def test_quiz_submission_shows_its_grade_and_notification(
    pages: Pages, course: Course, shot: Callable[[Any, str], None]
) -> None:
    page = pages.open(course.student, "/student")
    pages.ready(page)
    page.locator(f"#quiz-list li[data-id='{course.quiz}'] button.take").click()
    page.locator("fieldset[data-question='q1'] input[value='1']").check()
    page.locator("fieldset[data-question='q2'] input").fill("Stream")
    page.click("#quiz-form button[type=submit]")
    result = page.locator("#quiz-result")
    expect(result).to_have_attribute("data-status", "graded")
    expect(result.locator(".quiz-score")).to_have_text("2 / 2")
    expect(page.locator(f"#quiz-list li[data-id='{course.quiz}'] .score")).to_contain_text("100%")

    # The grade also arrives as a notification; marking it read clears the bell.
    expect(page.locator("#unread")).to_have_attribute("data-n", "1")
    page.click("#bell")
    page.locator("#notification-list li.unread button.mark-read").click()
    expect(page.locator("#unread")).to_have_attribute("data-n", "0")
    # And the leaderboard, published by the grading worker, has the student on it.
    expect(page.locator(f"#leaderboard-rows tr[data-user='{course.student.id}']")).to_contain_text(
        "(you)"
    )
    shot(page, "student-quiz")


def test_instructor_controls_reach_the_student(
    pages: Pages, course: Course, shot: Callable[[Any, str], None]
) -> None:
    """An announcement posted and a session started from the instructor view show on the
    student's dashboard at once."""
    student = pages.open(course.student, "/student", viewport=PHONE)
    teacher = pages.open(course.instructor, "/instructor")
    for page in (student, teacher):
        pages.ready(page)
    teacher.fill("#announce-title", "Office hours moved to Thursday")
    teacher.fill("#announce-body", "Same room, <b>4pm</b>.")
    teacher.click("#announce-form button[type=submit]")
    item = student.locator("#announcement-list li", has_text="Office hours moved")
    expect(item).to_have_count(1)
    expect(item.locator("p.body")).to_have_text("Same room, <b>4pm</b>.")
    expect(teacher.locator("#announcement-list li", has_text="Office hours moved")).to_have_count(1)

    session = f"#session-list li[data-id='{course.session}']"
    expect(student.locator(session)).to_have_attribute("data-state", "scheduled")
    teacher.locator(f"{session} button.start").click()
    expect(student.locator(session)).to_have_attribute("data-state", "live")
    expect(student.locator(f"{session} a")).to_have_text("Join now")
    shot(teacher, "instructor")
    # A started session's attendance downloads as CSV (every member, absent ones too).
    with teacher.expect_download() as info:
        teacher.locator(f"{session} button.attendance-csv").click()
    download = info.value
    assert download.suggested_filename == f"attendance-session-{course.session}.csv"
    with open(download.path(), encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert lines[0] == "student,email,attended,minutes,joined_at,left_at"
    assert lines[1].startswith(f"Sam Student,{course.student.email},")
