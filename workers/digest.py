"""The daily digest email: a user's unread notifications, at most one email per local day.

Opt-in per user (``notification_settings.digest``). Guarantees:

* **At most one per user and local day.** The email's idempotency key is
  ``digest:<user>:<local date>`` (the date in the user's time zone when it became due), so
  however often the job is enqueued, redelivered or retried, :func:`workers.email.deliver`
  sends it once (same ``email_deliveries`` rules as notification emails).
* **Due once the local time passes** ``digest_time`` and the user has unread notifications
  shown in-app (hidden ones, of kinds turned off in-app, are not in it). A day without unread
  notifications sends nothing; a digest that became due later that day is sent then.
* **Quiet hours delay it** to the end of the window, under the key of the day it became due.
* **Lost jobs are re-enqueued**: the ``digests`` scheduled job (:func:`due_digests`, every
  scheduler tick) enqueues every due digest that has no delivery yet, each at most once per
  :data:`REENQUEUE_S` (so a waiting digest is not enqueued every tick).

The email lists the newest :data:`DIGEST_ITEMS` unread notifications and says how many more.
"""

from __future__ import annotations

import html
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import msgspec

from workers.context import WorkerContext
from workers.email import Rendered, defer_if_quiet, deliver
from workers.jobs import PermanentError, enqueue_at_most_every, job, job_payload
from workers.quiet_hours import local_date, local_time

QUEUE = "digest"
DIGEST_ITEMS = 20
#: A due digest without a delivery is enqueued again at most this often.
REENQUEUE_S = 600


class _DigestJob(msgspec.Struct):
    user_id: int
    date: date


def digest_key(user_id: int, day: date) -> str:
    return f"digest:{user_id}:{day.isoformat()}"


def due_date(now: datetime, digest_time: Any, tz: str) -> date | None:
    """The local date whose digest is due at ``now``, or None before ``digest_time``."""
    return local_date(now, tz) if local_time(now, tz) >= digest_time else None


def render_digest(display_name: str, items: list[asyncpg.Record], unread: int) -> Rendered:
    """Subject, text and HTML of a digest listing ``items`` of ``unread`` notifications."""
    subject = f"Your Lectern digest: {unread} unread notification{'s' * (unread != 1)}"
    more = unread - len(items)
    lines = [f"- {r['title']} ({r['created_at']:%Y-%m-%d %H:%M} UTC)" for r in items]
    if more > 0:
        lines.append(f"... and {more} more.")
    footer = (
        "You receive this daily digest because you turned it on in your notification "
        "settings; you can turn it off there."
    )
    text = f"Hi {display_name},\n\n{subject}:\n\n" + "\n".join(lines) + f"\n\n-- \n{footer}\n"
    entries = "".join(
        f"<li>{html.escape(r['title'])} <small>({r['created_at']:%Y-%m-%d %H:%M} UTC)</small></li>"
        for r in items
    )
    tail = f"<p>… and {more} more.</p>" if more > 0 else ""
    html_body = (
        '<!doctype html><html><body style="font-family: sans-serif">'
        f"<p>Hi {html.escape(display_name)},</p><h2>{html.escape(subject)}</h2>"
        f"<ul>{entries}</ul>{tail}"
        f'<hr><p style="color: #666; font-size: small">{html.escape(footer)}</p>'
        "</body></html>"
    )
    return Rendered(subject=subject, text=text, html=html_body)


_LOAD = """
SELECT u.email, u.display_name, s.digest, s.quiet_start, s.quiet_end, s.time_zone
FROM notification_settings s JOIN users u ON u.id = s.user_id
WHERE s.user_id = $1
"""

_UNREAD = """
SELECT id, title, created_at FROM notifications
WHERE user_id = $1 AND read_at IS NULL AND NOT hidden
ORDER BY id DESC LIMIT $2
"""


@job(QUEUE, timeout_s=120)
async def send_digest(ctx: WorkerContext, payload: dict[str, Any]) -> None:
    """Send one user's digest for one local day, at most once (see the module docstring)."""
    task = job_payload(payload, _DigestJob, strict=False)
    if not ctx.settings.smtp_url:
        raise PermanentError("no smtp_url configured")
    assert ctx.db is not None
    row = await ctx.db.fetchrow(_LOAD, task.user_id)
    if row is None or not row["digest"]:
        return  # opted out since it was enqueued
    key = digest_key(task.user_id, task.date)
    if await defer_if_quiet(ctx, QUEUE, payload, key, row):
        return
    done = await ctx.db.fetchval(
        "SELECT status <> 'queued' FROM email_deliveries WHERE idempotency_key = $1", key
    )
    if done:
        return
    items = await ctx.db.fetch(_UNREAD, task.user_id, DIGEST_ITEMS)
    if not items:
        return  # read everything meanwhile: nothing to digest
    unread = await ctx.db.fetchval(
        "SELECT count(*) FROM notifications WHERE user_id = $1 AND read_at IS NULL AND NOT hidden",
        task.user_id,
    )
    await deliver(
        ctx,
        key=key,
        to_addr=row["email"],
        to_name=row["display_name"],
        content=render_digest(row["display_name"], list(items), int(unread)),
        user_id=task.user_id,
    )


async def due_digests(ctx: WorkerContext, now: datetime | None = None) -> int:
    """Enqueue the digest of every opted-in user whose digest is due at ``now``, who has unread
    notifications and no delivery for the day yet; returns how many were enqueued."""
    assert ctx.db is not None
    now = datetime.now(UTC) if now is None else now
    users = await ctx.db.fetch(
        "SELECT user_id, time_zone, digest_time FROM notification_settings WHERE digest"
    )
    due: dict[str, tuple[int, date]] = {}
    for r in users:
        day = due_date(now, r["digest_time"], r["time_zone"])
        if day is not None:
            due[digest_key(r["user_id"], day)] = (r["user_id"], day)
    if not due:
        return 0
    sent = await ctx.db.fetch(
        "SELECT idempotency_key FROM email_deliveries WHERE idempotency_key = ANY($1::text[])",
        list(due),
    )
    for r in sent:
        due.pop(r["idempotency_key"], None)
    with_unread = {
        r["user_id"]
        for r in await ctx.db.fetch(
            "SELECT DISTINCT user_id FROM notifications WHERE user_id = ANY($1::bigint[])"
            " AND read_at IS NULL AND NOT hidden",
            [u for u, _ in due.values()],
        )
    }
    payloads = [
        (key, {"user_id": user, "date": day.isoformat()})
        for key, (user, day) in due.items()
        if user in with_unread
    ]
    return await enqueue_at_most_every(ctx.redis, QUEUE, payloads, REENQUEUE_S)
