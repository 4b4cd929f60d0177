"""The scheduler's struggling-student job on the real schema: one staff notification per
student and rule, never repeated, with the email only for staff who want it."""

from __future__ import annotations

import msgspec

from config import keys
from config.settings import Settings
from tests.workers.helpers import Workers, make_cohort, make_user
from workers import scheduler


async def test_each_alert_notifies_each_staff_member_once(wsettings: Settings) -> None:
    async with Workers(wsettings) as w:
        db = w.ctx.db
        assert db is not None
        idle = await make_user(db, name="Ida Idle")
        busy = await make_user(db)
        teacher, assistant = await make_user(db, "instructor"), await make_user(db, "instructor")
        cohort = await make_cohort(db, idle, busy, staff=(teacher, assistant))
        await db.execute(
            "UPDATE enrollments SET created_at = now() - interval '10 days'"
            " WHERE cohort_id = $1 AND user_id = $2",
            cohort,
            idle,
        )
        await db.execute(
            "INSERT INTO notification_prefs (user_id, kind, email) VALUES ($1, $2, false)",
            assistant,
            "student.struggling",
        )
        for _ in range(2):  # a second run raises nothing new
            assert await scheduler.notify_struggling(w.ctx) >= 1
        rows = await db.fetch(
            "SELECT user_id, title, body, data->>'rule' AS rule FROM notifications"
            " WHERE kind = 'student.struggling' AND data->>'cohort_id' = $1::text"
            " ORDER BY user_id",
            str(cohort),
        )
        assert [(r["user_id"], r["rule"]) for r in rows] == [
            (teacher, "inactive"),
            (assistant, "inactive"),
        ]
        assert rows[0]["title"].startswith("Ida Idle may need help")
        assert rows[0]["body"] == "No activity for 10 days."
        # Email jobs: the teacher's only (the assistant turned them off).
        jobs_ = await w.ctx.redis.xrange(keys.job_stream("email"))
        ids = await db.fetch(
            "SELECT id, user_id FROM notifications WHERE kind = 'student.struggling'"
            " AND data->>'cohort_id' = $1::text",
            str(cohort),
        )
        by_id = {r["id"]: r["user_id"] for r in ids}
        emailed = [
            by_id[msgspec.json.decode(f[b"p"])["notification_id"]]
            for _, f in jobs_
            if msgspec.json.decode(f[b"p"])["notification_id"] in by_id
        ]
        # Re-enqueued on each run until sent (the email job itself sends once).
        assert set(emailed) == {teacher}
