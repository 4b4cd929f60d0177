"""Course certificates: milestones unlocked by lesson completions, and the certificate.

:func:`unlock` runs inside the completion's transaction (:func:`workers.progress.complete_lesson`,
which holds the student's enrollment row locked): it stores every milestone (25, 50, 75, 100 %)
the student's progress has reached and that is not stored yet, with ``unlocked_at`` = now, and
at 100 % issues the certificate. Each newly unlocked milestone creates one notification (kind
``certificate.milestone``, dedupe key ``{cohort}:{milestone}``), so it reaches the bell once.
Milestones are never taken back: a lesson added later lowers the percentage, not what was
earned; one deleted may complete a milestone, which the student's next completion unlocks.
After the commit, :func:`send_emails` queues the emails of those notifications (per the
student's email preference); it may run any number of times, as only unsent ones are queued.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg
import msgspec
import redis.asyncio as aioredis

from workers import notify

MILESTONES = (25, 50, 75, 100)
NOTIFICATION_KIND = "certificate.milestone"


class Milestone(msgspec.Struct):
    milestone: int
    unlocked: bool
    unlocked_at: datetime | None


class Certificate(msgspec.Struct):
    code: str
    issued_at: datetime
    student_name: str
    cohort_title: str


class CertificateProgress(msgspec.Struct):
    """``GET /api/v1/cohorts/{id}/certificate``: the caller's milestones (all four, unlocked or
    not) and certificate (``None`` until the course is complete)."""

    cohort_id: int
    milestones: list[Milestone]
    certificate: Certificate | None


def reached(done: int, total: int) -> list[int]:
    """Milestones ``m`` with ``m% <= done/total`` (exact integer arithmetic)."""
    return [m for m in MILESTONES if total and m * total <= done * 100]


async def unlock(
    conn: asyncpg.Connection, user_id: int, cohort_id: int, done: int, total: int
) -> list[int]:
    """Store the milestones reached and not yet stored; returns them, ascending. Must run in
    the completion's transaction."""
    rows = await conn.fetch(
        "INSERT INTO certificate_milestones (user_id, cohort_id, milestone)"
        " SELECT $1, $2, m FROM unnest($3::int[]) AS m"
        " ON CONFLICT DO NOTHING RETURNING milestone",
        user_id,
        cohort_id,
        reached(done, total),
    )
    new = sorted(int(r["milestone"]) for r in rows)
    if not new:
        return []
    title = await conn.fetchval("SELECT title FROM cohorts WHERE id = $1", cohort_id)
    for m in new:
        complete = m == 100
        if complete:
            await conn.execute(
                "INSERT INTO certificates (user_id, cohort_id) VALUES ($1, $2)"
                " ON CONFLICT DO NOTHING",
                user_id,
                cohort_id,
            )
        await notify.create_notifications(
            conn,
            [user_id],
            kind=NOTIFICATION_KIND,
            dedupe_key=f"{cohort_id}:{m}",
            title=(
                f"Course complete: your certificate for {title} is ready"
                if complete
                else f"Milestone: {m}% of {title} done"
            ),
            data={"cohort_id": cohort_id, "milestone": m},
        )
    return new


async def progress_of(
    conn: asyncpg.Connection, user_id: int, cohort_id: int
) -> CertificateProgress:
    rows = await conn.fetch(
        "SELECT milestone, unlocked_at FROM certificate_milestones"
        " WHERE user_id = $1 AND cohort_id = $2",
        user_id,
        cohort_id,
    )
    unlocked = {int(r["milestone"]): r["unlocked_at"] for r in rows}
    cert = await conn.fetchrow(
        "SELECT c.code, c.issued_at, u.display_name AS student_name, k.title AS cohort_title"
        " FROM certificates c JOIN users u ON u.id = c.user_id JOIN cohorts k ON k.id = c.cohort_id"
        " WHERE c.user_id = $1 AND c.cohort_id = $2",
        user_id,
        cohort_id,
    )
    return CertificateProgress(
        cohort_id=cohort_id,
        milestones=[Milestone(m, m in unlocked, unlocked.get(m)) for m in MILESTONES],
        certificate=Certificate(**dict(cert)) if cert else None,
    )


async def send_emails(
    db: asyncpg.Pool | asyncpg.Connection, redis: aioredis.Redis, user_id: int, cohort_id: int
) -> int:
    """Queue the email of every milestone notification of the student in the cohort that has
    none sent yet (after the completion committed); returns how many were queued."""
    queued = 0
    for m in MILESTONES:
        queued += await notify.enqueue_emails(
            db, redis, [user_id], kind=NOTIFICATION_KIND, dedupe_key=f"{cohort_id}:{m}"
        )
    return queued
