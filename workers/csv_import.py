"""Bulk enrollment from an uploaded CSV: the ``csv_import`` job.

The API stores the upload in ``csv_imports`` (``source``, ``total``) and enqueues
``{"import_id": id}`` on :data:`QUEUE`. :func:`handle_csv_import` then, in batches of
:data:`BATCH` rows, each batch one transaction:

* locks the import row and continues from its ``processed`` count, so a redelivered or
  concurrently delivered job never handles a row twice (**idempotent**);
* per row: ``invalid`` (with a ``reason``) when the email, name or role is unusable; otherwise
  creates the user when the email is new (no password: they register with an invite) and
  enrolls them, ``created``, or ``already_enrolled`` when they were;
* appends the row results to ``results``, advances ``processed`` and emits ``import.progress``
  with those rows (``rows``) to ``staff:{cohort}`` and ``enrollment.changed`` to each newly
  enrolled user, through the outbox, all in the same transaction.

``import.progress`` goes to the cohort's staff topic, not to the uploader's: the gateway then
lets exactly the cohort's staff (and admins) see the rows, emails included, and an uploader who
lost their staff grant mid-import stops seeing them. The upload page (``/enroll``) fills its
report from these rows, and reads ``GET /imports/{id}`` for anything it missed.

The last step sets ``status = 'done'`` with a final ``import.progress`` carrying the counts. A
file that cannot be parsed at all ends ``failed`` (no retry).

Columns (header row required, case-insensitive, any order): ``email`` (required), ``name``
(default: the email's local part), ``role`` (``student``/``member``, the default, or
``instructor``/``staff``). Only an admin grants staff: a staff row in a file uploaded by
anyone else (an instructor of the cohort) is ``invalid``, checked against the uploader's role
in the database when the row is applied.
"""

from __future__ import annotations

import csv
import io
import re
from typing import Any, Literal

import asyncpg
import msgspec

from config.topics import staff_topic, user_topic
from workers import events
from workers.context import WorkerContext
from workers.jobs import job
from workers.outbox_write import emit, emit_many

QUEUE = "csv_import"
#: Rows per transaction, and per ``import.progress`` (small enough for the page to fill in).
BATCH = 50
MAX_ROWS = 10_000
MAX_BYTES = 2 * 1024 * 1024

_EMAIL = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+\.[^@\s,;<>]+$")
_ROLES = {"": "member", "student": "member", "member": "member"}
_ROLES |= {"instructor": "staff", "staff": "staff"}

Status = Literal["created", "already_enrolled", "invalid"]


class CsvError(ValueError):
    """The file as a whole is unusable (encoding, header, size)."""


class CsvRow(msgspec.Struct, frozen=True):
    line: int
    email: str
    name: str
    role: str


class RowResult(msgspec.Struct, frozen=True, omit_defaults=True):
    line: int
    email: str
    status: Status
    reason: str = ""
    user_id: int | None = None
    #: The row created the user's account (``created`` rows only; else they existed).
    new_user: bool = False


def _cell(fields: list[str], i: int | None) -> str:
    return fields[i].strip() if i is not None and i < len(fields) else ""


def parse_csv(text: str) -> list[CsvRow]:
    """The data rows of ``text`` (blank lines skipped); raises :class:`CsvError`."""
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise CsvError("the file is empty")
        columns = [h.strip().lower() for h in header]
        if "email" not in columns:
            raise CsvError("the header row must name an `email` column")
        dupes = sorted({c for c in columns if c and columns.count(c) > 1})
        if dupes:
            raise CsvError(f"duplicate columns: {', '.join(dupes)}")
        index: dict[str, int] = {
            c: columns.index(c) for c in ("email", "name", "role") if c in columns
        }
        rows: list[CsvRow] = []
        for fields in reader:
            if not any(f.strip() for f in fields):
                continue
            if len(rows) >= MAX_ROWS:
                raise CsvError(f"more than {MAX_ROWS} rows")
            cells = [_cell(fields, index.get(c)) for c in ("email", "name", "role")]
            rows.append(CsvRow(reader.line_num, *cells))
    except csv.Error as exc:
        raise CsvError(f"malformed CSV: {exc}") from None
    return rows


def validate_row(row: CsvRow) -> tuple[str, str, str] | str:
    """``(email, name, enrollment kind)``, or the reason the row is invalid."""
    email = row.email.lower()
    if not email:
        return "missing email"
    if len(email) > 320 or not _EMAIL.match(email):
        return "invalid email"
    name = row.name or email.split("@", 1)[0]
    if len(name) > 200:
        return "name longer than 200 characters"
    kind = _ROLES.get(row.role.lower())
    if kind is None:
        return f"unknown role {row.role[:40]!r} (use student or instructor)"
    return email, name, kind


