"""Demo data for ``make run``: ``await seed(pool)`` (idempotent) returns what to print.

Creates, unless they exist: an admin, an instructor and three students (with passwords), a
cohort ``demo`` taught by the instructor with the students enrolled, five lessons, a quiz, and
a live session starting in about an hour. Running it again changes nothing and returns the same
credentials (passwords are only set on accounts that have none).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from api.passwords import hash_password
from workers.grading import MultipleChoice, Numeric, ShortText, SingleChoice, questions_to_json

COHORT_SLUG = "demo"
USERS = (
    ("admin@lectern.test", "Ada Admin", "admin", "admin-password"),
    ("instructor@lectern.test", "Ivan Instructor", "instructor", "instructor-password"),
    ("student1@lectern.test", "Sam Student", "student", "student-password"),
    ("student2@lectern.test", "Sara Student", "student", "student-password"),
    ("student3@lectern.test", "Stan Student", "student", "student-password"),
)
LESSONS = (
    ("Welcome to the course", "How the course works, and how to ask for help."),
    ("Real-time on the web", "Polling, long polling, Server-Sent Events and WebSocket."),
    ("Events and topics", "Publishing once and fanning out to many subscribers."),
    ("Staying connected", "Reconnects, resume cursors and at-least-once delivery."),
    ("Scaling out", "Many gateways, Redis Streams and stateless nodes."),
)
QUIZ_TITLE = "Real-time basics"
QUESTIONS = (
    SingleChoice(
        id="q1",
        prompt="Which transport lets the server push without the client asking?",
        options=("Plain HTTP", "Server-Sent Events", "FTP"),
        correct=1,
    ),
    MultipleChoice(
        id="q2",
        prompt="Which of these are bidirectional?",
        options=("WebSocket", "SSE", "Long polling with POSTs"),
        correct=(0, 2),
        partial_credit=True,
    ),
    Numeric(id="q3", prompt="How many seconds between SSE heartbeats here?", answer=15),
    ShortText(
        id="q4",
        prompt="Name the Redis data type Lectern fans out with.",
        accepted=("stream", "streams"),
    ),
)
SESSION_TITLE = "Live Q&A: real-time architecture"


async def _user(conn: asyncpg.Connection, email: str, name: str, role: str, password: str) -> int:
    row = await conn.fetchrow("SELECT id, password_hash FROM users WHERE email = $1", email)
    if row is None:
        return int(
            await conn.fetchval(
                "INSERT INTO users (email, display_name, role, password_hash)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT (email) DO UPDATE SET email = EXCLUDED.email"
                " RETURNING id",
                email,
                name,
                role,
                await hash_password(password),
            )
        )
    if row["password_hash"] is None:
        await conn.execute(
            "UPDATE users SET password_hash = $1 WHERE id = $2",
            await hash_password(password),
            row["id"],
        )
    return int(row["id"])


async def _lessons(conn: asyncpg.Connection, cohort: int) -> list[int]:
    """The demo lessons' ids, each created when missing."""
    lessons = []
    for position, (title, body) in enumerate(LESSONS):
        lesson = await conn.fetchval(
            "SELECT id FROM lessons WHERE cohort_id = $1 AND position = $2",
            cohort,
            position,
        )
        if lesson is None:
            lesson = await conn.fetchval(
                "INSERT INTO lessons (cohort_id, position, title, body)"
                " VALUES ($1, $2, $3, $4) RETURNING id",
                cohort,
                position,
                title,
                body,
            )
        lessons.append(lesson)
    return lessons


async def _session(conn: asyncpg.Connection, cohort: int) -> int:
    """The demo live session's id (an unended one, else a new one starting in an hour)."""
    session = await conn.fetchval(
        "SELECT id FROM live_sessions WHERE cohort_id = $1 AND title = $2"
        " AND state <> 'ended' ORDER BY id LIMIT 1",
        cohort,
        SESSION_TITLE,
    )
    if session is None:
        starts = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
        session = await conn.fetchval(
            "INSERT INTO live_sessions (cohort_id, title, starts_at, ends_at)"
            " VALUES ($1, $2, $3, $4) RETURNING id",
            cohort,
            SESSION_TITLE,
            starts,
            starts + timedelta(hours=1),
        )
    return int(session)


async def seed(pool: asyncpg.Pool) -> dict[str, Any]:
    """Create the demo data when missing; return ids and credentials."""
    async with pool.acquire() as conn:
        ids = [await _user(conn, *u) for u in USERS]
        _, instructor, *students = ids
        async with conn.transaction():
            cohort = await conn.fetchval(
                "INSERT INTO cohorts (slug, title) VALUES ($1, $2)"
                " ON CONFLICT (slug) DO UPDATE SET slug = EXCLUDED.slug RETURNING id",
                COHORT_SLUG,
                "Demo cohort: real-time web apps",
            )
            await conn.executemany(
                "INSERT INTO enrollments (cohort_id, user_id, kind) VALUES ($1, $2, $3)"
                " ON CONFLICT DO NOTHING",
                [(cohort, instructor, "staff")] + [(cohort, s, "member") for s in students],
            )
            lessons = await _lessons(conn, cohort)
            quiz = await conn.fetchval(
                "SELECT id FROM quizzes WHERE cohort_id = $1 AND title = $2", cohort, QUIZ_TITLE
            )
            if quiz is None:
                quiz = await conn.fetchval(
                    "INSERT INTO quizzes (cohort_id, title, questions, max_attempts, created_by)"
                    " VALUES ($1, $2, $3::jsonb, 3, $4) RETURNING id",
                    cohort,
                    QUIZ_TITLE,
                    questions_to_json(QUESTIONS).decode(),
                    instructor,
                )
            session = await _session(conn, cohort)
    users = [
        {"id": uid, "email": email, "password": password, "role": role}
        for uid, (email, _, role, password) in zip(ids, USERS, strict=True)
    ]
    return {
        "admin": users[0],
        "instructor": users[1],
        "students": users[2:],
        "cohort_id": cohort,
        "cohort_slug": COHORT_SLUG,
        "lesson_ids": lessons,
        "quiz_id": quiz,
        "session_id": session,
    }
