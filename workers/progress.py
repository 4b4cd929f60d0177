"""Lesson progress: completing a lesson, per-student totals and the staff aggregates.

Plain functions on an asyncpg connection, shared by the API routes and the workers.

**Completing** (:func:`complete_lesson`) locks the student's enrollment row, so two completions
by one student in one cohort serialize and the milestone arithmetic sees every earlier one. A
second completion of the same lesson changes nothing and emits nothing. A first one emits, in
the same transaction: ``progress.update`` to ``user:{id}`` and, for each milestone (25, 50, 75,
100 %) newly unlocked, ``certificate.progress`` (the milestone, its notification and at 100 %
the certificate are stored by :mod:`workers.certificates`), and the cohort's activity entry
(:mod:`workers.activity`).

**Staff aggregates** (``staff.progress`` to ``staff:{cohort}``) are debounced: each completion
calls :func:`schedule_staff_progress`, which schedules the ``staff_progress`` job
``staff_progress_debounce_ms`` ahead with a coalescing key (``workers.jobs.schedule``: ``ZADD
NX`` on the delayed set). While one is waiting, further completions add nothing; when it runs
it reads the database *then*, so every completion committed before it ran is included. A
completion that comes after the job left the delayed set schedules the next one. So a cohort
gets at most one aggregate per window, the last change is always covered by a later aggregate,
and the pending aggregate survives an API restart (it waits in Redis, not in the process).
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
import msgspec
import redis.asyncio as aioredis

from config.settings import Settings
from config.topics import staff_topic, user_topic
from workers import activity, certificates, events
from workers.events import LessonCount, StaffProgress
from workers.jobs import schedule
from workers.outbox_write import Addressed, emit, emit_many

STAFF_PROGRESS_QUEUE = "staff_progress"


class CompletionState(msgspec.Struct):
    lesson_id: int
    cohort_id: int
    completed: bool
    completed_at: datetime
    completed_count: int
    total: int
    percentage: float


class LessonMark(msgspec.Struct):
    lesson_id: int
    title: str
    position: int
    completed: bool
    completed_at: datetime | None


class MyProgress(msgspec.Struct):
    cohort_id: int
    user_id: int
    completed_count: int
    total: int
    percentage: float
    lessons: list[LessonMark]


class StudentProgress(msgspec.Struct):
    user_id: int
    display_name: str
    email: str
    completed_count: int
    percentage: float


class StaffProgressDetail(StaffProgress):
    per_student: list[StudentProgress]


class NotEnrolled(Exception):
    """The user is not a member of the lesson's cohort."""


def percentage(done: int, total: int) -> float:
    return round(100.0 * done / total, 1) if total else 0.0


async def _counts(conn: asyncpg.Connection, user_id: int, cohort_id: int) -> tuple[int, int]:
    row = await conn.fetchrow(
        "SELECT count(*) AS total, count(p.lesson_id) AS done FROM lessons l"
        " LEFT JOIN lesson_progress p ON p.lesson_id = l.id AND p.user_id = $1"
        " WHERE l.cohort_id = $2",
        user_id,
        cohort_id,
    )
    return int(row["done"]), int(row["total"])


async def complete_lesson(
    conn: asyncpg.Connection, user_id: int, lesson_id: int
) -> tuple[CompletionState, bool] | None:
    """Mark the lesson completed; ``(state, changed)``, or ``None`` when there is no lesson.

    Raises :class:`NotEnrolled`. Runs its own transaction; emits the events when ``changed``.
    """
    async with conn.transaction():
        cohort_id = await conn.fetchval("SELECT cohort_id FROM lessons WHERE id = $1", lesson_id)
        if cohort_id is None:
            return None
        kind = await conn.fetchval(
            "SELECT kind FROM enrollments WHERE cohort_id = $1 AND user_id = $2 FOR UPDATE",
            cohort_id,
            user_id,
        )
        if kind != "member":
            raise NotEnrolled
        inserted = await conn.fetchval(
            "INSERT INTO lesson_progress (user_id, lesson_id) VALUES ($1, $2)"
            " ON CONFLICT DO NOTHING RETURNING completed_at",
            user_id,
            lesson_id,
        )
        completed_at = inserted or await conn.fetchval(
            "SELECT completed_at FROM lesson_progress WHERE user_id = $1 AND lesson_id = $2",
            user_id,
            lesson_id,
        )
        done, total = await _counts(conn, user_id, cohort_id)
        state = CompletionState(
            lesson_id, cohort_id, True, completed_at, done, total, percentage(done, total)
        )
        if inserted is None:
            return state, False
        milestones = await certificates.unlock(conn, user_id, cohort_id, done, total)
        await emit_many(conn, _completion_events(user_id, state, milestones))
        title = await conn.fetchval("SELECT title FROM lessons WHERE id = $1", lesson_id)
        await activity.record(conn, cohort_id, user_id, "lesson.completed", lesson_id, title)
    return state, True


