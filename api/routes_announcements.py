"""Cohort announcements.

Staff of a cohort post an announcement: the row and its ``announcement.new`` event on
``cohort:{id}`` (for everyone connected) commit together; after the commit the ``announce``
job (:mod:`workers.notify`) gives every member a notification (``notification.new`` on
``user:{id}``) and an email. If that job cannot be enqueued (Redis down), the scheduler's sweep
enqueues it later, so no member is left out. Members and staff list a cohort's announcements,
newest first, paged with ``before``.
"""

from __future__ import annotations

import logging
from typing import Annotated

import msgspec
from aiohttp import web

from api import errors
from api.deps import body as read_body
from api.deps import (
    current_user,
    path_int,
    query_int,
    require_member,
    require_staff,
    user_id,
)
from api.openapi import Routes
from api.responses import json_response
from api.schemas import Title
from api.state import DB, REDIS
from config import redisconn
from config.topics import cohort_topic
from workers import events
from workers.events import AnnouncementOut
from workers.jobs import enqueue
from workers.outbox_write import emit

log = logging.getLogger("lectern.api.announcements")

MAX_BODY_CHARS = 20_000
DEFAULT_PAGE = 20
MAX_PAGE = 100


class AnnouncementIn(msgspec.Struct, kw_only=True):
    title: Title
    body: Annotated[str, msgspec.Meta(max_length=MAX_BODY_CHARS)] = ""


_SELECT = (
    "SELECT a.id, a.cohort_id, a.author_id, u.display_name AS author_name, a.title, a.body,"
    " a.created_at FROM announcements a LEFT JOIN users u ON u.id = a.author_id"
)


async def create_announcement(request: web.Request) -> web.Response:
    claims = await current_user(request)
    cohort_id = path_int(request)
    require_staff(claims, cohort_id)
    data = await read_body(request, AnnouncementIn)
    title = data.title.strip()
    if not title:
        raise errors.bad_request("the title is blank", {"field": "title"}, "invalid_field")
    async with request.app[DB].acquire() as conn, conn.transaction():
        if await conn.fetchval("SELECT 1 FROM cohorts WHERE id = $1", cohort_id) is None:
            raise errors.not_found(f"cohort {cohort_id} does not exist")
        new_id = await conn.fetchval(
            "INSERT INTO announcements (cohort_id, author_id, title, body)"
            " VALUES ($1, $2, $3, $4) RETURNING id",
            cohort_id,
            user_id(claims),
            title,
            data.body,
        )
        row = await conn.fetchrow(f"{_SELECT} WHERE a.id = $1", new_id)
        out = AnnouncementOut(**dict(row))
        await emit(conn, events.to(cohort_topic(cohort_id), out))
    try:
        await enqueue(request.app[REDIS], "announce", {"announcement_id": out.id})
    except redisconn.ERRORS as exc:
        log.warning(
            "announcement fan-out not enqueued; the sweep will pick it up",
            extra={"announcement_id": out.id, "error": repr(exc)},
        )
    return json_response(out, 201)


async def list_announcements(request: web.Request) -> web.Response:
    claims = await current_user(request)
    cohort_id = path_int(request)
    require_member(claims, cohort_id)
    limit = min(query_int(request, "limit", DEFAULT_PAGE, lo=1) or DEFAULT_PAGE, MAX_PAGE)
    before = query_int(request, "before", None, lo=1)
    rows = await request.app[DB].fetch(
        f"{_SELECT} WHERE a.cohort_id = $1 AND ($2::bigint IS NULL OR a.id < $2)"
        " ORDER BY a.id DESC LIMIT $3",
        cohort_id,
        before,
        limit,
    )
    return json_response([AnnouncementOut(**dict(r)) for r in rows])


async def get_announcement(request: web.Request) -> web.Response:
    claims = await current_user(request)
    announcement_id = path_int(request)
    row = await request.app[DB].fetchrow(f"{_SELECT} WHERE a.id = $1", announcement_id)
    if row is None:
        raise errors.not_found(f"announcement {announcement_id} does not exist")
    require_member(claims, row["cohort_id"])
    return json_response(AnnouncementOut(**dict(row)))


def setup(app: web.Application) -> None:
    r = Routes(app, "announcements")
    r.post(
        "/api/v1/cohorts/{id}/announcements",
        create_announcement,
        summary="Post an announcement to a cohort (live event, notifications, emails)",
        auth="staff",
        request=AnnouncementIn,
        response=AnnouncementOut,
        status=201,
    )
    r.get(
        "/api/v1/cohorts/{id}/announcements",
        list_announcements,
        summary="A cohort's announcements, newest first",
        auth="member",
        response=list[AnnouncementOut],
        query=(("limit", "integer"), ("before", "integer")),
    )
    r.get(
        "/api/v1/announcements/{id}",
        get_announcement,
        summary="One announcement",
        auth="member",
        response=AnnouncementOut,
    )
