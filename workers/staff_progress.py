"""The ``staff_progress`` job: emit a cohort's ``staff.progress`` aggregates (debounced by
:func:`workers.progress.schedule_staff_progress`; see :mod:`workers.progress`). Idempotent: running
it twice emits the same aggregates twice, which clients treat as a refresh."""

from __future__ import annotations

from typing import Any

from workers.context import WorkerContext
from workers.jobs import job
from workers.progress import STAFF_PROGRESS_QUEUE, emit_staff_progress


@job(STAFF_PROGRESS_QUEUE, timeout_s=30)
async def handle_staff_progress(ctx: WorkerContext, payload: dict[str, Any]) -> None:
    assert ctx.db is not None, "the staff_progress job needs the database"
    async with ctx.db.acquire() as conn:
        await emit_staff_progress(conn, int(payload["cohort_id"]))
