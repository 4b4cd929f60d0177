"""Live quiz mode in real browsers: the instructor starts a quiz of the cohort, students answer
against the server's countdown, the deadline publishes the results with nobody acting, the
leaderboard ranks the faster right answer first, and a late joiner lands on the current
question with its time left."""

from __future__ import annotations

import json
from typing import Any

from tests.browser.conftest import PHONE, Pages, expect
from tests.browser.stack import Stack
from tests.browser.test_live_room import Room, room  # noqa: F401  (fixture)

QUESTIONS: list[dict[str, Any]] = [
    {
        "type": "single_choice",
        "id": "q1",
        "prompt": "Which sort is stable?",
        "options": ["Quicksort", "Merge sort", "Heapsort"],
        "correct": 1,
    },
    {
        "type": "multiple_choice",
        "id": "q2",
        "prompt": "Which run in O(n log n) worst case?",
        "options": ["Merge sort", "Quicksort", "Heapsort"],
        "correct": [0, 2],
    },
]


def make_quiz(stack: Stack, cohort: int) -> int:
    async def insert() -> int:
        return int(
            await stack.db.fetchval(
                "INSERT INTO quizzes (cohort_id, title, questions) VALUES ($1, 'Sorting check',"
                " $2::jsonb) RETURNING id",
                cohort,
                json.dumps(QUESTIONS),
            )
        )

    return stack.call(insert())


def test_live_quiz_for_both_roles(
    pages: Pages,
    stack: Stack,
    room: Room,  # noqa: F811
) -> None:
    make_quiz(stack, room.cohort)
    teacher = pages.open(room.instructor, room.path)
    ana = pages.open(room.students[0], room.path, viewport=PHONE)
    ben = pages.open(room.students[1], room.path)
    for page in (teacher, ana, ben):
        pages.ready(page)

    expect(teacher.locator("#quiz-pick option")).to_have_text(["Sorting check"])
    expect(ana.locator("#quiz-start-form")).to_have_count(0)  # students get no controls
    teacher.fill("#quiz-limit", "6, 90")  # one limit per question
    teacher.click("#quiz-start-form button[type=submit]")
    for page in (ana, ben):
        expect(page.locator(".quiz-prompt")).to_have_text("Which sort is stable?")
        expect(page.locator(".quiz-timer")).to_contain_text("s left")
    expect(teacher.locator(".quiz-choice")).to_have_count(0)  # staff do not answer

    ana.click(".quiz-choice[data-option='1']")
    expect(ana.locator(".quiz-mine")).to_contain_text("Merge sort")
    expect(teacher.locator("#quiz-answered")).to_have_text("1 answered")
    ben.click(".quiz-choice[data-option='0']")
    expect(teacher.locator("#quiz-answered")).to_have_text("2 answered")

    # Nobody acts: the server's deadline publishes the results on every page.
    for page in (teacher, ana, ben):
        expect(page.locator("#quiz-distribution .count")).to_have_text(
            ["1", "1", "0"], timeout=20_000
        )
    expect(ana.locator(".quiz-verdict")).to_have_attribute("data-right", "true")
    expect(ben.locator(".quiz-verdict")).to_have_attribute("data-right", "false")
    expect(ben.locator(".quiz-leaderboard li .name")).to_have_text(["Ana", "Ben"])

    # The next question; Ben joins late (reloads) and gets it with its time left.
    teacher.click("#quiz-next")
    expect(ana.locator(".quiz-prompt")).to_have_text("Which run in O(n log n) worst case?")
    ben.reload()
    pages.ready(ben)
    expect(ben.locator(".quiz-prompt")).to_have_text("Which run in O(n log n) worst case?")
    expect(ben.locator(".quiz-timer")).to_contain_text("s left")
    ben.locator("#quiz-multi input[value='0']").check()
    ben.locator("#quiz-multi input[value='2']").check()
    ben.click("#quiz-multi button[type=submit]")
    expect(ben.locator(".quiz-mine")).to_contain_text("Merge sort, Heapsort")

    # The instructor ends it: results of the open question and the final standings.
    teacher.click("#quiz-end")
    for page in (teacher, ana, ben):
        expect(page.locator(".quiz-status")).to_have_attribute("data-state", "ended")
        expect(page.locator(".quiz-leaderboard")).to_be_visible()
    expect(ben.locator("#quiz-distribution .count")).to_have_text(["1", "0", "1"])
    expect(ben.locator(".quiz-verdict")).to_have_attribute("data-right", "true")
    expect(ana.locator("h3", has_text="Final standings")).to_be_visible()
    expect(teacher.locator("#quiz-start-form")).to_be_visible()  # ready for another quiz
