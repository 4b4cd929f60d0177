"""Apply the SQL files in ``api/migrations`` to a PostgreSQL database.

Guarantees of :func:`migrate`:

* Files apply in name order (``0001_init.sql``, ``0002_...``), each at most once: its version
  (the file name without ``.sql``) is recorded in ``schema_migrations`` in the same transaction
  as its statements, so a file either applies completely and is recorded, or leaves no trace.
* Two processes never migrate the same database at once: the run holds a session-level advisory
  lock (:data:`LOCK_ID`), released in ``finally``; a second process waits for it, then finds the
  files already applied and does nothing.
* Running it again is a no-op: it returns ``[]``.
* An applied file that was edited afterwards is refused (:class:`MigrationError`), since the
  database would silently differ from what the file says; add a new numbered file instead.

Run it by hand with ``python -m api.migrate`` (reads ``DATABASE_URL``).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path

import asyncpg
import msgspec

#: Where the migration files live (shipped as package data, see pyproject.toml).
MIGRATIONS_DIR = Path(__file__).parent / "migrations"

#: Key of the advisory lock held while migrating ("LECTERN" in ASCII): any fixed bigint works as
#: long as every process uses the same one.
LOCK_ID = 0x4C45435445524E

_NAME = re.compile(r"^\d{4}_[a-z0-9_]+\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(RuntimeError):
    """A migration file is misnamed, or was changed after it was applied."""


class Migration(msgspec.Struct, frozen=True):
    """One SQL file: ``version`` is its name without ``.sql``."""

    version: str
    sql: str
    checksum: str


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every ``NNNN_name.sql`` file of ``directory``, in name order.

    Raises :class:`MigrationError` for a ``.sql`` file whose name does not follow the pattern,
    so a typo cannot make a file silently skipped or applied out of order.
    """
    migrations: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        if not _NAME.match(path.name):
            raise MigrationError(f"migration file {path.name!r} is not named NNNN_name.sql")
        data = path.read_bytes()
        migrations.append(
            Migration(
                version=path.name.removesuffix(".sql"),
                sql=data.decode(),
                checksum=hashlib.sha256(data).hexdigest(),
            )
        )
    return migrations


async def migrate(conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply the pending migrations on ``conn``; return the versions applied, in order.

    See the module docstring for the guarantees. ``conn`` must not be inside a transaction
    (each file gets its own) and must be a direct connection, not one behind a transaction-
    pooling PgBouncer, since the advisory lock belongs to the server session.
    """
    migrations = load_migrations(directory)
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_ID)
    try:
        # Created under the lock: concurrent CREATE TABLE IF NOT EXISTS can still collide.
        await conn.execute(_CREATE_TABLE)
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
        done = {row["version"]: row["checksum"] for row in rows}
        for migration in migrations:
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version} changed after it was applied; "
                        "add a new migration file instead of editing it"
                    )
                continue
            async with conn.transaction():
                # No arguments: asyncpg uses the simple protocol, which runs many statements.
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)",
                    migration.version,
                    migration.checksum,
                )
            applied.append(migration.version)
    finally:
        # A closed connection has already dropped its session locks.
        if not conn.is_closed():
            await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_ID)
    return applied


async def migrate_dsn(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """:func:`migrate` on a fresh connection to ``dsn``, closed afterwards."""
    conn = await asyncpg.connect(dsn)
    try:
        return await migrate(conn, directory)
    finally:
        await conn.close()


def main() -> None:
    """``python -m api.migrate``: migrate the database of the configured ``DATABASE_URL``."""
    from config.settings import load_settings

    settings = load_settings()
    if not settings.database_url:
        raise SystemExit("DATABASE_URL is not set")
    applied = asyncio.run(migrate_dsn(settings.database_url))
    print("applied:", ", ".join(applied) if applied else "nothing (up to date)")


if __name__ == "__main__":
    main()
