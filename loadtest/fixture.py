"""Accounts and a classroom for a load test, created straight in PostgreSQL.

A load test needs hundreds or thousands of students; creating them through the API would hash
a password per account (argon2, by design slow). The fixture inserts them directly, with no
password, and the scenarios sign their access tokens with the deployment's own JWT settings
(the same claims the API issues), so every request still goes through the real API and
gateway authorization.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis

from config.topics import live_topic
from gateway.sessions import register
from workers.grading import Numeric, SingleChoice, questions_to_json

FIXTURE_FILE = "loadtest-fixture.json"


@dataclass
class Fixture:
    api_url: str
    gateway_url: str
    cohort_id: int
    session_id: int
    quiz_id: int
    lesson_ids: list[int]
    student_ids: list[int]
    instructor_ids: list[int]

    @property
    def live_topic(self) -> str:
        return live_topic(self.cohort_id, self.session_id)

    def save(self, data_dir: str) -> Path:
        path = Path(data_dir) / FIXTURE_FILE
        path.write_text(json.dumps(asdict(self)))
        return path

    @classmethod
    def load(cls, data_dir: str) -> Fixture:
        return cls(**json.loads((Path(data_dir) / FIXTURE_FILE).read_text()))


QUESTIONS = (
    SingleChoice(id="q1", prompt="2 + 2?", options=("3", "4", "5"), correct=1),
    Numeric(id="q2", prompt="Seconds in a minute?", answer=60),
)


async def create(
    database_url: str,
    api_url: str,
    gateway_url: str,
    students: int,
    instructors: int = 2,
    lessons: int = 20,
    redis_url: str = "",
) -> Fixture:
    """One cohort with ``students`` members, ``instructors`` staff, lessons, a quiz allowing
    many attempts, and a live session that is already live (registered in the stack's Redis,
    so the gateway lets its topic be subscribed: gateway/sessions.py)."""
    tag = f"lt{int(time.time())}"
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            cohort_id = await conn.fetchval(
                "INSERT INTO cohorts (slug, title) VALUES ($1, $2) RETURNING id",
                tag,
                f"Load test {tag}",
            )
            rows = [(f"{tag}-s{i}@load.test", f"Student {i}", "student") for i in range(students)]
            rows += [
                (f"{tag}-i{i}@load.test", f"Instructor {i}", "instructor")
                for i in range(instructors)
            ]
            await conn.executemany(
                "INSERT INTO users (email, display_name, role) VALUES ($1, $2, $3)", rows
            )
            users = await conn.fetch(
                "SELECT id, role FROM users WHERE email LIKE $1 ORDER BY id", f"{tag}-%"
            )
            student_ids = [r["id"] for r in users if r["role"] == "student"]
            instructor_ids = [r["id"] for r in users if r["role"] == "instructor"]
            await conn.executemany(
                "INSERT INTO enrollments (cohort_id, user_id, kind) VALUES ($1, $2, $3)",
                [(cohort_id, u, "member") for u in student_ids]
                + [(cohort_id, u, "staff") for u in instructor_ids],
            )
            lesson_ids = [
                await conn.fetchval(
                    "INSERT INTO lessons (cohort_id, position, title, body) "
                    "VALUES ($1, $2, $3, $4) RETURNING id",
                    cohort_id,
                    i,
                    f"Lesson {i}",
                    "Body " * 50,
                )
                for i in range(lessons)
            ]
            quiz_id = await conn.fetchval(
                "INSERT INTO quizzes (cohort_id, title, questions, max_attempts, created_by) "
                "VALUES ($1, $2, $3::jsonb, $4, $5) RETURNING id",
                cohort_id,
                "Load quiz",
                questions_to_json(QUESTIONS).decode(),
                1_000_000,
                instructor_ids[0] if instructor_ids else None,
            )
            now = datetime.now(UTC)
            session_id = await conn.fetchval(
                "INSERT INTO live_sessions (cohort_id, title, starts_at, ends_at, state) "
                "VALUES ($1, $2, $3, $4, 'live') RETURNING id",
                cohort_id,
                "Load session",
                now - timedelta(minutes=1),
                now + timedelta(hours=2),
            )
    finally:
        await conn.close()
    if redis_url:
        redis = aioredis.Redis.from_url(redis_url)
        try:
            await register(redis, cohort_id, session_id, "live")
        finally:
            await redis.aclose()
    return Fixture(
        api_url,
        gateway_url,
        cohort_id,
        session_id,
        quiz_id,
        lesson_ids,
        student_ids,
        instructor_ids,
    )


def create_sync(*args: object, **kwargs: object) -> Fixture:
    return asyncio.run(create(*args, **kwargs))  # type: ignore[arg-type]
