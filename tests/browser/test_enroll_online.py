"""Staff enroll a class from a CSV file in the browser, the per-row report filling in from
``import.progress`` events; students cannot use the page; refused files say why. And the
instructor dashboard's "Online now": a student opening any page shows up, closing it goes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.browser.conftest import Pages, expect
from tests.browser.stack import Person, Stack


@dataclass
class Class:
    cohort: int
    instructor: Person
    student: Person


@pytest.fixture
def klass(stack: Stack) -> Class:
    async def make() -> Class:
        cohort = await stack.cohort()
        instructor = await stack.person("instructor", "Iris Instructor")
        await stack.enroll(cohort, instructor, "staff")
        student = await stack.person("student", "Sam Student")
        await stack.enroll(cohort, student)
        return Class(cohort, instructor, student)

    return stack.call(make())


def class_list(klass: Class, good: int) -> bytes:
    """``good`` new students (more than one batch of 50), one already enrolled, and three bad
    rows: a broken address that is also markup, a role only admins grant, no address."""
    lines = ["email,name,role"]
    lines += [f"new{i}-{klass.cohort}@class.test,New {i}," for i in range(good)]
    lines.append(f"{klass.student.email},Sam,student")
    lines.append('<img src=x onerror="window.pwned=1">,<b>Bold</b>,student')
    lines.append(f"teacher-{klass.cohort}@class.test,Tea,instructor")
    lines.append(",Nobody,student")
    return ("\n".join(lines) + "\n").encode()


def csv_file(content: bytes, name: str = "class.csv") -> dict[str, Any]:
    return {"name": name, "mimeType": "text/csv", "buffer": content}


def test_staff_upload_a_class_list_and_watch_the_rows_fill_in(
    pages: Pages, klass: Class, shot: Callable[[Any, str], None]
) -> None:
    """From the instructor dashboard to the upload page; 60 good rows (two batches, so two
    running events), one skipped and three errors, each with its row number and reason, shown
    as text."""
    dash = pages.open(klass.instructor, "/instructor")
    pages.ready(dash)
    dash.click("#enroll-link")
    dash.wait_for_url(f"**/enroll?cohort={klass.cohort}")
    pages.ready(dash)
    expect(dash.locator("#upload-cohort")).to_have_value(str(klass.cohort))

    dash.set_input_files("#upload-file", files=[csv_file(class_list(klass, 60))])
    dash.click("#upload-button")
    report = dash.locator("#report")
    expect(report).to_have_attribute("data-status", "done")
    expect(dash.locator("#report-rows tr")).to_have_count(64)
    expect(dash.locator("#report-progress")).to_have_text("64 / 64 rows")
    expect(dash.locator("#report-summary")).to_have_text(
        "Done: 60 enrolled (60 new accounts), 1 skipped (already enrolled), 3 errors"
        " in rows 63, 64, 65."
    )
    # The rows came from the events (two running ones and the final one), not a reload alone.
    assert int(report.get_attribute("data-events") or 0) >= 3
    first = dash.locator("#report-rows tr").first
    expect(first).to_have_attribute("data-status", "created")
    expect(first.locator("td").nth(2)).to_have_text("Enrolled (new account)")
    skipped = dash.locator("#report-rows tr[data-line='62']")
    expect(skipped.locator("td").nth(2)).to_have_text("Skipped: already enrolled")
    markup = dash.locator("#report-rows tr[data-line='63']")
    expect(markup.locator("td").nth(1)).to_have_text('<img src=x onerror="window.pwned=1">')
    expect(markup.locator("td").nth(3)).to_have_text("invalid email")
    expect(dash.locator("#report-rows tr[data-line='64'] td.reason")).to_contain_text("admin")
    expect(dash.locator("#report-rows tr[data-line='65'] td.reason")).to_have_text("missing email")
    assert dash.evaluate("() => window.pwned") is None
    assert dash.locator("#report-rows img").count() == 0
    shot(dash, "enroll")


def test_refused_files_say_why(pages: Pages, klass: Class) -> None:
    """A file without an ``email`` column (the server's reason), one over 2 MiB (refused before
    sending) and an empty one: an error each, and no report."""
    page = pages.open(klass.instructor, f"/enroll?cohort={klass.cohort}")
    pages.ready(page)
    error = page.locator("#upload-error")
    page.set_input_files("#upload-file", files=[csv_file(b"mail,name\na@b.io,A\n")])
    page.click("#upload-button")
    expect(error).to_have_text(
        "The file could not be read: the header row must name an `email` column."
    )
    big = b"email\n" + b"x" * (2 * 1024 * 1024)
    page.set_input_files("#upload-file", files=[csv_file(big)])
    page.click("#upload-button")
    expect(error).to_have_text("The file is too large: 2 MiB at most.")
    page.set_input_files("#upload-file", files=[csv_file(b"")])
    page.click("#upload-button")
    expect(error).to_have_text("The file is empty.")
    expect(page.locator("#report")).to_be_hidden()


def test_a_student_can_neither_open_nor_use_the_upload(
    pages: Pages, stack: Stack, klass: Class
) -> None:
    """The page shows no form to a student, and the API refuses their upload (403)."""
    page = pages.open(klass.student, f"/enroll?cohort={klass.cohort}")
    page.wait_for_selector("body[data-ready=true]")
    expect(page.locator("#load-error")).to_have_text(
        "Only a cohort's staff can enroll students from a file."
    )
    expect(page.locator("#upload")).to_be_hidden()
    status = page.evaluate(
        """async (cohort) => {
          const token = JSON.parse(sessionStorage.getItem('lectern.session')).access_token;
          const r = await fetch(`/api/v1/cohorts/${cohort}/enrollments/import`, {
            method: 'POST', body: 'email\\nx@y.io\\n',
            headers: {'Content-Type': 'text/csv', Authorization: `Bearer ${token}`}});
          return r.status;
        }""",
        klass.cohort,
    )
    assert status == 403


def test_the_dashboard_shows_who_is_online_as_they_come_and_go(pages: Pages, klass: Class) -> None:
    """On load the instructor sees themselves; a student opening their dashboard appears
    (no live room needed) and disappears when they close it."""
    dash = pages.open(klass.instructor, "/instructor")
    pages.ready(dash)
    online = dash.locator("#online-list li")
    expect(dash.locator(f"#online-list li[data-user='{klass.instructor.id}']")).to_contain_text(
        "Iris Instructor (staff)"
    )
    student = pages.open(klass.student, "/student")
    pages.ready(student)
    who = dash.locator(f"#online-list li[data-user='{klass.student.id}']")
    expect(who).to_have_text("Sam Student")
    expect(dash.locator("#online-count")).to_have_text("2")
    student.close()
    expect(who).to_have_count(0)
    expect(online).to_have_count(1)