def _completion_events(
    user_id: int, state: CompletionState, milestones: list[int]
) -> list[Addressed]:
    """The learner's ``progress.update`` and a ``certificate.progress`` per newly unlocked
    milestone."""
    topic = user_topic(user_id)
    update = events.ProgressUpdate(
        lesson_id=state.lesson_id,
        cohort_id=state.cohort_id,
        completed=True,
        completed_count=state.completed_count,
        total=state.total,
        percentage=state.percentage,
    )
    unlocked = [
        events.CertificateProgress(
            cohort_id=state.cohort_id, percentage=state.percentage, milestone=m
        )
        for m in milestones
    ]
    return [events.to(topic, e) for e in (update, *unlocked)]


async def my_progress(conn: asyncpg.Connection, user_id: int, cohort_id: int) -> MyProgress:
    rows = await conn.fetch(
        "SELECT l.id AS lesson_id, l.title, l.position, p.completed_at FROM lessons l"
        " LEFT JOIN lesson_progress p ON p.lesson_id = l.id AND p.user_id = $1"
        " WHERE l.cohort_id = $2 ORDER BY l.position, l.id",
        user_id,
        cohort_id,
    )
    marks = [
        LessonMark(
            r["lesson_id"],
            r["title"],
            r["position"],
            r["completed_at"] is not None,
            r["completed_at"],
        )
        for r in rows
    ]
    done = sum(m.completed for m in marks)
    return MyProgress(cohort_id, user_id, done, len(marks), percentage(done, len(marks)), marks)


async def staff_progress(conn: asyncpg.Connection, cohort_id: int) -> StaffProgressDetail:
    """Per-lesson completion counts, per-student totals and the average, for a cohort."""
    lessons = await conn.fetch(
        "SELECT l.id, l.title, count(p.user_id) FILTER (WHERE e.user_id IS NOT NULL) AS n"
        " FROM lessons l LEFT JOIN lesson_progress p ON p.lesson_id = l.id"
        " LEFT JOIN enrollments e ON e.user_id = p.user_id AND e.cohort_id = l.cohort_id"
        "  AND e.kind = 'member'"
        " WHERE l.cohort_id = $1 GROUP BY l.id ORDER BY l.position, l.id",
        cohort_id,
    )
    students = await conn.fetch(
        "SELECT u.id, u.display_name, u.email, count(l.id) AS n FROM enrollments e"
        " JOIN users u ON u.id = e.user_id"
        " LEFT JOIN lesson_progress p ON p.user_id = e.user_id"
        " LEFT JOIN lessons l ON l.id = p.lesson_id AND l.cohort_id = e.cohort_id"
        " WHERE e.cohort_id = $1 AND e.kind = 'member' GROUP BY u.id ORDER BY u.id",
        cohort_id,
    )
    total = len(lessons)
    per_student = [
        StudentProgress(r["id"], r["display_name"], r["email"], r["n"], percentage(r["n"], total))
        for r in students
    ]
    average = (
        round(sum(s.percentage for s in per_student) / len(per_student), 1) if per_student else 0.0
    )
    return StaffProgressDetail(
        cohort_id=cohort_id,
        total=total,
        students=len(per_student),
        average_percentage=average,
        lessons=[LessonCount(r["id"], r["title"], r["n"]) for r in lessons],
        per_student=per_student,
    )


async def emit_staff_progress(conn: asyncpg.Connection, cohort_id: int) -> None:
    """Compute the cohort's aggregates now and emit ``staff.progress`` to ``staff:{cohort}``
    (the per-student list stays out of the event; staff fetch it from the API)."""
    async with conn.transaction():
        if await conn.fetchval("SELECT 1 FROM cohorts WHERE id = $1", cohort_id) is None:
            return
        detail = await staff_progress(conn, cohort_id)
        summary = StaffProgress(
            detail.cohort_id,
            detail.total,
            detail.students,
            detail.average_percentage,
            detail.lessons,
        )
        await emit(conn, events.to(staff_topic(cohort_id), summary))


async def schedule_staff_progress(
    redis: aioredis.Redis, settings: Settings, cohort_id: int
) -> bool:
    """Ask for a ``staff.progress`` aggregate within the debounce window (coalesced)."""
    return await schedule(
        redis,
        STAFF_PROGRESS_QUEUE,
        {"cohort_id": cohort_id},
        delay_ms=settings.staff_progress_debounce_ms,
        key=f"cohort:{cohort_id}",
    )