async def _apply(
    conn: asyncpg.Connection, cohort_id: int, row: CsvRow, may_grant_staff: bool
) -> RowResult:
    checked = validate_row(row)
    if isinstance(checked, str):
        return RowResult(row.line, row.email[:320], "invalid", checked)
    email, name, kind = checked
    if kind == "staff" and not may_grant_staff:
        return RowResult(row.line, email, "invalid", "only an admin may add instructors")
    uid = await conn.fetchval(
        "INSERT INTO users (email, display_name, role) VALUES ($1, $2, $3)"
        " ON CONFLICT (email) DO NOTHING RETURNING id",
        email,
        name,
        "instructor" if kind == "staff" else "student",
    )
    new_user = uid is not None
    if uid is None:
        uid = await conn.fetchval("SELECT id FROM users WHERE email = $1", email)
    added = await conn.fetchval(
        "INSERT INTO enrollments (cohort_id, user_id, kind) VALUES ($1, $2, $3)"
        " ON CONFLICT DO NOTHING RETURNING user_id",
        cohort_id,
        uid,
        kind,
    )
    if added is None:
        return RowResult(row.line, email, "already_enrolled", user_id=uid)
    return RowResult(row.line, email, "created", user_id=uid, new_user=new_user)


async def _counts(conn: asyncpg.Connection, import_id: int) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT r->>'status' AS status, count(*) AS n"
        " FROM csv_imports, jsonb_array_elements(results) AS r WHERE id = $1 GROUP BY 1",
        import_id,
    )
    counts = {"created": 0, "already_enrolled": 0, "invalid": 0}
    counts.update({r["status"]: r["n"] for r in rows})
    counts["new_users"] = await conn.fetchval(
        "SELECT count(*) FROM csv_imports, jsonb_array_elements(results) AS r"
        " WHERE id = $1 AND (r->>'new_user')::boolean",
        import_id,
    )
    return counts


def _progress(row: Any, processed: int, status: str) -> events.ImportProgress:
    return events.ImportProgress(
        import_id=row["id"],
        cohort_id=row["cohort_id"],
        uploaded_by=row["uploaded_by"],
        processed=processed,
        total=row["total"],
        status=status,
    )


async def _finish(
    conn: asyncpg.Connection, row: Any, status: str, error: str | None = None
) -> None:
    await conn.execute(
        "UPDATE csv_imports SET status = $2, error = $3, finished_at = now() WHERE id = $1",
        row["id"],
        status,
        error,
    )
    progress = _progress(row, row["processed"], status)
    progress.counts = await _counts(conn, row["id"])
    if error:
        progress.error = error
    await emit(conn, events.to(staff_topic(row["cohort_id"]), progress))


_LOCK = (
    "SELECT id, cohort_id, uploaded_by, status, source, total, processed"
    " FROM csv_imports WHERE id = $1 FOR UPDATE"
)


@job(QUEUE)
async def handle_csv_import(ctx: WorkerContext, payload: dict[str, Any]) -> None:
    """Run (or resume) the import ``payload["import_id"]``; see the module docstring."""
    assert ctx.db is not None, "the csv_import job needs the database"
    import_id = int(payload["import_id"])
    encoder = msgspec.json.Encoder()
    async with ctx.db.acquire() as conn:
        rows: list[CsvRow] | None = None
        while True:
            async with conn.transaction():
                row = await conn.fetchrow(_LOCK, import_id)
                if row is None or row["status"] in ("done", "failed"):
                    return
                if rows is None:
                    try:
                        rows = parse_csv(row["source"])
                    except CsvError as exc:
                        await _finish(conn, row, "failed", str(exc))
                        return
                start = row["processed"]
                batch = rows[start : start + BATCH]
                if not batch or start >= row["total"]:
                    await _finish(conn, row, "done")
                    return
                batch = batch[: row["total"] - start]
                may_grant_staff = row["uploaded_by"] is not None and (
                    await conn.fetchval("SELECT role FROM users WHERE id = $1", row["uploaded_by"])
                    == "admin"
                )
                results = [await _apply(conn, row["cohort_id"], r, may_grant_staff) for r in batch]
                processed = start + len(batch)
                await conn.execute(
                    "UPDATE csv_imports SET status = 'running', processed = $2,"
                    " results = results || $3::jsonb WHERE id = $1",
                    import_id,
                    processed,
                    encoder.encode(results).decode(),
                )
                joined = events.EnrollmentChanged(cohort_id=row["cohort_id"], enrolled=True)
                sent = [
                    events.to(user_topic(r.user_id), joined)
                    for r in results
                    if r.status == "created" and r.user_id is not None
                ]
                progress = _progress(row, processed, "running")
                progress.rows = results
                sent.append(events.to(staff_topic(row["cohort_id"]), progress))
                await emit_many(conn, sent)
