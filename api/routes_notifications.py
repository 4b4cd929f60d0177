"""A user's notifications and email preferences.

* ``GET /api/v1/notifications`` lists the caller's notifications, newest first, paged with
  ``before`` (the last id of the previous page, given back as ``next_before``) and ``limit``
  (1-100, default 20); ``unread=true`` keeps the unread ones. ``unread_count`` is always the
  total of unread notifications.
* Marking one or all read emits ``notification.read`` to ``user:{id}`` (``{"ids": [...],
  "all": bool, "unread_count": int}``) so the user's other tabs update their badge.
* Preferences: in-app and email, each on or off per notification kind
  (:data:`workers.notify.KINDS`); a kind without a stored row is on for both. A kind switched
  off in-app still stores its notifications, hidden: they are never listed, counted, sent as
  ``notification.new`` or put in a digest (``api/migrations/0014_notification_channels.sql``).
* Settings: quiet hours (local ``HH:MM`` start and end in an IANA time zone; emails due inside
  are delayed to the end of the window) and the opt-in daily digest email with its local time.

Notifications are created by the workers (:mod:`workers.notify`), never through the API.
"""

from __future__ import annotations

from datetime import time
from typing import Annotated, Any

import msgspec
from aiohttp import web

from api import errors
from api.deps import body as read_body
from api.deps import current_user, path_int, query_int, user_id
from api.openapi import Routes
from api.responses import json_response
from api.state import DB
from config.topics import user_topic
from workers import events
from workers.notify import KIND_LABELS, KINDS, NotificationOut, notification_from_row
from workers.outbox_write import emit
from workers.quiet_hours import MAX_ZONE_LEN, valid_zone

DEFAULT_PAGE = 20
MAX_PAGE = 100

_SELECT = "SELECT id, kind, title, body, data::text AS data, created_at, read_at FROM notifications"
# Every query below reads only rows with ``NOT hidden``: hidden rows (a kind switched off
# in-app) exist only for the email channel and idempotency.


class NotificationPage(msgspec.Struct, kw_only=True):
    items: list[NotificationOut]
    unread_count: int
    next_before: int | None


class ReadAllOut(msgspec.Struct, kw_only=True):
    updated: int
    unread_count: int


class Pref(msgspec.Struct, kw_only=True):
    kind: str
    label: str
    email: bool
    in_app: bool


class PrefsOut(msgspec.Struct, kw_only=True):
    prefs: list[Pref]


class PrefIn(msgspec.Struct, kw_only=True):
    """A channel left out keeps its setting."""

    kind: Annotated[str, msgspec.Meta(max_length=64)]
    email: bool | None = None
    in_app: bool | None = None


class PrefsIn(msgspec.Struct, kw_only=True):
    """The kinds to change; kinds left out keep their setting."""

    prefs: Annotated[list[PrefIn], msgspec.Meta(max_length=50)]


async def _unread(conn: Any, uid: int) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM notifications"
            " WHERE user_id = $1 AND read_at IS NULL AND NOT hidden",
            uid,
        )
    )


async def list_notifications(request: web.Request) -> web.Response:
    uid = user_id(await current_user(request))
    limit = min(query_int(request, "limit", DEFAULT_PAGE, lo=1) or DEFAULT_PAGE, MAX_PAGE)
    before = query_int(request, "before", None, lo=1)
    unread_only = request.query.get("unread", "").lower() in ("1", "true", "yes")
    pool = request.app[DB]
    rows = await pool.fetch(
        f"{_SELECT} WHERE user_id = $1 AND NOT hidden AND ($2::bigint IS NULL OR id < $2)"
        " AND (NOT $3 OR read_at IS NULL) ORDER BY id DESC LIMIT $4",
        uid,
        before,
        unread_only,
        limit + 1,
    )
    more = len(rows) > limit
    items = [notification_from_row(r) for r in rows[:limit]]
    return json_response(
        NotificationPage(
            items=items,
            unread_count=await _unread(pool, uid),
            next_before=items[-1].id if more and items else None,
        )
    )


