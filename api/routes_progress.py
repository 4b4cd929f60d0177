"""Progress routes: complete a lesson, my progress, and the staff view of a cohort.

See :mod:`workers.progress` for the events and the debounced staff aggregates.
"""

from __future__ import annotations

import logging

from aiohttp import web

from api import errors
from api.deps import current_user, path_int, require_member, require_staff, user_id
from api.openapi import Routes
from api.responses import json_response
from api.state import DB, REDIS, REQUEST_ID, SETTINGS
from config import redisconn
from workers import certificates, progress

log = logging.getLogger("lectern.workers.progress")


async def complete(request: web.Request) -> web.Response:
    """Idempotent: completing a completed lesson returns the same state and emits nothing."""
    claims = await current_user(request)
    lesson_id = path_int(request)
    async with request.app[DB].acquire() as conn:
        try:
            result = await progress.complete_lesson(conn, user_id(claims), lesson_id)
        except progress.NotEnrolled:
            raise errors.forbidden(
                "only members of the lesson's cohort track progress", "not_enrolled"
            ) from None
    if result is None:
        raise errors.not_found(f"lesson {lesson_id} does not exist")
    state, changed = result
    if changed:
        try:
            await progress.schedule_staff_progress(
                request.app[REDIS], request.app[SETTINGS], state.cohort_id
            )
            await certificates.send_emails(
                request.app[DB], request.app[REDIS], user_id(claims), state.cohort_id
            )
        except redisconn.ERRORS as exc:
            # The completion is committed; the next one (or the scheduled refresh) catches up.
            log.warning(
                "could not schedule staff.progress or milestone emails",
                extra={"request_id": request[REQUEST_ID], "error": repr(exc)},
            )
    return json_response(state)


async def my_progress(request: web.Request) -> web.Response:
    claims = await current_user(request)
    cohort_id = path_int(request)
    require_member(claims, cohort_id)
    async with request.app[DB].acquire() as conn:
        if await conn.fetchval("SELECT 1 FROM cohorts WHERE id = $1", cohort_id) is None:
            raise errors.not_found(f"cohort {cohort_id} does not exist")
        return json_response(await progress.my_progress(conn, user_id(claims), cohort_id))


async def students_progress(request: web.Request) -> web.Response:
    claims = await current_user(request)
    cohort_id = path_int(request)
    require_staff(claims, cohort_id)
    async with request.app[DB].acquire() as conn:
        if await conn.fetchval("SELECT 1 FROM cohorts WHERE id = $1", cohort_id) is None:
            raise errors.not_found(f"cohort {cohort_id} does not exist")
        return json_response(await progress.staff_progress(conn, cohort_id))


def setup(app: web.Application) -> None:
    r = Routes(app, "progress")
    r.put(
        "/api/v1/lessons/{id}/complete",
        complete,
        summary="Mark a lesson completed (idempotent)",
        auth="member",
        response=progress.CompletionState,
    )
    r.get(
        "/api/v1/cohorts/{id}/progress",
        my_progress,
        summary="The caller's progress in a cohort",
        auth="member",
        response=progress.MyProgress,
    )
    r.get(
        "/api/v1/cohorts/{id}/progress/students",
        students_progress,
        summary="Every student's progress and per-lesson completion counts",
        auth="staff",
        response=progress.StaffProgressDetail,
    )
