"""Lessons: staff write them, members read them through a Redis read-through cache.

* The catalog (``GET /api/v1/cohorts/{id}/lessons``: titles and positions, no bodies) is sent
  with ``Cache-Control: private, max-age=30``; a lesson (``GET /api/v1/lessons/{id}``) with
  ``private, max-age=3600``. Both carry a strong ``ETag`` and answer ``If-None-Match`` with 304.
* Both are cached in Redis under versioned keys (:mod:`api.cache`). Every write bumps the
  lesson's and its cohort catalog's versions after the commit, so the next read reloads.
* Writes emit ``lesson.changed`` ``{lesson_id, version, op}`` to ``cohort:{id}`` so open pages
  refetch.
* ``PATCH`` accepts an optional ``version``: when it is not the current one the edit is refused
  with 409 (someone else edited the lesson meanwhile).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import asyncpg
import msgspec
from aiohttp import web

from api import cache, errors
from api.deps import body, current_user, is_member, path_int, require_member, require_staff
from api.openapi import Routes
from api.responses import json_response
from api.schemas import Title
from api.state import DB, REDIS
from config.topics import cohort_topic
from gateway.auth import Claims
from workers import events
from workers.outbox_write import emit

CATALOG_CACHE_CONTROL = "private, max-age=30"
LESSON_CACHE_CONTROL = "private, max-age=3600"
#: How long entries live in Redis; bounds staleness should a version bump be lost.
CATALOG_TTL_S = 300
LESSON_TTL_S = 3600

LessonBody = Annotated[str, msgspec.Meta(max_length=500_000)]
Position = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]


class LessonIn(msgspec.Struct, kw_only=True):
    title: Title
    body: LessonBody = ""
    #: Default: after the last lesson.
    position: Position | None = None


class LessonPatch(msgspec.Struct, kw_only=True):
    title: Title | None = None
    body: LessonBody | None = None
    position: Position | None = None
    #: The version the edit is based on; 409 when the lesson changed since.
    version: Annotated[int, msgspec.Meta(ge=1)] | None = None


class LessonOut(msgspec.Struct):
    id: int
    cohort_id: int
    position: int
    title: str
    body: str
    version: int
    updated_at: datetime


class LessonSummary(msgspec.Struct):
    id: int
    position: int
    title: str
    version: int
    updated_at: datetime


class CatalogOut(msgspec.Struct):
    cohort_id: int
    lessons: list[LessonSummary]


class _CohortOf(msgspec.Struct):
    cohort_id: int


_encoder = msgspec.json.Encoder()
_cohort_of = msgspec.json.Decoder(_CohortOf)
_LESSON = "SELECT id, cohort_id, position, title, body, version, updated_at FROM lessons"
_RETURNING = " RETURNING id, cohort_id, position, title, body, version, updated_at"


async def invalidate(redis: Any, cohort_id: int, lesson_id: int) -> None:
    """Bump the lesson's and its catalog's cache versions (after the commit)."""
    await cache.bump(redis, "lesson", str(lesson_id))
    await cache.bump(redis, "catalog", str(cohort_id))


async def catalog(request: web.Request) -> web.Response:
    claims = await current_user(request)
    cohort_id = path_int(request)
    require_member(claims, cohort_id)
    pool = request.app[DB]

    async def load() -> bytes | None:
        if await pool.fetchval("SELECT 1 FROM cohorts WHERE id = $1", cohort_id) is None:
            return None
        rows = await pool.fetch(
            "SELECT id, position, title, version, updated_at FROM lessons"
            " WHERE cohort_id = $1 ORDER BY position, id",
            cohort_id,
        )
        return _encoder.encode(CatalogOut(cohort_id, [LessonSummary(**dict(r)) for r in rows]))

    entry = await cache.read_through(
        request.app[REDIS], "catalog", str(cohort_id), CATALOG_TTL_S, load
    )
    if entry is None:
        raise errors.not_found(f"cohort {cohort_id} does not exist")
    return cache.respond(request, entry, CATALOG_CACHE_CONTROL)


def _no_lesson(lesson_id: int) -> errors.ApiError:
    # One answer for "does not exist" and "not in your cohorts": ids reveal nothing.
    return errors.not_found(f"lesson {lesson_id} does not exist")


async def get_lesson(request: web.Request) -> web.Response:
    claims = await current_user(request)
    lesson_id = path_int(request)
    pool = request.app[DB]

    async def load() -> bytes | None:
        row = await pool.fetchrow(f"{_LESSON} WHERE id = $1", lesson_id)
        return None if row is None else _encoder.encode(LessonOut(**dict(row)))

    def check(body: bytes) -> None:
        if not is_member(claims, _cohort_of.decode(body).cohort_id):
            raise _no_lesson(lesson_id)

    entry = await cache.read_through(
        request.app[REDIS], "lesson", str(lesson_id), LESSON_TTL_S, load, check
    )
    if entry is None:
        raise _no_lesson(lesson_id)
    return cache.respond(request, entry, LESSON_CACHE_CONTROL)


def _position_taken() -> errors.ApiError:
    return errors.conflict(
        "another lesson has this position", {"field": "position"}, "position_taken"
    )


async def create_lesson(request: web.Request) -> web.Response:
    claims = await current_user(request)
    cohort_id = path_int(request)
    require_staff(claims, cohort_id)
    data = await body(request, LessonIn)
    async with request.app[DB].acquire() as conn:
        try:
            async with conn.transaction():
                if await conn.fetchval("SELECT 1 FROM cohorts WHERE id = $1", cohort_id) is None:
                    raise errors.not_found(f"cohort {cohort_id} does not exist")
                row = await conn.fetchrow(
                    "INSERT INTO lessons (cohort_id, position, title, body) VALUES ($1,"
                    " coalesce($2, (SELECT max(position) + 1 FROM lessons WHERE cohort_id = $1),"
                    " 0), $3, $4)" + _RETURNING,  # nosec B608  # constant SQL text
                    cohort_id,
                    data.position,
                    data.title.strip(),
                    data.body,
                )
                changed = events.LessonChanged(
                    lesson_id=row["id"], version=row["version"], op="created"
                )
                await emit(conn, events.to(cohort_topic(cohort_id), changed))
        except asyncpg.UniqueViolationError:
            raise _position_taken() from None
        except asyncpg.CheckViolationError:
            raise errors.bad_request(
                "the title is blank", {"field": "title"}, "invalid_field"
            ) from None
    await invalidate(request.app[REDIS], cohort_id, row["id"])
    return json_response(LessonOut(**dict(row)), 201)


async def _lesson_cohort(conn: Any, claims: Claims, lesson_id: int, lock: bool = False) -> Any:
    """The lesson's cohort and version, for staff of its cohort; members get 403, anyone else
    404 as if it did not exist."""
    row = await conn.fetchrow(
        "SELECT cohort_id, version FROM lessons WHERE id = $1"  # nosec B608  # constant SQL text
        + (" FOR UPDATE" if lock else ""),
        lesson_id,
    )
    if row is None or not is_member(claims, row["cohort_id"]):
        raise _no_lesson(lesson_id)
    require_staff(claims, row["cohort_id"])
    return row


async def update_lesson(request: web.Request) -> web.Response:
    claims = await current_user(request)
    lesson_id = path_int(request)
    data = await body(request, LessonPatch)
    async with request.app[DB].acquire() as conn:
        try:
            async with conn.transaction():
                current = await _lesson_cohort(conn, claims, lesson_id, lock=True)
                if data.version is not None and data.version != current["version"]:
                    raise errors.conflict(
                        "the lesson changed since you loaded it",
                        {"field": "version", "current": current["version"]},
                        "version_conflict",
                    )
                row = await conn.fetchrow(
                    "UPDATE lessons SET title = coalesce($2, title), body = coalesce($3, body),"
                    " position = coalesce($4, position),"  # nosec B608  # constant SQL text
                    " version = version + 1,"
                    " updated_at = now() WHERE id = $1" + _RETURNING,
                    lesson_id,
                    data.title.strip() if data.title is not None else None,
                    data.body,
                    data.position,
                )
                changed = events.LessonChanged(
                    lesson_id=lesson_id, version=row["version"], op="updated"
                )
                await emit(conn, events.to(cohort_topic(row["cohort_id"]), changed))
        except asyncpg.UniqueViolationError:
            raise _position_taken() from None
        except asyncpg.CheckViolationError:
            raise errors.bad_request(
                "the title is blank", {"field": "title"}, "invalid_field"
            ) from None
    await invalidate(request.app[REDIS], row["cohort_id"], lesson_id)
    return json_response(LessonOut(**dict(row)))


async def delete_lesson(request: web.Request) -> web.Response:
    claims = await current_user(request)
    lesson_id = path_int(request)
    async with request.app[DB].acquire() as conn, conn.transaction():
        current = await _lesson_cohort(conn, claims, lesson_id, lock=True)
        cohort_id = current["cohort_id"]
        await conn.execute("DELETE FROM lessons WHERE id = $1", lesson_id)
        changed = events.LessonChanged(
            lesson_id=lesson_id, version=current["version"], op="deleted"
        )
        await emit(conn, events.to(cohort_topic(cohort_id), changed))
    await invalidate(request.app[REDIS], cohort_id, lesson_id)
    return web.Response(status=204)


def setup(app: web.Application) -> None:
    r = Routes(app, "lessons")
    r.get(
        "/api/v1/cohorts/{id}/lessons",
        catalog,
        summary="The cohort's lesson catalog (cached 30 s; ETag)",
        auth="member",
        response=CatalogOut,
    )
    r.post(
        "/api/v1/cohorts/{id}/lessons",
        create_lesson,
        summary="Add a lesson",
        auth="staff",
        request=LessonIn,
        response=LessonOut,
        status=201,
    )
    r.get(
        "/api/v1/lessons/{id}",
        get_lesson,
        summary="A lesson with its body (cached 1 h; ETag)",
        auth="member",
        response=LessonOut,
    )
    r.patch(
        "/api/v1/lessons/{id}",
        update_lesson,
        summary="Edit a lesson (optionally only if still at `version`)",
        auth="staff",
        request=LessonPatch,
        response=LessonOut,
    )
    r.delete(
        "/api/v1/lessons/{id}", delete_lesson, summary="Delete a lesson", auth="staff", status=204
    )