async def mark_read(request: web.Request) -> web.Response:
    uid = user_id(await current_user(request))
    notification_id = path_int(request)
    async with request.app[DB].acquire() as conn, conn.transaction():
        changed = await conn.fetchval(
            "UPDATE notifications SET read_at = now()"
            " WHERE id = $1 AND user_id = $2 AND read_at IS NULL AND NOT hidden RETURNING id",
            notification_id,
            uid,
        )
        row = await conn.fetchrow(
            f"{_SELECT} WHERE id = $1 AND user_id = $2 AND NOT hidden", notification_id, uid
        )
        if row is None:
            raise errors.not_found(f"notification {notification_id} does not exist")
        if changed is not None:
            unread = await _unread(conn, uid)
            read = events.NotificationRead(ids=[notification_id], all=False, unread_count=unread)
            await emit(conn, events.to(user_topic(uid), read))
    return json_response(notification_from_row(row))


async def mark_all_read(request: web.Request) -> web.Response:
    uid = user_id(await current_user(request))
    async with request.app[DB].acquire() as conn, conn.transaction():
        result = await conn.execute(
            "UPDATE notifications SET read_at = now()"
            " WHERE user_id = $1 AND read_at IS NULL AND NOT hidden",
            uid,
        )
        updated = int(result.split()[-1])
        if updated:
            read = events.NotificationRead(ids=[], all=True, unread_count=0)
            await emit(conn, events.to(user_topic(uid), read))
    return json_response(ReadAllOut(updated=updated, unread_count=0))


async def _prefs(conn: Any, uid: int) -> PrefsOut:
    rows = await conn.fetch(
        "SELECT kind, email, in_app FROM notification_prefs WHERE user_id = $1", uid
    )
    stored = {r["kind"]: (r["email"], r["in_app"]) for r in rows}
    return PrefsOut(
        prefs=[
            Pref(kind=k, label=KIND_LABELS[k], email=email, in_app=in_app)
            for k in KINDS
            for email, in_app in [stored.get(k, (True, True))]
        ]
    )


async def get_prefs(request: web.Request) -> web.Response:
    uid = user_id(await current_user(request))
    return json_response(await _prefs(request.app[DB], uid))


async def put_prefs(request: web.Request) -> web.Response:
    uid = user_id(await current_user(request))
    data = await read_body(request, PrefsIn)
    for i, pref in enumerate(data.prefs):
        if pref.kind not in KINDS:
            raise errors.bad_request(
                f"unknown notification kind {pref.kind[:64]!r}",
                {"field": f"prefs[{i}].kind", "kinds": list(KINDS)},
                "invalid_field",
            )
    async with request.app[DB].acquire() as conn, conn.transaction():
        await conn.executemany(
            "INSERT INTO notification_prefs AS p (user_id, kind, email, in_app)"
            " VALUES ($1, $2, coalesce($3, true), coalesce($4, true))"
            " ON CONFLICT (user_id, kind) DO UPDATE"
            " SET email = coalesce($3, p.email), in_app = coalesce($4, p.in_app)",
            [(uid, p.kind, p.email, p.in_app) for p in data.prefs],
        )
        out = await _prefs(conn, uid)
    return json_response(out)


# -- quiet hours and digest -------------------------------------------------------------------

#: A local wall-clock time, ``HH:MM`` (24 h).
LocalTime = Annotated[str, msgspec.Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]


class QuietHours(msgspec.Struct, kw_only=True):
    """``[start, end)`` in local time; ``start`` after ``end`` spans midnight."""

    start: LocalTime
    end: LocalTime


class SettingsOut(msgspec.Struct, kw_only=True):
    quiet_hours: QuietHours | None
    time_zone: str
    digest: bool
    digest_time: str


class SettingsIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Fields left out keep their value; ``quiet_hours: null`` removes quiet hours."""

    quiet_hours: QuietHours | msgspec.UnsetType | None = msgspec.UNSET
    time_zone: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ZONE_LEN)] | (
        msgspec.UnsetType
    ) = msgspec.UNSET
    digest: bool | msgspec.UnsetType = msgspec.UNSET
    digest_time: LocalTime | msgspec.UnsetType = msgspec.UNSET


_DEFAULT_SETTINGS = SettingsOut(
    quiet_hours=None, time_zone="UTC", digest=False, digest_time="08:00"
)


def _hhmm(value: time) -> str:
    return f"{value:%H:%M}"


def _parse_hhmm(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


async def _settings(conn: Any, uid: int) -> SettingsOut:
    row = await conn.fetchrow(
        "SELECT quiet_start, quiet_end, time_zone, digest, digest_time"
        " FROM notification_settings WHERE user_id = $1",
        uid,
    )
    if row is None:
        return _DEFAULT_SETTINGS
    quiet = None
    if row["quiet_start"] is not None:
        quiet = QuietHours(start=_hhmm(row["quiet_start"]), end=_hhmm(row["quiet_end"]))
    return SettingsOut(
        quiet_hours=quiet,
        time_zone=row["time_zone"],
        digest=row["digest"],
        digest_time=_hhmm(row["digest_time"]),
    )


async def get_settings(request: web.Request) -> web.Response:
    uid = user_id(await current_user(request))
    return json_response(await _settings(request.app[DB], uid))


async def put_settings(request: web.Request) -> web.Response:
    uid = user_id(await current_user(request))
    data = await read_body(request, SettingsIn)
    if isinstance(data.time_zone, str) and not valid_zone(data.time_zone):
        raise errors.bad_request(
            f"unknown time zone {data.time_zone!r} (an IANA name such as 'Europe/Paris')",
            {"field": "time_zone"},
            "invalid_field",
        )
    if isinstance(data.quiet_hours, QuietHours) and data.quiet_hours.start == data.quiet_hours.end:
        raise errors.bad_request(
            "quiet hours must start and end at different times",
            {"field": "quiet_hours.end"},
            "invalid_field",
        )
    async with request.app[DB].acquire() as conn, conn.transaction():
        now = await _settings(conn, uid)
        quiet = now.quiet_hours if data.quiet_hours is msgspec.UNSET else data.quiet_hours
        await conn.execute(
            "INSERT INTO notification_settings AS s"
            " (user_id, quiet_start, quiet_end, time_zone, digest, digest_time)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id) DO UPDATE SET"
            " quiet_start = $2, quiet_end = $3, time_zone = $4, digest = $5, digest_time = $6",
            uid,
            _parse_hhmm(quiet.start) if quiet else None,
            _parse_hhmm(quiet.end) if quiet else None,
            now.time_zone if data.time_zone is msgspec.UNSET else data.time_zone,
            now.digest if data.digest is msgspec.UNSET else data.digest,
            _parse_hhmm(now.digest_time if data.digest_time is msgspec.UNSET else data.digest_time),
        )
        out = await _settings(conn, uid)
    return json_response(out)


def setup(app: web.Application) -> None:
    r = Routes(app, "notifications")
    r.get(
        "/api/v1/notifications",
        list_notifications,
        summary="The caller's notifications, newest first",
        response=NotificationPage,
        query=(("unread", "boolean"), ("limit", "integer"), ("before", "integer")),
    )
    r.post(
        "/api/v1/notifications/read-all",
        mark_all_read,
        summary="Mark every notification read",
        response=ReadAllOut,
    )
    r.post(
        "/api/v1/notifications/{id}/read",
        mark_read,
        summary="Mark one notification read",
        response=NotificationOut,
    )
    r.get(
        "/api/v1/me/notification-prefs",
        get_prefs,
        summary="In-app and email on or off, per notification kind",
        response=PrefsOut,
    )
    r.put(
        "/api/v1/me/notification-prefs",
        put_prefs,
        summary="Change in-app and email preferences",
        request=PrefsIn,
        response=PrefsOut,
    )
    r.get(
        "/api/v1/me/notification-settings",
        get_settings,
        summary="Quiet hours, time zone and daily digest",
        response=SettingsOut,
    )
    r.put(
        "/api/v1/me/notification-settings",
        put_settings,
        summary="Change quiet hours, time zone or daily digest",
        request=SettingsIn,
        response=SettingsOut,
    )
