"""The student's learning surface in real browsers: a lesson read on the dashboard with its
Markdown rendered safely (hostile bodies stay text), edits, additions and deletions followed
live through ``lesson.changed``, enrollment changes through ``enrollment.changed``, and the
leaderboard keeping the student's own row when live updates carry only the top entries."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.browser.conftest import Pages, expect
from tests.browser.stack import Stack
from workers.grading import SingleChoice, questions_to_json
from workers.leaderboard import EVENT_TOP

HOSTILE = """# Streams <script>window.pwned = 1</script>

Read **this** and *that*, see [the docs](https://example.com/docs),
[a script](javascript:window.pwned=2), [shouting](JaVaScRiPt:window.pwned=5)
and [data](data:text/html,hi) and [next](/student#x).

"><img src=x onerror="window.pwned=3">

- one
- two `<b>bold?</b>`

```
<script>window.pwned = 4</script>
```
"""


def test_lesson_reader_renders_markdown_safely_and_follows_edits(
    pages: Pages, stack: Stack, shot: Callable[[Any, str], None]
) -> None:
    async def make() -> tuple[Any, Any, int, int]:
        cohort = await stack.cohort()
        teacher = await stack.person("instructor", "Iris Instructor")
        await stack.enroll(cohort, teacher, "staff")
        student = await stack.person("student", "Sam Student")
        await stack.enroll(cohort, student)
        lesson = await stack.lesson(cohort, 0, "Streams")
        await stack.db.execute("UPDATE lessons SET body = $2 WHERE id = $1", lesson, HOSTILE)
        await stack.login(teacher)
        return teacher, student, cohort, lesson

    teacher, student, cohort, lesson = stack.call(make())
    page = pages.open(student, "/student")
    pages.ready(page)
    page.locator(f"#lessons li[data-id='{lesson}'] button.open-lesson").click()
    card = page.locator(f"#lesson[data-id='{lesson}']")
    body = page.locator("#lesson-body")
    expect(card).to_be_visible()
    expect(page.locator("#lesson-title")).to_have_text("Streams")
    # Markup in the source is text: the heading shows the tag, no element came of it.
    expect(body.locator("h1")).to_have_text("Streams <script>window.pwned = 1</script>")
    expect(body.locator("strong")).to_have_text("this")
    expect(body.locator("em")).to_have_text("that")
    expect(body.locator("ul li")).to_have_text(["one", "two <b>bold?</b>"])
    expect(body.locator("pre code")).to_have_text("<script>window.pwned = 4</script>")
    expect(body).to_contain_text('"><img src=x onerror="window.pwned=3">')
    for tag in ("script", "img", "b", "[onerror]"):
        expect(body.locator(tag)).to_have_count(0)
    # Only http(s) and relative links are links; the other schemes are plain text.
    links = body.locator("a")
    expect(links).to_have_count(2)
    expect(links.nth(0)).to_have_attribute("href", "https://example.com/docs")
    expect(links.nth(0)).to_have_attribute("rel", "noopener noreferrer")
    expect(links.nth(1)).to_have_attribute("href", "/student#x")
    expect(body.locator(".unsafe-link")).to_have_text(["a script", "shouting", "data"])
    assert page.evaluate("() => window.pwned === undefined")
    shot(page, "student-lesson")

    # The instructor edits the lesson: the open reader shows the new text without a reload.
    token = teacher.session["access_token"]
    stack.call(
        stack.api(
            "PATCH",
            f"/api/v1/lessons/{lesson}",
            token,
            {"body": "## Resume\n\nFrom `Last-Event-ID`."},
        )
    )
    expect(body.locator("h2")).to_have_text("Resume")
    expect(body.locator("code")).to_have_text("Last-Event-ID")
    # A new lesson appears in the list; deleting the open one closes the reader.
    added = stack.call(
        stack.api(
            "POST", f"/api/v1/cohorts/{cohort}/lessons", token, {"title": "Scale", "body": "x"}
        )
    )
    expect(page.locator("#lessons li")).to_have_count(2)
    expect(page.locator(f"#lessons li[data-id='{added['id']}'] .title")).to_have_text("Scale")
    stack.call(stack.api("DELETE", f"/api/v1/lessons/{lesson}", token))
    expect(body).to_have_text("This lesson was removed.")
    expect(page.locator("#lessons li")).to_have_count(1)
    # Reading the new lesson and completing it from the reader moves the bar.
    page.locator(f"#lessons li[data-id='{added['id']}'] button.open-lesson").click()
    expect(body.locator("p")).to_have_text("x")
    page.locator("#lesson-actions button.complete").click()
    expect(page.locator("#progress-text")).to_have_text("1 of 1 lessons done (100%)")
    expect(page.locator("#lesson-actions button")).to_have_count(0)


def test_enrollment_changes_reach_the_open_dashboard(pages: Pages, stack: Stack) -> None:
    async def make() -> tuple[Any, Any, int, int]:
        first, second = await stack.cohort(), await stack.cohort()
        teacher = await stack.person("instructor", "Iris Instructor")
        student = await stack.person("student", "Sam Student")
        for cohort in (first, second):
            await stack.enroll(cohort, teacher, "staff")
        await stack.enroll(first, student)
        await stack.login(teacher)
        return teacher, student, first, second

    teacher, student, first, second = stack.call(make())
    page = pages.open(student, "/student")
    pages.ready(page)
    expect(page.locator("#cohort select")).to_have_count(0)
    token = teacher.session["access_token"]
    stack.call(
        stack.api("POST", f"/api/v1/cohorts/{second}/enrollments", token, {"user_id": student.id})
    )
    # A second cohort: the picker appears, still on the first.
    expect(page.locator("#cohort select option")).to_have_count(2)
    expect(page.locator("#cohort select")).to_have_value(str(first))
    stack.call(stack.api("DELETE", f"/api/v1/cohorts/{first}/enrollments/{student.id}", token))
    expect(page.locator("#load-error")).to_contain_text("no longer enrolled")
    expect(page.locator("main")).to_be_hidden()
    expect(page.locator("#cohort select option")).to_have_count(0)


def test_first_enrollment_loads_the_dashboard(pages: Pages, stack: Stack) -> None:
    async def make() -> tuple[Any, Any, int]:
        cohort = await stack.cohort()
        teacher = await stack.person("instructor", "Iris Instructor")
        await stack.enroll(cohort, teacher, "staff")
        await stack.lesson(cohort, 0, "Welcome")
        student = await stack.person("student", "Nina New")
        await stack.login(teacher)
        return teacher, student, cohort

    teacher, student, cohort = stack.call(make())
    page = pages.open(student, "/student")
    pages.ready(page)
    expect(page.locator("#load-error")).to_have_text("You are not enrolled in a cohort yet.")
    token = teacher.session["access_token"]
    stack.call(
        stack.api("POST", f"/api/v1/cohorts/{cohort}/enrollments", token, {"user_id": student.id})
    )
    expect(page.locator("#lessons li")).to_have_count(1)
    expect(page.locator("#load-error")).to_have_text("")


def test_leaderboard_keeps_my_row_below_the_top(pages: Pages, stack: Stack) -> None:
    """The live update carries the top entries only; the student ranked below them keeps
    their row, with their current rank."""

    async def make() -> tuple[Any, list[Any], int]:
        cohort = await stack.cohort()
        me = await stack.person("student", "Sam Student")
        others = [await stack.person("student", f"Rival {i:02}") for i in range(EVENT_TOP)]
        for person in (me, *others):
            await stack.enroll(cohort, person)
            await stack.login(person)
        questions = (
            SingleChoice(id="q1", prompt="Which one pushes?", options=("FTP", "SSE"), correct=1),
        )
        quiz = await stack.db.fetchval(
            "INSERT INTO quizzes (cohort_id, title, questions, max_attempts)"
            " VALUES ($1, 'Basics', $2::jsonb, 1) RETURNING id",
            cohort,
            questions_to_json(questions).decode(),
        )
        await stack.api(
            "POST",
            f"/api/v1/quizzes/{quiz}/submissions",
            me.session["access_token"],
            {"answers": {"q1": 0}},
        )
        return me, others, int(quiz)

    me, others, quiz = stack.call(make())
    page = pages.open(me, "/student")
    pages.ready(page)
    mine = page.locator(f"#leaderboard-rows tr[data-user='{me.id}']")
    expect(mine).to_have_count(1)

    async def rivals_answer() -> None:
        for person in others:
            await stack.api(
                "POST",
                f"/api/v1/quizzes/{quiz}/submissions",
                person.session["access_token"],
                {"answers": {"q1": 1}},
            )

    stack.call(rivals_answer())
    # The top is all rivals now; the student's own row stays, ranked just below them.
    expect(page.locator("#leaderboard-rows tr")).to_have_count(EVENT_TOP + 1)
    expect(page.locator("#leaderboard-rows tr.me")).to_have_count(1)
    expect(mine.locator("td").nth(0)).to_have_text(str(EVENT_TOP + 1))
    expect(mine.locator("td").nth(1)).to_have_text("You")


def test_certificate_milestones_reach_the_bell_and_the_certificate(
    pages: Pages, stack: Stack, shot: Callable[[Any, str], None]
) -> None:
    async def make() -> tuple[Any, list[int], str]:
        cohort = await stack.cohort()
        student = await stack.person("student", "Sam Student")
        await stack.enroll(cohort, student)
        lessons = [await stack.lesson(cohort, i, t) for i, t in enumerate(("Streams", "Resume"))]
        title = await stack.db.fetchval("SELECT title FROM cohorts WHERE id = $1", cohort)
        return student, lessons, str(title)

    student, lessons, title = stack.call(make())
    page = pages.open(student, "/student")
    pages.ready(page)
    chips = page.locator("#milestones li")
    expect(chips).to_have_count(4)
    expect(page.locator("#milestones li.unlocked")).to_have_count(0)
    expect(page.locator("#certificate .certificate")).to_have_count(0)

    page.locator(f"#lessons li[data-id='{lessons[0]}'] button.complete").click()
    expect(page.locator("#milestones li.unlocked")).to_have_count(2)
    expect(page.locator("#milestones li[data-milestone='50']")).to_have_attribute(
        "data-unlocked", "true"
    )
    expect(page.locator("#milestones li[data-milestone='75']")).to_have_attribute(
        "data-unlocked", "false"
    )
    # Each milestone reaches the bell once.
    expect(page.locator("#unread")).to_have_text("2")
    page.locator("#bell").click()
    expect(page.locator("#notification-list li .body").first).to_have_text(
        f"Milestone: 50% of {title} done"
    )
    expect(page.locator("#certificate .certificate")).to_have_count(0)

    page.locator(f"#lessons li[data-id='{lessons[1]}'] button.complete").click()
    expect(page.locator("#milestones li.unlocked")).to_have_count(4)
    cert = page.locator("#certificate .certificate")
    expect(cert.locator(".cert-name")).to_have_text("Sam Student")
    expect(cert.locator(".cert-course")).to_have_text(title)
    expect(page.locator("#unread")).to_have_text("4")
    expect(page.locator("#notification-list li .body").first).to_have_text(
        f"Course complete: your certificate for {title} is ready"
    )
    code = cert.locator(".cert-code").inner_text()
    assert len(code) == 32
    shot(page, "student-certificate")

    # What was earned is stored: a reload shows the same certificate and milestones.
    page.reload()
    pages.ready(page)
    expect(page.locator("#milestones li.unlocked")).to_have_count(4)
    expect(page.locator("#certificate .cert-code")).to_have_text(code)
