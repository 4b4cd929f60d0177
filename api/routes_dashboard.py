"""``GET /api/v1/cohorts/{id}/dashboard`` (staff): the cohort at a glance, now.

The same figures the scheduler publishes as ``dashboard.update`` on ``staff:{cohort}``
(:mod:`workers.dashboard`), read on request, so the instructor page has them on load even on
a quiet day when no event comes.
"""

from __future__ import annotations

from aiohttp import web

from api import errors
from api.deps import current_user, path_int, require_staff
from api.openapi import Routes
from api.responses import json_response
from api.state import DB
from workers.dashboard import Dashboard, snapshot


async def get_dashboard(request: web.Request) -> web.Response:
    claims = await current_user(request)
    cohort_id = path_int(request)
    require_staff(claims, cohort_id)
    board = await snapshot(request.app[DB], cohort_id)
    if board is None:
        raise errors.not_found(f"cohort {cohort_id} does not exist")
    return json_response(board)


def setup(app: web.Application) -> None:
    Routes(app, "dashboard").get(
        "/api/v1/cohorts/{id}/dashboard",
        get_dashboard,
        summary="The cohort at a glance (the figures of dashboard.update), now",
        auth="staff",
        response=Dashboard,
    )
