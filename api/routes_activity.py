"""The cohort activity feed and its privacy switch (rules in :mod:`workers.activity`).

* ``GET /api/v1/cohorts/{id}/activity?limit=30`` (members and staff): the cohort's privacy
  setting and its newest entries (1-100, newest first), each actor rendered with the current
  setting; an empty list while the feed is off.
* ``PUT /api/v1/cohorts/{id}/activity-settings`` ``{privacy: off|initials|names}`` (staff):
  changes the switch and announces it as ``activity.settings`` on ``cohort:{id}``, so open
  dashboards reload the feed with the new rendering.
"""

from __future__ import annotations

from typing import Literal

import msgspec
from aiohttp import web

from api import errors
from api.deps import body, current_user, path_int, query_int, require_member, require_staff
from api.openapi import Routes
from api.responses import json_response
from api.state import DB
from config.topics import cohort_topic
from workers import activity, events
from workers.outbox_write import emit

LIMIT_MAX = 100


class ActivityPage(msgspec.Struct, kw_only=True):
    privacy: str
    items: list[activity.ActivityOut]


class PrivacyIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    privacy: Literal["off", "initials", "names"]


class PrivacyOut(msgspec.Struct, kw_only=True):
    cohort_id: int
    privacy: str


async def list_activity(request: web.Request) -> web.Response:
    claims = await current_user(request)
    cohort_id = path_int(request)
    require_member(claims, cohort_id)
    limit = query_int(request, "limit", 30, lo=1, hi=LIMIT_MAX)
    pool = request.app[DB]
    privacy = await pool.fetchval("SELECT activity_privacy FROM cohorts WHERE id = $1", cohort_id)
    if privacy is None:
        raise errors.not_found(f"cohort {cohort_id} does not exist")
    items: list[activity.ActivityOut] = []
    if privacy != "off":
        rows = await pool.fetch(
            "SELECT a.id, a.cohort_id, a.kind, a.subject_id, a.subject_title, a.created_at,"
            " u.display_name FROM cohort_activity a JOIN users u ON u.id = a.user_id"
            " WHERE a.cohort_id = $1 ORDER BY a.id DESC LIMIT $2",
            cohort_id,
            limit,
        )
        items = [activity.entry(r, privacy) for r in rows]
    return json_response(ActivityPage(privacy=privacy, items=items))


async def set_privacy(request: web.Request) -> web.Response:
    claims = await current_user(request)
    cohort_id = path_int(request)
    require_staff(claims, cohort_id)
    data = await body(request, PrivacyIn, 4096)
    async with request.app[DB].acquire() as conn, conn.transaction():
        before = await conn.fetchval(
            "SELECT activity_privacy FROM cohorts WHERE id = $1 FOR UPDATE", cohort_id
        )
        if before is None:
            raise errors.not_found(f"cohort {cohort_id} does not exist")
        if before != data.privacy:
            await conn.execute(
                "UPDATE cohorts SET activity_privacy = $2 WHERE id = $1", cohort_id, data.privacy
            )
            settings = events.ActivitySettings(cohort_id=cohort_id, privacy=data.privacy)
            await emit(conn, events.to(cohort_topic(cohort_id), settings))
    return json_response(PrivacyOut(cohort_id=cohort_id, privacy=data.privacy))


def setup(app: web.Application) -> None:
    r = Routes(app, "activity")
    r.get(
        "/api/v1/cohorts/{id}/activity",
        list_activity,
        summary="The cohort's activity feed, rendered with its privacy setting",
        auth="member",
        response=ActivityPage,
        query=(("limit", "integer"),),
    )
    r.put(
        "/api/v1/cohorts/{id}/activity-settings",
        set_privacy,
        summary="Set the activity feed's privacy: off, initials or names",
        auth="staff",
        request=PrivacyIn,
        response=PrivacyOut,
    )
