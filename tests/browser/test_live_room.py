"""The live room in real browsers: Q&A across three people, a poll from open to reveal, and
chat text that must never become markup."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.browser.conftest import PHONE, Pages, expect
from tests.browser.stack import Person, Stack


@dataclass
class Room:
    cohort: int
    session: int
    instructor: Person
    students: list[Person]

    @property
    def path(self) -> str:
        return f"/live?session={self.session}"


@pytest.fixture
def room(stack: Stack) -> Room:
    async def make() -> Room:
        cohort = await stack.cohort()
        instructor = await stack.person("instructor", "Ivy Instructor")
        await stack.enroll(cohort, instructor, "staff")
        students = [await stack.person("student", name) for name in ("Ana", "Ben")]
        for s in students:
            await stack.enroll(cohort, s)
        session = await stack.live_session(cohort, "Sorting algorithms, live")
        return Room(cohort, session, instructor, students)

    return stack.call(make())


def question(page: Any, text: str) -> Any:
    return page.locator("#qa-list li.question", has_text=text)


def test_question_asked_upvoted_and_answered_reaches_everyone(
    pages: Pages, room: Room, shot: Callable[[Any, str], None]
) -> None:
    """Ana asks, Ben and the instructor see it; an upvote reorders the board for everyone;
    the instructor's answer shows to both students."""
    ana = pages.open(room.students[0], room.path, viewport=PHONE)
    ben = pages.open(room.students[1], room.path)
    teacher = pages.open(room.instructor, room.path)
    for page in (ana, ben, teacher):
        pages.ready(page, "ws")

    # Who is here: the instructor sees the names, everyone the count.
    expect(teacher.locator("#online")).to_contain_text("Ana")
    expect(teacher.locator("#online")).to_contain_text("Ben")
    expect(ana.locator("#here-count")).to_have_text("3")

    ana.fill("#qa-input", "Why is quicksort O(n log n) on average?")
    ana.click("#qa-form button[type=submit]")
    for page in (ana, ben, teacher):
        expect(question(page, "quicksort")).to_have_count(1)

    ben.fill("#qa-input", "Is merge sort stable?")
    ben.click("#qa-form button[type=submit]")
    for page in (ana, ben, teacher):
        expect(question(page, "merge sort")).to_have_count(1)
        # Equal votes: the newer question ranks first (design notes: votes, then newest).
        expect(page.locator("#qa-list li.question .body").first).to_contain_text("merge sort")

    ben.locator("#qa-list li.question", has_text="quicksort").locator("button.upvote").click()
    for page in (ana, ben, teacher):
        expect(page.locator("#qa-list li.question .body").first).to_contain_text("quicksort")
        expect(question(page, "quicksort").locator(".vote-count")).to_have_text("1")

    item = question(teacher, "quicksort")
    item.locator(".answer-input").fill("Random pivots make bad splits unlikely.")
    item.locator("button.answer-send").click()
    for page in (ana, ben):
        expect(question(page, "quicksort").locator(".answer-text")).to_have_text(
            "Random pivots make bad splits unlikely."
        )
    shot(ana, "live-student")
    shot(teacher, "live-instructor")


def test_poll_opened_voted_and_revealed(pages: Pages, room: Room) -> None:
    """The instructor opens a poll, both students vote, the revealed tally counts them."""
    teacher = pages.open(room.instructor, room.path)
    ana = pages.open(room.students[0], room.path, viewport=PHONE)
    ben = pages.open(room.students[1], room.path)
    for page in (teacher, ana, ben):
        pages.ready(page)

    teacher.fill("#poll-question", "Best pivot choice?")
    teacher.fill("#poll-options", "First element\nMedian of three\nRandom")
    teacher.click("#poll-form button[type=submit]")
    for page in (ana, ben):
        expect(page.locator(".poll-question")).to_have_text("Best pivot choice?")

    ana.click("#poll-body button.vote[data-option='1']")
    ben.click("#poll-body button.vote[data-option='2']")
    expect(ana.locator("#poll-body button.vote.mine")).to_have_text("Median of three")
    # The instructor sees the live tally (staff topic) before revealing it.
    expect(teacher.locator(".poll-status")).to_contain_text("2 votes")

    teacher.fill("#broadcast-text", "Results in 3… 2… 1…")
    teacher.click("#broadcast-form button[type=submit]")
    for page in (ana, ben):
        expect(page.locator("#banner .body")).to_have_text("Results in 3… 2… 1…")
    # Staff take the banner down; every page hides it.
    teacher.click("#broadcast-clear")
    for page in (ana, ben, teacher):
        expect(page.locator("#banner")).to_be_hidden()
    expect(teacher.locator("#broadcast-clear")).to_be_disabled()

    teacher.click("#poll-reveal")
    for page in (ana, ben, teacher):
        expect(page.locator(".poll-status")).to_have_attribute("data-state", "revealed")
        counts = page.locator("#poll-tally .count")
        expect(counts).to_have_text(["0 · 0%", "1 · 50%", "1 · 50%"])


def test_chat_message_with_markup_shows_as_text(pages: Pages, room: Room) -> None:
    """A chat message holding HTML and script is rendered as its literal text, runs nothing."""
    ana = pages.open(room.students[0], room.path)
    ben = pages.open(room.students[1], room.path)
    for page in (ana, ben):
        pages.ready(page)
    payload = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"><b>hi</b>'
    ana.fill("#chat-input", payload)
    ana.click("#chat-form button[type=submit]")
    for page in (ana, ben):
        body = page.locator("#chat-list li .body").last
        expect(body).to_have_text(payload)
        assert page.locator("#chat-list script, #chat-list img, #chat-list b").count() == 0
        assert page.evaluate("window.__pwned") is None

    ben.click("#reaction-buttons button.react >> nth=0")
    for page in (ana, ben):
        expect(page.locator("#reaction-counts")).to_contain_text("👍 1")
