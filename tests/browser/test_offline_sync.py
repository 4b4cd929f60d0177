"""Offline sync in a real browser: a student goes offline, completes a lesson (queued in
IndexedDB, shown as pending), comes back online, and the page and the server converge with the
completion applied once; a reload sends nothing again."""

from __future__ import annotations

import re
from typing import Any

from tests.browser.conftest import Pages, expect
from tests.browser.stack import Stack


def test_lesson_completed_offline_syncs_once_on_reconnect(pages: Pages, stack: Stack) -> None:
    async def make() -> tuple[Any, int, int]:
        cohort = await stack.cohort()
        student = await stack.person("student", "Olive Offline")
        await stack.enroll(cohort, student)
        first = await stack.lesson(cohort, 0, "Queues")
        await stack.lesson(cohort, 1, "Logs")
        return student, first, cohort

    student, lesson, _ = stack.call(make())

    async def server_state() -> tuple[int, int]:
        done = await stack.db.fetchval(
            "SELECT count(*) FROM lesson_progress WHERE user_id = $1", student.id
        )
        synced = await stack.db.fetchval(
            "SELECT count(*) FROM sync_operations WHERE user_id = $1", student.id
        )
        return int(done), int(synced)

    page = pages.open(student, "/student")
    pages.ready(page)
    item = page.locator(f"#lessons li[data-id='{lesson}']")
    page.context.set_offline(True)
    item.locator("button.complete").click()
    expect(item.locator(".pending")).to_have_text("saved offline")
    assert stack.call(server_state()) == (0, 0)  # nothing reached the server

    page.context.set_offline(False)
    expect(item).to_have_class(re.compile(r"\bdone\b"))
    expect(page.locator("#progress-text")).to_contain_text("1 of 2 lessons done")
    assert stack.call(server_state()) == (1, 1)

    # Reloaded (the queue is empty now, nothing is sent again), the server's state shows.
    page.reload()
    pages.ready(page)
    expect(page.locator(f"#lessons li[data-id='{lesson}']")).to_have_class(re.compile(r"\bdone\b"))
    expect(page.locator("#progress-text")).to_contain_text("1 of 2 lessons done")
    assert stack.call(server_state()) == (1, 1)
