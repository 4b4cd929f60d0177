"""Polls a teacher would use, in real browsers: a multiple-choice, named poll with live results
and a timer that the server closes, then the room's poll history."""

from __future__ import annotations

from tests.browser.conftest import PHONE, Pages, expect
from tests.browser.test_live_room import Room, room  # noqa: F401  (fixture)


def test_multiple_choice_named_timed_poll_and_history(
    pages: Pages,
    room: Room,  # noqa: F811
) -> None:
    teacher = pages.open(room.instructor, room.path)
    ana = pages.open(room.students[0], room.path, viewport=PHONE)
    ben = pages.open(room.students[1], room.path)
    for page in (teacher, ana, ben):
        pages.ready(page)

    teacher.fill("#poll-question", "Which sorts are stable?")
    teacher.fill("#poll-options", "Merge sort\nQuicksort\nInsertion sort")
    teacher.select_option("#poll-kind", "multiple")
    teacher.select_option("#poll-results", "live")
    teacher.check("#poll-named")
    teacher.fill("#poll-duration", "6")
    teacher.click("#poll-form button[type=submit]")
    for page in (ana, ben):
        expect(page.locator(".poll-question")).to_have_text("Which sorts are stable?")
        expect(page.locator(".poll-settings")).to_contain_text("Pick any that apply")
        expect(page.locator(".poll-timer")).to_contain_text("closes in")

    ana.locator("#poll-multi input.choice[value='0']").check()
    ana.locator("#poll-multi input.choice[value='2']").check()
    ana.click("#poll-multi button.vote-multi")
    # Results are live: Ben sees Ana's ticks before voting; the teacher sees her name.
    expect(ben.locator("#poll-tally .count")).to_have_text(["1 · 100%", "0 · 0%", "1 · 100%"])
    expect(teacher.locator("#poll-tally .voters").first).to_have_text("Ana")
    ben.locator("#poll-multi input.choice[value='0']").check()
    ben.click("#poll-multi button.vote-multi")
    expect(ana.locator("#poll-tally .count")).to_have_text(["2 · 100%", "0 · 0%", "1 · 50%"])

    # Nobody closes it: the server's timer does, for every page.
    for page in (teacher, ana, ben):
        expect(page.locator(".poll-status")).to_have_attribute(
            "data-state", "closed", timeout=15_000
        )
    expect(ana.locator("#poll-multi")).to_have_count(0)

    # A second poll: the first one moves to the history with its counts.
    teacher.fill("#poll-question", "Ready for the quiz?")
    teacher.fill("#poll-options", "Yes\nNo")
    teacher.select_option("#poll-kind", "single")
    teacher.select_option("#poll-results", "never")
    teacher.uncheck("#poll-named")
    teacher.fill("#poll-duration", "")
    teacher.click("#poll-form button[type=submit]")
    for page in (ana, ben):
        expect(page.locator(".poll-question")).to_have_text("Ready for the quiz?")
        past = page.locator("#poll-history .past-poll")
        expect(past).to_have_count(1)
        expect(past.locator(".count")).to_have_text(["2 · 100%", "0 · 0%", "1 · 50%"])
    ana.click("#poll-body button.vote[data-option='0']")
    expect(ana.locator("#poll-body button.vote.mine")).to_have_text("Yes")
    teacher.click("#poll-close")
    expect(ana.locator(".poll-status")).to_have_attribute("data-state", "closed")
    expect(ana.locator("#poll-tally")).to_have_count(0)  # results: never
    expect(teacher.locator("#poll-reveal")).to_have_count(0)
    # A reload rebuilds the same from the state route.
    ana.reload()
    pages.ready(ana)
    expect(ana.locator("#poll-history .past-poll")).to_have_count(1)
    expect(ana.locator("#poll-tally")).to_have_count(0)
