"""``emit``: how every database change publishes its events (DESIGN.md section 6).

Contract:

* **Same transaction.** ``emit`` inserts into ``outbox`` on the caller's connection, which must
  be inside a transaction (``async with conn.transaction():``); it raises ``RuntimeError``
  otherwise. The events commit with the change that causes them, or not at all.
* **Wake-up.** The same statement raises ``NOTIFY lectern_outbox`` (``pg_notify``);
  PostgreSQL delivers the notification at commit (once per transaction, since identical
  notifications are folded). The relay in
  workers/ LISTENs on :data:`CHANNEL`, publishes unpublished rows in id order with
  ``gateway.publish.Publisher`` and sets ``published_at``; it also polls, so a lost
  notification only delays delivery.
* **Typed.** An event is an :class:`Addressed` triple that ``workers.events.to(topic,
  struct)`` builds: the type comes from the registry in :mod:`workers.events`, the data is
  the event's Struct. It is stored as ``jsonb`` and reaches clients as the event's ``data``.

Topics are the ones of DESIGN.md section 2: ``user:{id}``, ``cohort:{id}``, ``staff:{id}``,
``live:{cohort}:{session}``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import asyncpg
import msgspec

#: The channel the relay LISTENs on.
CHANNEL = "lectern_outbox"

_encoder = msgspec.json.Encoder()
# One statement, one round trip, for any number of events and the wake-up (identity values
# follow the ORDER BY; the notification, however often it is raised, goes out once, at commit;
# its channel is :data:`CHANNEL`).
_INSERT = """
WITH ins AS (
    INSERT INTO outbox (topic, type, data)
    SELECT topic, type, data::jsonb FROM unnest($1::text[], $2::text[], $3::text[])
        WITH ORDINALITY AS e(topic, type, data, n)
    ORDER BY n
    RETURNING id)
SELECT ins.id FROM ins, LATERAL (SELECT pg_notify('lectern_outbox', '')) AS woken
"""


class Addressed(NamedTuple):
    """An event addressed to a topic, as ``workers.events.to`` builds it."""

    topic: str
    type: str
    data: Any


def _check(conn: asyncpg.Connection) -> None:
    if not conn.is_in_transaction():
        raise RuntimeError("outbox.emit must run inside the transaction of the change")


async def emit(conn: asyncpg.Connection, event: Addressed) -> int:
    """Queue one event, committed with the caller's transaction; its outbox id (a
    caller may publish it itself with the token ``outbox:<id>``)."""
    return (await emit_many(conn, [event]))[0]


async def emit_many(conn: asyncpg.Connection, events: Iterable[Addressed]) -> list[int]:
    """Queue several events (kept in the order given) in one round trip; their outbox ids, in
    that order."""
    rows = [(topic, type_, _encoder.encode(data).decode()) for topic, type_, data in events]
    if not rows:
        return []
    _check(conn)
    inserted = await conn.fetch(
        _INSERT, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]
    )
    return sorted(r["id"] for r in inserted)
