"""In-app notifications: creating them idempotently, and the fan-out jobs that create many.

A notification is a row of ``notifications`` plus a ``notification.new`` event on the
recipient's ``user:{id}`` topic (through the outbox, in the same transaction) plus an email job
(after the commit). Each channel follows the recipient's preference for the kind
(``notification_prefs``, no row: on): with in-app off the row is still stored but ``hidden``
(never listed, counted or put in a digest) and no ``notification.new`` is emitted, so the email
channel and the idempotency of the cause still work; with email off no email job is enqueued.
Creating one is idempotent: the row's unique ``(user_id, kind, dedupe_key)`` turns a repeat
into a no-op that emits nothing, and the key is derived from the cause (``submission:42``,
``announcement:7``, ``session:3``).

Email jobs are enqueued after the transaction commits, so a process that dies in between would
lose them; the jobs that create notifications therefore re-enqueue, on every delivery, the
emails of all the notifications of their cause that are not sent yet (:func:`enqueue_emails`).
The email job itself is idempotent (``workers.email``), so a repeat costs a lookup.

Jobs here:

* ``announce`` ``{"announcement_id": int}``: one ``announcement`` notification per member of
  the announcement's cohort, then their emails.
* ``reminder`` ``{"session_id": int}``: marks the live session reminded (``reminder_sent_at``,
  at most once), one ``session.reminder`` notification per member, then their emails.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import msgspec
import redis.asyncio as aioredis

from config.topics import user_topic
from workers import events
from workers.context import WorkerContext
from workers.events import NotificationOut
from workers.jobs import enqueue, job, job_payload
from workers.outbox_write import emit_many

#: The kinds of notification, each with its own in-app and email preference
#: (``notification_prefs``).
KINDS: tuple[str, ...] = (
    "quiz.graded",
    "feedback.posted",
    "announcement",
    "session.reminder",
    "student.struggling",
    "certificate.milestone",
)
KIND_LABELS: dict[str, str] = {
    "quiz.graded": "A quiz of yours was graded",
    "feedback.posted": "An instructor reviewed your work",
    "announcement": "Announcements in your cohorts",
    "session.reminder": "Live sessions about to start",
    "student.struggling": "A student of yours may need help (staff)",
    "certificate.milestone": "Course milestones and your certificate",
}

EMAIL_QUEUE = "email"

_json = msgspec.json.Encoder()


def notification_from_row(row: asyncpg.Record) -> NotificationOut:
    data = row["data"]
    return NotificationOut(
        id=row["id"],
        kind=row["kind"],
        title=row["title"],
        body=row["body"],
        data=msgspec.json.decode(data) if isinstance(data, str) else dict(data or {}),
        created_at=row["created_at"],
        read=row["read_at"] is not None,
        read_at=row["read_at"],
    )


_INSERT = """
INSERT INTO notifications (user_id, kind, dedupe_key, title, body, data, hidden)
SELECT t.u, $2, $3, $4, $5, $6::jsonb, NOT coalesce(p.in_app, true)
FROM unnest($1::bigint[]) AS t(u)
LEFT JOIN notification_prefs p ON p.user_id = t.u AND p.kind = $2
ON CONFLICT (user_id, kind, dedupe_key) DO NOTHING
RETURNING id, user_id, kind, title, body, data::text AS data, created_at, read_at, hidden
"""


async def create_notifications(
    conn: asyncpg.Connection,
    user_ids: Sequence[int],
    *,
    kind: str,
    dedupe_key: str,
    title: str,
    body: str = "",
    data: dict[str, Any] | None = None,
) -> list[int]:
    """Create one notification per user (skipping those that exist) with their
    ``notification.new`` events, except for recipients who turned the kind off in-app (their
    row is stored hidden, without an event); returns the new ids, hidden ones included. Must
    run inside a transaction."""
    if kind not in KINDS:
        raise ValueError(f"unknown notification kind {kind!r}")
    if not user_ids:
        return []
    rows = await conn.fetch(
        _INSERT,
        list(user_ids),
        kind,
        dedupe_key,
        title,
        body,
        _json.encode(data or {}).decode(),
    )
    rows = sorted(rows, key=lambda r: r["id"])
    await emit_many(
        conn,
        [
            events.to(user_topic(r["user_id"]), notification_from_row(r))
            for r in rows
            if not r["hidden"]
        ],
    )
    return [r["id"] for r in rows]


_UNSENT = """
SELECT n.id FROM notifications n
LEFT JOIN email_deliveries d ON d.notification_id = n.id
LEFT JOIN notification_prefs p ON p.user_id = n.user_id AND p.kind = n.kind
WHERE n.user_id = ANY($1::bigint[]) AND n.kind = $2 AND n.dedupe_key = $3
  AND (d.status IS NULL OR d.status = 'queued') AND coalesce(p.email, true)
