"""``POST /api/v1/sync``: a batch of operations recorded offline, applied once each.

The body is ``{"operations": [...]}``, at most :data:`MAX_OPS` operations of the kinds in
:mod:`api.sync_apply` (``lesson.complete``, ``quiz.draft``, ``note.save``), each with an
idempotency ``key`` (the client's, unique per user) and the ``client_ts`` it was recorded at.
The answer is one result per operation, in the request's order.

Guarantees:

* **Applied once.** Each operation runs in its own transaction, which also inserts its
  ``(user, key)`` row in ``sync_operations`` with the result; a key seen before (in an earlier
  batch, the same batch, or a concurrent request, which waits for the first to commit) is not
  applied again and answers the stored result with ``replayed: true``.
* **One bad operation loses nothing else.** A malformed body is refused whole (400 naming the
  field, 413 over :data:`MAX_BODY`); an operation the server refuses on its merits (unknown or
  foreign lesson or quiz, a timestamp from the future) answers ``rejected`` with the reason, is
  not recorded (the client may fix and resend it under the same key), and the others apply.
* Operations apply in the order sent (the client's queue order); conflicts are settled by the
  rules of :mod:`api.sync_apply`, with ``client_ts`` only deciding between quiz drafts.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Annotated

import asyncpg
import msgspec
from aiohttp import web

from api.deps import body as read_body
from api.deps import current_user, user_id
from api.openapi import Routes
from api.responses import json_response
from api.state import DB, REDIS, REQUEST_ID, SETTINGS
from api.sync_apply import Operation, OpResult, apply, op_type, rejected
from config import redisconn
from workers import certificates, progress

log = logging.getLogger("lectern.api.sync")

MAX_OPS = 100
MAX_BODY = 512 * 1024
#: How far ahead of the server's clock a client timestamp may be (a clock running fast would
#: otherwise win every last-write-wins decision for as long as it is ahead).
MAX_CLOCK_SKEW = timedelta(minutes=5)


class SyncIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    operations: Annotated[list[Operation], msgspec.Meta(max_length=MAX_OPS)]


class SyncOut(msgspec.Struct, kw_only=True):
    results: list[OpResult]


_result = msgspec.json.Decoder(OpResult)
_encode = msgspec.json.Encoder()


async def sync(request: web.Request) -> web.Response:
    uid = user_id(await current_user(request))
    data = await read_body(request, SyncIn, MAX_BODY)
    results: list[OpResult] = []
    cohorts: set[int] = set()
    async with request.app[DB].acquire() as conn:
        for op in data.operations:
            if op.client_ts.tzinfo is None:
                results.append(rejected(op, "client_ts needs a time zone (e.g. 'Z')"))
                continue
            if op.client_ts > datetime.now(UTC) + MAX_CLOCK_SKEW:
                results.append(rejected(op, "client_ts is in the future"))
                continue
            result, cohort = await _apply_once(conn, uid, op)
            results.append(result)
            if cohort is not None:
                cohorts.add(cohort)
    for cohort_id in sorted(cohorts):
        try:
            await progress.schedule_staff_progress(
                request.app[REDIS], request.app[SETTINGS], cohort_id
            )
            await certificates.send_emails(request.app[DB], request.app[REDIS], uid, cohort_id)
        except redisconn.ERRORS as exc:
            # Committed; the next completion (or the scheduled refresh) catches up.
            log.warning(
                "could not schedule staff.progress or milestone emails",
                extra={"request_id": request[REQUEST_ID], "error": repr(exc)},
            )
    return json_response(SyncOut(results=results))


async def _apply_once(
    conn: asyncpg.Connection, uid: int, op: Operation
) -> tuple[OpResult, int | None]:
    """Apply ``op`` in its own transaction, recorded under its idempotency key: a repeat
    (in this batch, a later one or a concurrent request) returns the stored result, marked
    ``replayed``; a rejected operation leaves no record, so a corrected resend may reuse it."""
    async with conn.transaction():
        claimed = await conn.fetchval(
            "INSERT INTO sync_operations (user_id, idempotency_key, op, client_ts, result)"
            " VALUES ($1, $2, $3, $4, '{}') ON CONFLICT DO NOTHING RETURNING true",
            uid,
            op.key,
            op_type(op),
            op.client_ts,
        )
        if not claimed:
            stored = await conn.fetchval(
                "SELECT result::text FROM sync_operations"
                " WHERE user_id = $1 AND idempotency_key = $2",
                uid,
                op.key,
            )
            replay = _result.decode(stored)
            replay.replayed = True
            return replay, None
        result, cohort = await apply(conn, uid, op)
        if result.status == "rejected":
            await conn.execute(
                "DELETE FROM sync_operations WHERE user_id = $1 AND idempotency_key = $2",
                uid,
                op.key,
            )
        else:
            await conn.execute(
                "UPDATE sync_operations SET result = $3::jsonb"
                " WHERE user_id = $1 AND idempotency_key = $2",
                uid,
                op.key,
                _encode.encode(result).decode(),
            )
        return result, cohort


def setup(app: web.Application) -> None:
    r = Routes(app, "sync")
    r.post(
        "/api/v1/sync",
        sync,
        summary="Apply operations recorded offline, each once (one result per operation)",
        request=SyncIn,
        response=SyncOut,
    )
