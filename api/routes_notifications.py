"""A user's notifications and email preferences.

* ``GET /api/v1/notifications`` lists the caller's notifications, newest first, paged with
  ``before`` (the last id of the previous page, given back as ``next_before``) and ``limit``
  (1-100, default 20); ``unread=true`` keeps the unread ones. ``unread_count`` is always the
  total of unread notifications.
* Marking one or all read emits ``notification.read`` to ``user:{id}`` (``{"ids": [...],
  "all": bool, "unread_count": int}``) so the user's other tabs update their badge.
* Preferences: email on or off per notification kind (:data:`workers.notify.KINDS`); a kind
  without a stored row is on.

Notifications are created by the workers (:mod:`workers.notify`), never through the API.
"""

from __future__ import annotations

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
from workers.notify import KIND_LABELS, KINDS, NotificationOut, notification_from_row
from workers.outbox_write import emit

DEFAULT_PAGE = 20
MAX_PAGE = 100

_SELECT = "SELECT id, kind, title, body, data::text AS data, created_at, read_at FROM notifications"


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


class PrefsOut(msgspec.Struct, kw_only=True):
    prefs: list[Pref]


class PrefIn(msgspec.Struct, kw_only=True):
    kind: str
    email: bool


class PrefsIn(msgspec.Struct, kw_only=True):
    """The kinds to change; kinds left out keep their setting."""

    prefs: Annotated[list[PrefIn], msgspec.Meta(max_length=50)]


async def _unread(conn: Any, uid: int) -> int:
    return int(
        await conn.fetchval(
            "SELECT count(*) FROM notifications WHERE user_id = $1 AND read_at IS NULL", uid
        )
    )


async def list_notifications(request: web.Request) -> web.Response:
    uid = user_id(await current_user(request))
    limit = min(query_int(request, "limit", DEFAULT_PAGE, lo=1) or DEFAULT_PAGE, MAX_PAGE)
    before = query_int(request, "before", None, lo=1)
    unread_only = request.query.get("unread", "").lower() in ("1", "true", "yes")
    pool = request.app[DB]
    rows = await pool.fetch(
        f"{_SELECT} WHERE user_id = $1 AND ($2::bigint IS NULL OR id < $2)"
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
            " WHERE id = $1 AND user_id = $2 AND read_at IS NULL RETURNING id",
            notification_id,
            uid,
        )
        row = await conn.fetchrow(f"{_SELECT} WHERE id = $1 AND user_id = $2", notification_id, uid)
        if row is None:
            raise errors.not_found(f"notification {notification_id} does not exist")
        if changed is not None:
            unread = await _unread(conn, uid)
            await emit(
                conn,
                user_topic(uid),
                "notification.read",
                {"ids": [notification_id], "all": False, "unread_count": unread},
            )
    return json_response(notification_from_row(row))


async def mark_all_read(request: web.Request) -> web.Response:
    uid = user_id(await current_user(request))
    async with request.app[DB].acquire() as conn, conn.transaction():
        result = await conn.execute(
            "UPDATE notifications SET read_at = now() WHERE user_id = $1 AND read_at IS NULL",
            uid,
        )
        updated = int(result.split()[-1])
        if updated:
            await emit(
                conn,
                user_topic(uid),
                "notification.read",
                {"ids": [], "all": True, "unread_count": 0},
            )
    return json_response(ReadAllOut(updated=updated, unread_count=0))


async def _prefs(conn: Any, uid: int) -> PrefsOut:
    rows = await conn.fetch("SELECT kind, email FROM notification_prefs WHERE user_id = $1", uid)
    stored = {r["kind"]: r["email"] for r in rows}
    return PrefsOut(
        prefs=[Pref(kind=k, label=KIND_LABELS[k], email=stored.get(k, True)) for k in KINDS]
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
            "INSERT INTO notification_prefs (user_id, kind, email) VALUES ($1, $2, $3)"
            " ON CONFLICT (user_id, kind) DO UPDATE SET email = excluded.email",
            [(uid, p.kind, p.email) for p in data.prefs],
        )
        out = await _prefs(conn, uid)
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
        summary="Email on or off, per notification kind",
        response=PrefsOut,
    )
    r.put(
        "/api/v1/me/notification-prefs",
        put_prefs,
        summary="Change email preferences",
        request=PrefsIn,
        response=PrefsOut,
    )