ORDER BY n.id
"""


async def enqueue_emails(
    db: asyncpg.Pool | asyncpg.Connection,
    redis: aioredis.Redis,
    user_ids: Sequence[int],
    *,
    kind: str,
    dedupe_key: str,
) -> int:
    """Enqueue an email job for each notification of the cause that has no email sent yet and
    whose recipient wants email for ``kind``; returns how many were enqueued."""
    if not user_ids:
        return 0
    rows = await db.fetch(_UNSENT, list(user_ids), kind, dedupe_key)
    if not rows:
        return 0
    pipe = redis.pipeline(transaction=False)
    for row in rows:
        await enqueue(pipe, EMAIL_QUEUE, {"notification_id": row["id"]})
    await pipe.execute()
    return len(rows)


class _AnnounceJob(msgspec.Struct):
    announcement_id: int


class _ReminderJob(msgspec.Struct):
    session_id: int


async def _members(conn: asyncpg.Connection, cohort_id: int) -> list[int]:
    rows = await conn.fetch(
        "SELECT user_id FROM enrollments WHERE cohort_id = $1 AND kind = 'member' ORDER BY user_id",
        cohort_id,
    )
    return [r["user_id"] for r in rows]


def _excerpt(text: str, limit: int = 280) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


@job("announce")
async def announce(ctx: WorkerContext, payload: dict[str, Any]) -> None:
    """Fan an announcement out to the members of its cohort (idempotent, converging)."""
    task: _AnnounceJob = job_payload(payload, _AnnounceJob)
    assert ctx.db is not None
    key = f"announcement:{task.announcement_id}"
    async with ctx.db.acquire() as conn:
        async with conn.transaction():
            row = await conn.fetchrow(
                "SELECT a.id, a.cohort_id, a.title, a.body, c.title AS cohort_title "
                "FROM announcements a JOIN cohorts c ON c.id = a.cohort_id WHERE a.id = $1",
                task.announcement_id,
            )
            if row is None:
                return  # deleted since: nothing to tell
            members = await _members(conn, row["cohort_id"])
            await create_notifications(
                conn,
                members,
                kind="announcement",
                dedupe_key=key,
                title=f"{row['cohort_title']}: {row['title']}",
                body=row["body"],
                data={
                    "announcement_id": row["id"],
                    "cohort_id": row["cohort_id"],
                    "excerpt": _excerpt(row["body"]),
                },
            )
        await enqueue_emails(conn, ctx.redis, members, kind="announcement", dedupe_key=key)


@job("reminder")
async def remind(ctx: WorkerContext, payload: dict[str, Any]) -> None:
    """Remind the members of a live session's cohort that it starts soon, once per session."""
    task: _ReminderJob = job_payload(payload, _ReminderJob)
    assert ctx.db is not None
    key = f"session:{task.session_id}"
    async with ctx.db.acquire() as conn:
        async with conn.transaction():
            row = await conn.fetchrow(
                "UPDATE live_sessions SET reminder_sent_at = now() "
                "WHERE id = $1 AND reminder_sent_at IS NULL AND state = 'scheduled' "
                "RETURNING id, cohort_id, title, starts_at",
                task.session_id,
            )
            if row is not None:
                cohort_id = row["cohort_id"]
                members = await _members(conn, cohort_id)
                starts = row["starts_at"]
                await create_notifications(
                    conn,
                    members,
                    kind="session.reminder",
                    dedupe_key=key,
                    title=f"Starting soon: {row['title']}",
                    body=(
                        f"The live session \u201c{row['title']}\u201d starts at "
                        f"{starts:%Y-%m-%d %H:%M} UTC."
                    ),
                    data={
                        "session_id": row["id"],
                        "cohort_id": cohort_id,
                        "starts_at": starts.isoformat(),
                    },
                )
        if row is None:
            # Reminded before (maybe by a delivery that died before enqueueing the emails).
            cohort_id = await conn.fetchval(
                "SELECT cohort_id FROM live_sessions WHERE id = $1", task.session_id
            )
            if cohort_id is None:
                return
            members = await _members(conn, cohort_id)
        await enqueue_emails(conn, ctx.redis, members, kind="session.reminder", dedupe_key=key)
