"""Exactly-once live commands: a command's id is the idempotency key of its effects.

Guarantees (with :func:`workers.live_room.in_room`, through which every live command runs):

* **Once per command id.** The id is the command's entry ID in ``rt:cmd``
  (:attr:`config.streams.Command.id`), the same on every redelivery and reclaim. A command that
  changed something records its result in ``live_command_results`` in the *same transaction*
  as the change (:func:`record`; a room's batch: :func:`record_many`): either both commit or
  neither does.
* **Same reply.** A redelivered command finds its row before anything else runs (the lookup is
  part of the room check, so it costs no round trip) and replies with the stored result: no
  second question, vote or message, no second event, no rate-limit count.
* Refusals (:class:`CommandError`) roll the transaction back, change nothing and record
  nothing: a redelivered refused command is simply evaluated again.
* Commands of one room hold the room lock, so two deliveries of one command never overlap;
  one that runs unlocked (``react``) claims its id first (:func:`claim`), and a concurrent
  duplicate waits on that row and then sees it.
* Rows are deleted by :func:`purge` once :data:`KEEP_S` old (the scheduler runs it hourly);
  a command is reclaimed after ``job_claim_idle_ms``, far sooner.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

from workers.context import WorkerContext

KEEP_S = 24 * 3600

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


class Duplicate(Exception):
    """Another delivery of this command committed first (raised inside the transaction, so
    it rolls back whatever this one did)."""


def decode(stored: str) -> Any:
    return _decoder.decode(stored)


async def claim(conn: asyncpg.Connection, command_id: str) -> None:
    """Take ``command_id`` before applying an effect outside PostgreSQL; :class:`Duplicate`
    when a delivery of it already committed (waits while one is still in flight)."""
    taken = await conn.fetchval(
        "INSERT INTO live_command_results (command_id, reply) VALUES ($1, 'null') "
        "ON CONFLICT DO NOTHING RETURNING 1",
        command_id,
    )
    if taken is None:
        raise Duplicate(command_id)


async def record(
    conn: asyncpg.Connection, command_id: str, result: Any, *, claimed: bool = False
) -> None:
    """Store ``result`` as the reply of ``command_id`` (in the change's transaction);
    :class:`Duplicate` when a delivery of it already committed."""
    reply = _encoder.encode(result).decode()
    if claimed:
        await conn.execute(
            "UPDATE live_command_results SET reply = $2::jsonb WHERE command_id = $1",
            command_id,
            reply,
        )
        return
    stored = await conn.fetchval(
        "INSERT INTO live_command_results (command_id, reply) VALUES ($1, $2::jsonb) "
        "ON CONFLICT DO NOTHING RETURNING 1",
        command_id,
        reply,
    )
    if stored is None:
        raise Duplicate(command_id)


_RECORD_MANY_SQL = """
INSERT INTO live_command_results (command_id, reply)
SELECT id, reply::jsonb FROM unnest($1::text[], $2::text[]) AS r(id, reply)
ON CONFLICT (command_id) DO UPDATE SET reply = EXCLUDED.reply
"""


async def record_many(conn: asyncpg.Connection, results: dict[str, Any]) -> None:
    """Store the results of a batch's commands (command id -> result) in one round trip, in
    the batch's transaction. Only under the room lock, after the batch looked every id up:
    then no other delivery of these commands can have committed a row, and a row that exists
    is a claim (:func:`claim`) this transaction took itself, which the result replaces."""
    if results:
        await conn.execute(
            _RECORD_MANY_SQL,
            list(results),
            [_encoder.encode(result).decode() for result in results.values()],
        )


async def stored(conn: asyncpg.Connection, command_id: str) -> Any:
    """The result recorded for ``command_id`` (after :class:`Duplicate`)."""
    text = await conn.fetchval(
        "SELECT reply::text FROM live_command_results WHERE command_id = $1", command_id
    )
    return None if text is None else decode(text)


async def purge(ctx: WorkerContext, older_than_s: int = KEEP_S) -> int:
    """Delete results recorded more than ``older_than_s`` ago, in bounded batches."""
    assert ctx.db is not None
    deleted = 0
    while True:
        result = await ctx.db.execute(
            """
            DELETE FROM live_command_results WHERE command_id IN (
                SELECT command_id FROM live_command_results
                WHERE created_at < now() - make_interval(secs => $1) LIMIT 5000)
            """,
            float(older_than_s),
        )
        count = int(result.split()[-1])
        deleted += count
        if count < 5000:
            return deleted
