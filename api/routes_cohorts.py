"""Cohorts, enrollments and bulk enrollment from CSV.

* Admins create, rename and delete cohorts; members and staff read theirs.
* Enrollment: admins enroll anyone as member or staff; the staff of a cohort enroll and
  unenroll its *members* (making someone staff stays with admins, so staff cannot grant
  themselves company). Every change emits ``enrollment.changed`` to ``user:{id}``, telling the
  client to fetch a fresh token (``POST /api/v1/auth/token``) for its new claims. A removal
  (unenrollment, a deleted cohort) also takes effect at once for the tokens the user still
  holds, on the API and on the gateways (gateway/rights.py).
* ``POST /api/v1/cohorts/{id}/enrollments/import`` takes ``text/csv`` (see
  :mod:`workers.csv_import` for the columns), stores it, and queues the ``csv_import`` job;
  ``GET /api/v1/imports/{id}`` shows its progress and per-row results.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import asyncpg
import msgspec
from aiohttp import web

from api import errors
from api.deps import (
    body,
    current_user,
    is_admin,
    path_int,
    read_limited,
    require_admin,
    require_member,
    require_staff,
    user_id,
)
from api.openapi import Routes
from api.responses import json_response
from api.schemas import Email, Id, Kind, Title, normalize_email
from api.state import DB, REDIS, SETTINGS
from config import redisconn
from config.topics import cohort_topic, user_topic
from gateway import rights
from gateway import sessions as open_sessions
from workers import activity, csv_import, events
from workers.jobs import enqueue
from workers.outbox_write import emit

Slug = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")]


class CohortIn(msgspec.Struct):
    slug: Slug
    title: Title


class CohortPatch(msgspec.Struct, kw_only=True):
    slug: Slug | None = None
    title: Title | None = None


class CohortOut(msgspec.Struct):
    id: int
    slug: str
    title: str
    created_at: datetime


class EnrollIn(msgspec.Struct, kw_only=True):
    """Name the user by ``user_id`` or by ``email`` (exactly one)."""

    user_id: Id | None = None
    email: Email | None = None
    kind: Kind = "member"


class EnrollmentOut(msgspec.Struct):
    cohort_id: int
    user_id: int
    email: str
    display_name: str
    kind: str
    created_at: datetime


class ImportOut(msgspec.Struct):
    id: int
    cohort_id: int
    uploaded_by: int | None
    status: str
    total: int
    processed: int
    results: list[csv_import.RowResult]
    error: str | None
    created_at: datetime
    finished_at: datetime | None


_COHORT = "SELECT id, slug, title, created_at FROM cohorts"
_ENROLLMENT = (
    "SELECT e.cohort_id, e.user_id, u.email, u.display_name, e.kind, e.created_at"
    " FROM enrollments e JOIN users u ON u.id = e.user_id"
)
_results = msgspec.json.Decoder(list[csv_import.RowResult])


def _slug_taken() -> errors.ApiError:
    return errors.conflict("a cohort with this slug exists", {"field": "slug"}, "slug_taken")


async def _cohort_or_404(conn: Any, cohort_id: int) -> CohortOut:
    row = await conn.fetchrow(f"{_COHORT} WHERE id = $1", cohort_id)
    if row is None:
        raise errors.not_found(f"cohort {cohort_id} does not exist")
    return CohortOut(**dict(row))


async def create_cohort(request: web.Request) -> web.Response:
    require_admin(await current_user(request))
    data = await body(request, CohortIn)
    try:
        row = await request.app[DB].fetchrow(
            "INSERT INTO cohorts (slug, title) VALUES ($1, $2)"
            " RETURNING id, slug, title, created_at",
            data.slug,
            data.title.strip(),
        )
    except asyncpg.UniqueViolationError:
        raise _slug_taken() from None
    except asyncpg.CheckViolationError:
        raise errors.bad_request(
            "the title is blank", {"field": "title"}, "invalid_field"
        ) from None
    return json_response(CohortOut(**dict(row)), 201)


async def list_cohorts(request: web.Request) -> web.Response:
    """Admins see every cohort; others the cohorts their token names."""
    claims = await current_user(request)
    pool = request.app[DB]
    if is_admin(claims):
        rows = await pool.fetch(f"{_COHORT} ORDER BY id")
    else:
        ids = sorted(int(c) for c in claims.cohorts | claims.staff)
        rows = await pool.fetch(f"{_COHORT} WHERE id = ANY($1) ORDER BY id", ids)
    return json_response([CohortOut(**dict(r)) for r in rows])


async def get_cohort(request: web.Request) -> web.Response:
    claims = await current_user(request)
    cohort_id = path_int(request)
    require_member(claims, cohort_id)
    return json_response(await _cohort_or_404(request.app[DB], cohort_id))


async def update_cohort(request: web.Request) -> web.Response:
    require_admin(await current_user(request))
    cohort_id = path_int(request)
    data = await body(request, CohortPatch)
    try:
        row = await request.app[DB].fetchrow(
            "UPDATE cohorts SET slug = coalesce($2, slug), title = coalesce($3, title)"
            " WHERE id = $1 RETURNING id, slug, title, created_at",
            cohort_id,
            data.slug,
            data.title.strip() if data.title is not None else None,
        )
    except asyncpg.UniqueViolationError:
        raise _slug_taken() from None
    except asyncpg.CheckViolationError:
        raise errors.bad_request(
            "the title is blank", {"field": "title"}, "invalid_field"
        ) from None
    if row is None:
        raise errors.not_found(f"cohort {cohort_id} does not exist")
    return json_response(CohortOut(**dict(row)))


async def delete_cohort(request: web.Request) -> web.Response:
    require_admin(await current_user(request))
    cohort_id = path_int(request)
    async with request.app[DB].acquire() as conn, conn.transaction():
        enrolled = await conn.fetch(
            "SELECT user_id FROM enrollments WHERE cohort_id = $1 FOR UPDATE", cohort_id
        )
        rooms = await conn.fetch("SELECT id FROM live_sessions WHERE cohort_id = $1", cohort_id)
        deleted = await conn.fetchval("DELETE FROM cohorts WHERE id = $1 RETURNING id", cohort_id)
        if deleted is None:
            raise errors.not_found(f"cohort {cohort_id} does not exist")
        await emit(
            conn, events.to(cohort_topic(cohort_id), events.CohortDeleted(cohort_id=cohort_id))
        )
        await _announce_lost(request, [r["user_id"] for r in enrolled], cohort_id)
        await open_sessions.unregister(request.app[REDIS], [(cohort_id, r["id"]) for r in rooms])
    return web.Response(status=204)


async def _announce_lost(request: web.Request, users: list[int], cohort_id: int) -> None:
    """The users' tokens stop granting anything in the cohort, on the API and on every gateway,
    at once (gateway/rights.py). Called last inside the transaction of the removal: if Redis
    refuses, the removal rolls back (503, safe to retry) instead of committing unannounced; if
    the commit fails after it, the users merely fetch a fresh token sooner."""
    await rights.announce_lost(request.app[REDIS], request.app[SETTINGS], users, cohort_id)


async def list_enrollments(request: web.Request) -> web.Response:
    claims = await current_user(request)
    cohort_id = path_int(request)
    require_staff(claims, cohort_id)
    pool = request.app[DB]
    await _cohort_or_404(pool, cohort_id)
    rows = await pool.fetch(f"{_ENROLLMENT} WHERE e.cohort_id = $1 ORDER BY e.user_id", cohort_id)
    return json_response([EnrollmentOut(**dict(r)) for r in rows])


async def enroll(request: web.Request) -> web.Response:
    claims = await current_user(request)
    cohort_id = path_int(request)
    require_staff(claims, cohort_id)
    data = await body(request, EnrollIn)
    if (data.user_id is None) == (data.email is None):
        raise errors.bad_request(
            "give exactly one of user_id and email", {"field": "user_id"}, "invalid_field"
        )
    if data.kind == "staff":
        require_admin(claims)
    async with request.app[DB].acquire() as conn, conn.transaction():
        await _cohort_or_404(conn, cohort_id)
        if data.user_id is not None:
            uid = await conn.fetchval("SELECT id FROM users WHERE id = $1", data.user_id)
        else:
            uid = await conn.fetchval(
                "SELECT id FROM users WHERE email = $1", normalize_email(data.email or "")
            )
        if uid is None:
            raise errors.not_found("no such user")
        added = await conn.fetchval(
            "INSERT INTO enrollments (cohort_id, user_id, kind) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING RETURNING user_id",
            cohort_id,
            uid,
            data.kind,
        )
        if added is not None:
            changed = events.EnrollmentChanged(cohort_id=cohort_id, kind=data.kind, enrolled=True)
            await emit(conn, events.to(user_topic(uid), changed))
            if data.kind == "member":
                await activity.record(conn, cohort_id, uid, "member.joined")
        row = await conn.fetchrow(
            f"{_ENROLLMENT} WHERE e.cohort_id = $1 AND e.user_id = $2", cohort_id, uid
        )
    return json_response(EnrollmentOut(**dict(row)), 201 if added is not None else 200)


async def unenroll(request: web.Request) -> web.Response:
    claims = await current_user(request)
    cohort_id = path_int(request)
    target = path_int(request, "user_id")
    require_staff(claims, cohort_id)
    async with request.app[DB].acquire() as conn, conn.transaction():
        kind = await conn.fetchval(
            "SELECT kind FROM enrollments WHERE cohort_id = $1 AND user_id = $2 FOR UPDATE",
            cohort_id,
            target,
        )
        if kind is None:
            raise errors.not_found("this user is not enrolled in this cohort")
        if kind == "staff":
            require_admin(claims)
        await conn.execute(
            "DELETE FROM enrollments WHERE cohort_id = $1 AND user_id = $2", cohort_id, target
        )
        changed = events.EnrollmentChanged(cohort_id=cohort_id, kind=kind, enrolled=False)
        await emit(conn, events.to(user_topic(target), changed))
        await _announce_lost(request, [target], cohort_id)
    return web.Response(status=204)


async def import_csv(request: web.Request) -> web.Response:
    claims = await current_user(request)
    cohort_id = path_int(request)
    require_staff(claims, cohort_id)
    if request.content_type not in ("text/csv", "application/csv"):
        raise errors.ApiError(
            415, "unsupported_media_type", "send the file as text/csv", {"field": "Content-Type"}
        )
    raw = await read_limited(request, csv_import.MAX_BYTES)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise errors.bad_request("the file is not UTF-8", {"field": ""}, "invalid_csv") from None
    if "\x00" in text:  # PostgreSQL text cannot hold NUL
        raise errors.bad_request("the file contains NUL bytes", {"field": ""}, "invalid_csv")
    try:
        rows = csv_import.parse_csv(text)
    except csv_import.CsvError as exc:
        raise errors.bad_request(str(exc), {"field": ""}, "invalid_csv") from None
    pool = request.app[DB]
    async with pool.acquire() as conn, conn.transaction():
        await _cohort_or_404(conn, cohort_id)
        import_id = await conn.fetchval(
            "INSERT INTO csv_imports (cohort_id, uploaded_by, source, total)"
            " VALUES ($1, $2, $3, $4) RETURNING id",
            cohort_id,
            user_id(claims),
            text,
            len(rows),
        )
    try:
        await enqueue(request.app[REDIS], csv_import.QUEUE, {"import_id": import_id})
    except redisconn.ERRORS:
        await pool.execute(
            "UPDATE csv_imports SET status = 'failed', error = 'could not queue the import',"
            " finished_at = now() WHERE id = $1",
            import_id,
        )
        raise errors.unavailable("could not queue the import; try again") from None
    return await _import_response(pool, import_id, 202)


async def _import_response(pool: Any, import_id: int, status: int = 200) -> web.Response:
    row = await pool.fetchrow(
        "SELECT id, cohort_id, uploaded_by, status, total, processed, results, error,"
        " created_at, finished_at FROM csv_imports WHERE id = $1",
        import_id,
    )
    if row is None:
        raise errors.not_found(f"import {import_id} does not exist")
    values = dict(row)
    values["results"] = _results.decode(values["results"])
    return json_response(ImportOut(**values), status)


async def get_import(request: web.Request) -> web.Response:
    claims = await current_user(request)
    import_id = path_int(request)
    pool = request.app[DB]
    owner = await pool.fetchrow(
        "SELECT cohort_id, uploaded_by FROM csv_imports WHERE id = $1", import_id
    )
    if owner is None:
        raise errors.not_found(f"import {import_id} does not exist")
    if owner["uploaded_by"] != user_id(claims):
        require_staff(claims, owner["cohort_id"])
    return await _import_response(pool, import_id)


def setup(app: web.Application) -> None:
    """Register this module's routes with their OpenAPI descriptions.

    Long because a route table reads best as one list.
    """
    r = Routes(app, "cohorts")
    r.post(
        "/api/v1/cohorts",
        create_cohort,
        summary="Create a cohort",
        auth="admin",
        request=CohortIn,
        response=CohortOut,
        status=201,
    )
    r.get(
        "/api/v1/cohorts",
        list_cohorts,
        summary="Cohorts the caller belongs to (all, for admins)",
        response=list[CohortOut],
    )
    r.get("/api/v1/cohorts/{id}", get_cohort, summary="A cohort", auth="member", response=CohortOut)
    r.patch(
        "/api/v1/cohorts/{id}",
        update_cohort,
        summary="Rename a cohort",
        auth="admin",
        request=CohortPatch,
        response=CohortOut,
    )
    r.delete(
        "/api/v1/cohorts/{id}",
        delete_cohort,
        summary="Delete a cohort and everything in it",
        auth="admin",
        status=204,
    )
    r.get(
        "/api/v1/cohorts/{id}/enrollments",
        list_enrollments,
        summary="Members and staff of a cohort",
        auth="staff",
        response=list[EnrollmentOut],
    )
    r.post(
        "/api/v1/cohorts/{id}/enrollments",
        enroll,
        summary="Enroll a user (201 when added, 200 when already enrolled); staff: members only",
        auth="staff",
        request=EnrollIn,
        response=EnrollmentOut,
        status=201,
    )
    r.delete(
        "/api/v1/cohorts/{id}/enrollments/{user_id}",
        unenroll,
        summary="Unenroll a user; staff: members only",
        auth="staff",
        status=204,
    )
    r.post(
        "/api/v1/cohorts/{id}/enrollments/import",
        import_csv,
        summary="Bulk-enroll from a CSV file (columns email,name,role); processed in background",
        auth="staff",
        request=bytes,
        request_content_type="text/csv",
        response=ImportOut,
        status=202,
    )
    r.get(
        "/api/v1/imports/{id}",
        get_import,
        summary="Progress and per-row results of a CSV import",
        response=ImportOut,
    )
