"""Quiet hours and the daily digest through real Redis, PostgreSQL and SMTP (aiosmtpd)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from config import keys
from config.servers import SmtpCatcher
from config.settings import Settings
from tests.workers.helpers import Workers, eventually, make_user, parts, received_by, steady
from tests.workers.helpers import user_email as email_of
from workers import digest, job_runner, jobs
from workers.context import WorkerContext
from workers.notify import create_notifications
from workers.scheduler import run_scheduler


async def notify(ctx: WorkerContext, user: int, title: str, kind: str = "quiz.graded") -> int:
    assert ctx.db is not None
    async with ctx.db.acquire() as conn, conn.transaction():
        ids = await create_notifications(
            conn, [user], kind=kind, dedupe_key=uuid.uuid4().hex, title=title
        )
    return ids[0]


async def waiting(ctx: WorkerContext, queue: str, payload: dict[str, Any]) -> list[float]:
    """Due times (ms) of the scheduled entries of ``queue`` carrying ``payload``."""
    entries = await ctx.redis.zrange(keys.job_delayed_key(queue), 0, -1, withscores=True)
    return [score for member, score in entries if json.loads(json.loads(member)["p"]) == payload]


async def test_email_in_quiet_hours_is_sent_when_the_window_ends(
    wsettings: Settings, smtp: SmtpCatcher
) -> None:
    """Quiet until ``end``: the job is scheduled for ``end`` (repeats coalesce into that one
    entry), nothing is sent before it, and exactly one message is sent after it."""
    async with Workers(wsettings, lambda ctx: job_runner.run_jobs(ctx, queues=["email"])) as w:
        assert w.ctx.db is not None
        user = await make_user(w.ctx.db)
        address = await email_of(w.ctx.db, user)
        now = datetime.now(UTC)
        end = now + timedelta(seconds=6)  # room for a slow job pickup on a loaded machine
        # Due times are whole milliseconds, so an end with microseconds would be "reached" up
        # to 1 ms early (quiet hours are set in minutes in the product; keep the test exact).
        end = end.replace(microsecond=end.microsecond // 1000 * 1000)
        await w.ctx.db.execute(
            "INSERT INTO notification_settings (user_id, quiet_start, quiet_end, time_zone)"
            " VALUES ($1, $2, $3, 'UTC')",
            user,
            (now - timedelta(minutes=1)).time(),
            end.time(),
        )
        nid = await notify(w.ctx, user, "Graded at night")
        payload = {"notification_id": nid}
        for _ in range(3):
            await jobs.enqueue(w.ctx.redis, "email", payload)
        due = await eventually(lambda: waiting(w.ctx, "email", payload))
        end_ms = round(end.timestamp() * 1000)
        assert len(due) == 1 and end_ms <= due[0] < end_ms + 1000
        await eventually(lambda: received_by(smtp, address), within=12)
        # The server has the message before the job commits `sent` (same transaction, after
        # the server accepted it), so wait for the row rather than read it once.
        sent_at = await eventually(
            lambda: w.ctx.db.fetchval(
                "SELECT sent_at FROM email_deliveries WHERE notification_id = $1", nid
            )
        )
        assert sent_at >= end  # not a moment inside quiet hours
        await steady(lambda: len(received_by(smtp, address)), 1, 0.6)


async def test_daily_digest_lists_unread_in_app_notifications_once_a_day(
    wsettings: Settings, smtp: SmtpCatcher
) -> None:
    """The scheduler enqueues the digest of the opted-in user (due since 00:00 local): one email
    with the unread notifications shown in-app, none for a user who did not opt in, and no
    second one however often the job comes again."""
    async with Workers(wsettings, run_scheduler, job_runner.run_jobs) as w:
        db = w.ctx.db
        assert db is not None
        reader, other = await make_user(db, name="Reader <R>"), await make_user(db)
        await db.execute(
            "INSERT INTO notification_prefs (user_id, kind, in_app, email)"
            " VALUES ($1, 'session.reminder', false, false)",
            reader,
        )
        await notify(w.ctx, reader, "Unread A")
        await notify(w.ctx, reader, "Unread B", "announcement")
        read = await notify(w.ctx, reader, "Already read")
        await db.execute("UPDATE notifications SET read_at = now() WHERE id = $1", read)
        await notify(w.ctx, reader, "Hidden reminder", "session.reminder")
        await notify(w.ctx, other, "Not opted in")
        # Opting in last: the scheduler ticks meanwhile and must see all of the above.
        await db.execute(
            "INSERT INTO notification_settings (user_id, time_zone, digest, digest_time)"
            " VALUES ($1, 'UTC', true, '00:00'), ($2, 'UTC', false, '00:00')",
            reader,
            other,
        )

        address = await email_of(db, reader)
        (msg,) = await eventually(lambda: received_by(smtp, address), within=12)
        assert msg["Subject"] == "Your Lectern digest: 2 unread notifications"
        text = parts(msg)["text/plain"]
        assert "Unread A" in text and "Unread B" in text
        assert "Already read" not in text and "Hidden reminder" not in text
        assert "Reader &lt;R&gt;" in parts(msg)["text/html"]
        today = datetime.now(UTC).date()
        row = await eventually(
            lambda: db.fetchrow(
                "SELECT user_id, notification_id FROM email_deliveries"
                " WHERE idempotency_key = $1 AND status = 'sent'",
                digest.digest_key(reader, today),
            )
        )
        assert row["user_id"] == reader and row["notification_id"] is None

        assert await digest.due_digests(w.ctx) == 0  # the day's digest exists
        await jobs.enqueue(w.ctx.redis, "digest", {"user_id": reader, "date": today.isoformat()})
        await steady(lambda: len(received_by(smtp, address)), 1, 0.8)
        assert received_by(smtp, await email_of(db, other)) == []
