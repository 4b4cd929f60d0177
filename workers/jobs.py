"""Background jobs on Redis Streams (DESIGN.md section 5).

Producers call :func:`enqueue` (run as soon as a worker is free) or :func:`schedule` (run
after a delay). Every worker process runs ``workers.job_runner.run_jobs``, which consumes each
queue that has a handler registered with :func:`job`. A queue is the stream
``keys.job_stream(queue)``, read by the consumer group ``keys.WORKER_GROUP``; an entry is a
:class:`config.streams.JobEntry` (the JSON payload and the number of attempts that already
failed).

Guarantees, and what handlers must do for them:

* **At least once.** An entry is acknowledged (``XACK``, then ``XDEL``) only after its handler
  returned, i.e. after the handler's transaction committed. A process that dies mid-job leaves
  the entry pending; another process reclaims it with ``XAUTOCLAIM`` once it has been idle for
  ``job_claim_idle_ms``. While a job runs, its process refreshes the entry's idle time every
  third of that (``XCLAIM ... JUSTID``), so a slow job is never reclaimed from a live process.
* **Exactly-once effects** follow when handlers are idempotent: a unique key in PostgreSQL
  (``UPDATE ... WHERE status = 'pending'``, ``INSERT ... ON CONFLICT DO NOTHING``) turns a
  second delivery into a no-op. A handler should also *converge*: on a redelivery it redoes the
  follow-ups of work already committed (enqueueing an email, updating a Redis cache), since the
  first delivery may have died between its commit and those.
* **Retries with backoff.** A handler that raises is retried after ``job_retry_base_ms * 2**n``
  (n = failed attempts so far, capped at :data:`MAX_BACKOFF_MS`, plus up to 20 % jitter): the
  entry moves to the queue's delayed set (``keys.job_delayed_key``) and back onto the stream
  when due, atomically (a Lua script), whichever process moves it. :class:`RetryLater` picks
  the delay; :class:`PermanentError` skips the retries.
* **Outages use no attempts.** A job that fails because PostgreSQL or Redis cannot be reached
  (:data:`OUTAGE_ERRORS`), or whose handler raises :class:`Unavailable`, is rescheduled with
  the attempt count it had: waiting (backoff doubling with the process's consecutive outage
  failures, up to :data:`OUTAGE_MAX_WAIT_MS`) instead of being dead-lettered by an outage
  longer than its retry budget.
* **Dead letters.** After ``job_max_attempts`` attempts, counting both failures and deliveries
  that never finished (the stream's delivery counter, for processes that died), the entry moves
  to ``keys.dead_letter_stream(queue)`` with its payload, attempts and last error, and is not
  run again. Moving and acknowledging happen in one ``MULTI``.
* **Bounded.** A process runs at most ``concurrency`` jobs at once and reads only as many
  entries as it has free slots, so it never holds work it cannot start.
* **No order** between jobs, not even of one queue: retries and concurrency reorder them.
* **Shutdown.** Cancelling ``run_jobs`` stops reading, lets running jobs finish for up to
  ``shutdown_timeout_s`` and cancels the rest, which stay pending and are reclaimed later.

The job keys of one queue should share a Redis Cluster hash tag, since the mover script and the
``MULTI`` blocks touch the stream and the delayed set together (see ``config/keys.py``).
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
import msgspec
import redis.asyncio as aioredis
import redis.exceptions

from config import keys, streams
from config.streams import JobEntry
from workers import metrics

T = TypeVar("T")

if TYPE_CHECKING:
    from workers.context import WorkerContext

log = logging.getLogger("lectern.workers.jobs")

_encoder = msgspec.json.Encoder()
payload_decoder = msgspec.json.Decoder(dict[str, Any])

JOB_STREAM_MAXLEN = 1_000_000
DEAD_LETTER_MAXLEN = 100_000
MAX_BACKOFF_MS = 10 * 60 * 1000
#: A job running longer than this is cancelled and counts as a failed attempt.
DEFAULT_TIMEOUT_S = 300.0
#: How often due retries are moved back onto their stream.
MOVER_INTERVAL_S = 0.1

#: Modules whose import registers job handlers; ``job_runner.run_jobs`` imports them all.
HANDLER_MODULES: list[str] = [
    "workers.grade",
    "workers.feedback",
    "workers.email",
    "workers.digest",
    "workers.notify",
    "workers.leaderboard",
    "workers.csv_import",
    "workers.staff_progress",
]

JobHandler = Callable[["WorkerContext", dict[str, Any]], Awaitable[None]]
#: Queue name -> handler. One handler per queue.
JOB_HANDLERS: dict[str, JobHandler] = {}
JOB_TIMEOUTS: dict[str, float] = {}


def job(queue: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> Callable[[JobHandler], JobHandler]:
    """Register ``async def handler(ctx, payload) -> None`` as the consumer of ``queue``."""

    def register(fn: JobHandler) -> JobHandler:
        JOB_HANDLERS[queue] = fn
        JOB_TIMEOUTS[queue] = timeout_s
        return fn

    return register


class PermanentError(Exception):
    """Raised by a handler for a job that can never succeed: dead-lettered without retries."""


def job_payload(payload: dict[str, Any], type_: type[T], *, strict: bool = True) -> T:
    """``payload`` converted to ``type_``. A payload that does not fit can never succeed, so it
    raises :class:`PermanentError` (dead-lettered at once, not retried)."""
    try:
        return msgspec.convert(payload, type_, strict=strict)
    except msgspec.ValidationError as exc:
        raise PermanentError(f"bad payload: {exc}") from exc


class Unavailable(Exception):
    """Raised by a handler when a service the job needs is down (the job itself did not
    fail): retried after ``delay_ms`` without counting an attempt, so an outage longer than
    the retry budget loses nothing. The handler bounds how long it keeps waiting."""

    def __init__(self, message: str, delay_ms: int) -> None:
        super().__init__(message)
        self.delay_ms = delay_ms


#: What a service outage looks like from a handler: PostgreSQL down, restarting, shutting down
#: or out of connection slots, Redis unreachable, a connection refused or reset. A statement
#: timeout or a constraint violation is the job's own failure and is not in here.
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    redis.exceptions.ConnectionError,
    ConnectionError,
)
#: Longest wait between two tries of a job that met an outage.
OUTAGE_MAX_WAIT_MS = 60_000


class RetryLater(Exception):
    """Raised by a handler to be retried after ``delay_ms`` (counts as a failed attempt)."""

    def __init__(self, message: str, delay_ms: int) -> None:
        super().__init__(message)
        self.delay_ms = delay_ms


# -- producing --------------------------------------------------------------------------------


async def enqueue(
    redis: aioredis.Redis | Any, queue: str, payload: dict[str, Any], *, attempt: int = 0
) -> str:
    """Append a job; returns its entry ID. ``redis`` may be a client or a pipeline.

    Delivery is at least once: handlers must be idempotent (unique keys in PostgreSQL).
    """
    fields: Any = streams.JOB.encode(JobEntry(_encoder.encode(payload), attempt))
    entry = await redis.xadd(
        keys.job_stream(queue), fields, maxlen=JOB_STREAM_MAXLEN, approximate=True
    )
    return entry.decode() if isinstance(entry, bytes) else str(entry)


async def enqueue_at_most_every(
    redis: aioredis.Redis, queue: str, payloads: list[tuple[str, dict[str, Any]]], window_s: int
) -> int:
    """Enqueue each ``(ident, payload)`` unless the same ``ident`` was enqueued this way on
    ``queue`` within ``window_s`` (sweeps re-enqueueing lost work use it, so a long queue is
    not flooded with copies); returns how many were enqueued."""
    if not payloads:
        return 0
    pipe = redis.pipeline(transaction=False)
    for ident, _ in payloads:
        pipe.set(keys.debounce_key(f"enqueue:{queue}", ident), "1", nx=True, ex=window_s)
    fresh = [p for p, new in zip(payloads, await pipe.execute(), strict=True) if new]
    if fresh:
        pipe = redis.pipeline(transaction=False)
        for _, payload in fresh:
            await enqueue(pipe, queue, payload)
        await pipe.execute()
    return len(fresh)


class _Delayed(msgspec.Struct, frozen=True, gc=False):
    """A member of a queue's delayed set: read by :data:`MOVER_LUA`, which appends ``p`` and
    ``a`` as the :class:`JobEntry` fields. ``k`` makes the member unique (or coalescing)."""

    k: str
    a: str
    p: str


def delayed_member(payload_json: bytes, attempt: int, key: str) -> bytes:
    return _encoder.encode(_Delayed(key, str(attempt), payload_json.decode()))


async def schedule(
    redis: aioredis.Redis | Any,
    queue: str,
    payload: dict[str, Any],
    *,
    delay_ms: int,
    key: str | None = None,
) -> bool:
    """Enqueue ``payload`` on ``queue`` in ``delay_ms``; returns whether it was added.

    With a ``key``, scheduling coalesces: while a job with the same queue, key and payload
    waits, another ``schedule`` adds nothing and keeps the earlier due time (``ZADD NX``).
    """
    member = delayed_member(_encoder.encode(payload), 0, key or uuid.uuid4().hex)
    due = int(time.time() * 1000) + max(0, delay_ms)
    added = await redis.zadd(keys.job_delayed_key(queue), {member: due}, nx=True)
    return bool(added)


# Moves due retries onto the stream; atomic, so two processes never move one twice.
MOVER_LUA = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, m in ipairs(due) do
  local j = cjson.decode(m)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'p', j['p'], 'a', j['a'])
  redis.call('ZREM', KEYS[1], m)
end
return #due
"""


