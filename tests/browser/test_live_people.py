"""People in the live room, in real browsers: students see each other's display names on
questions and chat (never ``#id``), an anonymous question names nobody (its asker sees "You
(anonymous)"), and typing a question that was already asked offers to upvote it instead."""

from __future__ import annotations

from tests.browser.conftest import PHONE, Pages, expect
from tests.browser.test_live_room import Room, question, room  # noqa: F401  (fixture)


def test_names_anonymous_questions_and_the_already_asked_hint(
    pages: Pages,
    room: Room,  # noqa: F811
) -> None:
    ana = pages.open(room.students[0], room.path, viewport=PHONE)
    ben = pages.open(room.students[1], room.path)
    teacher = pages.open(room.instructor, room.path)
    for page in (ana, ben, teacher):
        pages.ready(page)

    ana.fill("#qa-input", "Why is quicksort fast on average?")
    ana.click("#qa-form button[type=submit]")
    for page, asker in ((ben, "Ana"), (teacher, "Ana"), (ana, "You")):
        expect(question(page, "quicksort").locator(".asker")).to_have_text(asker)

    # Ben starts typing the same question: the hint offers Ana's, and he upvotes it instead.
    ben.locator("#qa-input").press_sequentially("why is quicksort so fast", delay=10)
    hint = ben.locator("#qa-similar .similar")
    expect(hint).to_have_count(1)
    expect(hint).to_contain_text("Why is quicksort fast on average?")
    hint.locator("button.upvote-similar").click()
    expect(question(ana, "quicksort").locator(".vote-count")).to_have_text("1")
    ben.fill("#qa-input", "")

    ben.fill("#qa-input", "Will the exam cover heaps?")
    ben.check("#qa-anonymous")
    ben.click("#qa-form button[type=submit]")
    for page in (ana, teacher):
        expect(question(page, "heaps").locator(".asker")).to_have_text("Anonymous")
    expect(question(ben, "heaps").locator(".asker")).to_have_text("You (anonymous)")
    # After a reload the room still knows which anonymous question is Ben's (the state route
    # tells only him), and his own question cannot be upvoted by him.
    ben.reload()
    pages.ready(ben)
    expect(question(ben, "heaps").locator(".asker")).to_have_text("You (anonymous)")
    expect(question(ben, "heaps").locator("button.upvote")).to_be_disabled()

    ben.fill("#chat-input", "Thanks!")
    ben.click("#chat-form button[type=submit]")
    for page, sender in ((ana, "Ben"), (teacher, "Ben"), (ben, "You")):
        expect(page.locator("#chat-list li .who").last).to_have_text(sender)
