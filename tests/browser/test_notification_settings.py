"""Notification settings in real browsers: a student turns announcements off in the bell
(other students still get them) and sets quiet hours and the digest; a bad time zone is
refused without losing anything; the instructor page has the same settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.browser.conftest import Pages, expect
from tests.browser.stack import Stack


def test_student_turns_a_kind_off_in_app_and_sets_quiet_hours_and_digest(
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
        return teacher, ana, sam, cohort

    teacher, ana, sam, cohort = stack.call(make())
    page = pages.open(ana, "/student")
    other = pages.open(sam, "/student")
    pages.ready(page)
    pages.ready(other)
    page.locator("#bell").click()
    page.locator("#notification-settings summary").click()
    row = page.locator("#notify-settings tr[data-kind='announcement']")
    expect(row.locator("input[name='in_app']")).to_be_checked()
    row.locator("input[name='in_app']").uncheck()
    form = page.locator("#notify-settings-form")
    form.locator("input[name='quiet']").check()
    form.locator("input[name='quiet_start']").fill("21:00")
    form.locator("input[name='quiet_end']").fill("06:30")
    form.locator("input[name='time_zone']").fill("Europe/Paris")
    form.locator("input[name='digest']").check()
    form.locator("input[name='digest_time']").fill("18:00")
    form.locator("#notify-settings-save").click()
    expect(page.locator("#notify-settings-status")).to_have_text("Saved.")
    shot(page, "student-notification-settings")

    token = ana.session["access_token"]
    settings = stack.call(stack.api("GET", "/api/v1/me/notification-settings", token))
    assert settings == {
        "quiet_hours": {"start": "21:00", "end": "06:30"},
        "time_zone": "Europe/Paris",
        "digest": True,
        "digest_time": "18:00",
    }
    prefs = stack.call(stack.api("GET", "/api/v1/me/notification-prefs", token))
    by_kind = {p["kind"]: (p["in_app"], p["email"]) for p in prefs["prefs"]}
    assert by_kind["announcement"] == (False, True) and by_kind["quiz.graded"] == (True, True)

    # An announcement: Sam's bell shows it; Ana's (in-app off) does not.
    stack.call(stack.login(teacher))
    stack.call(
        stack.api(
            "POST",
            f"/api/v1/cohorts/{cohort}/announcements",
            teacher.session["access_token"],
            {"title": "Exam moved"},
        )
    )
    expect(other.locator("#unread")).to_have_attribute("data-n", "1")
    expect(other.locator("#notification-list")).to_contain_text("Exam moved")
    expect(page.locator("#announcement-list")).to_contain_text(
        "Exam moved"
    )  # the feed still shows it
    expect(page.locator("#unread")).to_have_attribute("data-n", "0")
    expect(page.locator("#notification-list")).not_to_contain_text("Exam moved")

    # A bad time zone is refused by the server; the form says so and nothing changes.
    form.locator("input[name='time_zone']").fill("Mars/Olympus")
    form.locator("input[name='digest']").uncheck()
    form.locator("#notify-settings-save").click()
    expect(page.locator("#notify-settings-status")).to_contain_text("Not saved")
    expect(page.locator("#notify-settings-status")).to_contain_text("time zone")
    assert stack.call(stack.api("GET", "/api/v1/me/notification-settings", token)) == settings

    # Reloaded, the form shows what is stored.
    page.reload()
    pages.ready(page)
    page.locator("#bell").click()
    page.locator("#notification-settings summary").click()
    expect(
        page.locator("#notify-settings tr[data-kind='announcement'] input[name='in_app']")
    ).not_to_be_checked()
    expect(page.locator("#notify-settings-form input[name='time_zone']")).to_have_value(
        "Europe/Paris"
    )
    expect(page.locator("#notify-settings-form input[name='quiet_start']")).to_have_value("21:00")


def test_instructor_page_has_notification_settings(pages: Pages, stack: Stack) -> None:
    async def make() -> Any:
        cohort = await stack.cohort()
        teacher = await stack.person("instructor", "Iris Instructor")
        await stack.enroll(cohort, teacher, "staff")
        return teacher

    teacher = stack.call(make())
    page = pages.open(teacher, "/instructor")
    pages.ready(page)
    row = page.locator("#notify-settings tr[data-kind='student.struggling']")
    row.locator("input[name='email']").uncheck()
    page.locator("#notify-settings-save").click()
    expect(page.locator("#notify-settings-status")).to_have_text("Saved.")
    prefs = stack.call(
        stack.api("GET", "/api/v1/me/notification-prefs", teacher.session["access_token"])
    )
    by_kind = {p["kind"]: (p["in_app"], p["email"]) for p in prefs["prefs"]}
    assert by_kind["student.struggling"] == (True, False)