def backoff_ms(base_ms: int, failed: int) -> int:
    """Delay before the retry that follows ``failed`` failed attempts (>= 1), with jitter."""
    delay = min(base_ms * 2 ** max(0, failed - 1), MAX_BACKOFF_MS)
    return int(delay * (1 + random.random() * 0.2))


async def replay_dead_letters(redis: aioredis.Redis, queue: str, limit: int = 100) -> int:
    """Move up to ``limit`` dead letters of ``queue`` back onto it with a fresh attempt count
    (after fixing what made them fail); returns how many moved."""
    entries: Any = await redis.xrange(keys.dead_letter_stream(queue), count=limit)
    moved = 0
    for entry_id, fields in entries:
        try:
            letter = streams.DEAD_LETTER.decode(fields)
        except streams.BadEntry:
            metrics.bad_entries.labels("DeadLetter").inc()
            continue  # left where it is, for an operator to read
        pipe = redis.pipeline(transaction=True)
        pipe.xadd(
            keys.job_stream(queue),
            streams.JOB.encode(JobEntry(letter.payload)),  # type: ignore[arg-type]
            maxlen=JOB_STREAM_MAXLEN,
            approximate=True,
        )
        pipe.xdel(keys.dead_letter_stream(queue), entry_id)
        await pipe.execute()
        moved += 1
    return moved
