"""The cohort activity feed in real browsers: one student's lesson shows on another student's
dashboard at once, as initials; the instructor switches the feed to names, then off, and the
open dashboard follows each time without a reload."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.browser.conftest import Pages, expect
from tests.browser.stack import Stack


def test_activity_feed_follows_the_privacy_switch(
    pages: Pages, stack: Stack, shot: Callable[[Any, str], None]
) -> None:
    async def make() -> tuple[Any, Any, Any, int]:
        cohort = await stack.cohort()
        teacher = await stack.person("instructor", "Iris Instructor")
        await stack.enroll(cohort, teacher, "staff")
        ana = await stack.person("student", "Ana Smith")
        sam = await stack.person("student", "Sam Student")
        for s in (ana, sam):
            await stack.enroll(cohort, s)
        lesson = await stack.lesson(cohort, 0, "Streams")
        return teacher, ana, sam, lesson

    teacher, ana, sam, lesson = stack.call(make())
    watcher = pages.open(sam, "/student")
    doer = pages.open(ana, "/student")
    instructor = pages.open(teacher, "/instructor")
    for page in (watcher, doer, instructor):
        pages.ready(page)
    expect(instructor.locator("#activity-privacy")).to_have_value("initials")
    # A quiet day: the figures are there on load (the snapshot route), not dashes.
    expect(instructor.locator("#kpi-students")).to_have_text("2")
    expect(instructor.locator("#kpi-subs")).to_have_text("0")
    expect(instructor.locator("#kpi-pending")).to_have_text("0")
    expect(instructor.locator("#kpi-active")).to_have_text("0 / 0")
    expect(instructor.locator("#struggling li.struggling")).to_have_count(0)

    doer.locator(f"#lessons li[data-id='{lesson}'] button.complete").click()
    item = watcher.locator("#activity-list li[data-kind='lesson.completed']")
    expect(item).to_have_count(1)
    expect(item.locator(".actor")).to_have_text("A. S.")
    expect(item.locator(".what")).to_have_text("completed lesson “Streams”")
    shot(watcher, "student-activity")

    # Ana did a lesson, Sam none: on the next load Sam is listed with the reason.
    instructor.reload()
    pages.ready(instructor)
    alert = instructor.locator("#struggling li.struggling[data-rule='behind']")
    expect(alert).to_contain_text("Sam Student")
    expect(alert).to_contain_text("0 of 1 lessons done")
    # The drill-down: Sam's row opens his lessons, grades, sessions and the same reason.
    instructor.locator(f"#student-rows tr[data-user='{sam.id}'] button.drill").click()
    detail = instructor.locator(f"#student-detail [data-user='{sam.id}']")
    expect(detail.locator(".detail-progress")).to_have_text("0 of 1 lessons done (0%)")
    expect(detail.locator(".detail-alert")).to_contain_text("points behind the cohort's median")

    instructor.select_option("#activity-privacy", "names")
    expect(item.locator(".actor")).to_have_text("Ana Smith")
    instructor.select_option("#activity-privacy", "off")
    expect(watcher.locator("#activity-list")).to_contain_text("turned the activity feed off")
    watcher.reload()
    pages.ready(watcher)
    expect(watcher.locator("#activity-list")).to_contain_text("turned the activity feed off")
