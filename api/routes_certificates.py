"""Certificate progress: ``GET /api/v1/cohorts/{id}/certificate`` (members: their own).

The milestones (25, 50, 75, 100 %) with ``unlocked_at``, and the certificate once the course is
complete; see :mod:`workers.certificates` for when they are written.
"""

from __future__ import annotations

from aiohttp import web

from api import errors
from api.deps import current_user, path_int, require_member, user_id
from api.openapi import Routes
from api.responses import json_response
from api.state import DB
from workers import certificates


async def my_certificate(request: web.Request) -> web.Response:
    claims = await current_user(request)
    cohort_id = path_int(request)
    require_member(claims, cohort_id)
    async with request.app[DB].acquire() as conn:
        if await conn.fetchval("SELECT 1 FROM cohorts WHERE id = $1", cohort_id) is None:
            raise errors.not_found(f"cohort {cohort_id} does not exist")
        return json_response(await certificates.progress_of(conn, user_id(claims), cohort_id))


def setup(app: web.Application) -> None:
    r = Routes(app, "progress")
    r.get(
        "/api/v1/cohorts/{id}/certificate",
        my_certificate,
        summary="My milestones (with unlocked_at) and certificate (once complete)",
        auth="member",
        response=certificates.CertificateProgress,
    )
