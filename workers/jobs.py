"""Background jobs on Redis Streams (DESIGN.md section 5).

Producers call :func:`enqueue` (run as soon as a worker is free) or :func:`schedule` (run
after a delay). Every worker process runs :func:`run_jobs`, which consumes each queue that has
a handler registered with :func:`job`. A queue is the stream ``keys.job_stream(queue)``, read
by the consumer group ``keys.WORKER_GROUP``; an entry is a :class:`config.streams.JobEntry`
(the JSON payload and the number of attempts that already failed).

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
* **Shutdown.** Cancelling :func:`run_jobs` stops reading, lets running jobs finish for up to
  ``shutdown_timeout_s`` and cancels the rest, which stay pending and are reclaimed later.

The job keys of one queue should share a Redis Cluster hash tag, since the mover script and the
``MULTI`` blocks touch the stream and the delayed set together (see ``config/keys.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncpg
import msgspec
import redis.asyncio as aioredis
import redis.exceptions

from config import keys, redisconn, streams
from config.streams import DeadLetter, JobEntry
from workers import consumer, metrics

if TYPE_CHECKING:
    from workers.context import WorkerContext

log = logging.getLogger("lectern.workers.jobs")

_encoder = msgspec.json.Encoder()
_payload_decoder = msgspec.json.Decoder(dict[str, Any])

JOB_STREAM_MAXLEN = 1_000_000
DEAD_LETTER_MAXLEN = 100_000
MAX_BACKOFF_MS = 10 * 60 * 1000
#: A job running longer than this is cancelled and counts as a failed attempt.
DEFAULT_TIMEOUT_S = 300.0
#: How often due retries are moved back onto their stream.
MOVER_INTERVAL_S = 0.1

#: Modules whose import registers job handlers; :func:`run_jobs` imports them all.
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
    """A member of a queue's delayed set: read by :data:`_MOVER_LUA`, which appends ``p`` and
    ``a`` as the :class:`JobEntry` fields. ``k`` makes the member unique (or coalescing)."""

    k: str
    a: str
    p: str


def _delayed_member(payload_json: bytes, attempt: int, key: str) -> bytes:
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
    member = _delayed_member(_encoder.encode(payload), 0, key or uuid.uuid4().hex)
    due = int(time.time() * 1000) + max(0, delay_ms)
    added = await redis.zadd(keys.job_delayed_key(queue), {member: due}, nx=True)
    return bool(added)


# Moves due retries onto the stream; atomic, so two processes never move one twice.
_MOVER_LUA = """
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


# -- consuming --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    queue: str
    id: bytes
    #: ``None`` for a malformed entry, which is dead-lettered unread.
    job: JobEntry | None
    deliveries: int = 1

    @property
    def failed(self) -> int:
        return self.job.attempts if self.job is not None else 0


def _entry(queue: str, entry_id: bytes, fields: dict[bytes, bytes], deliveries: int = 1) -> _Entry:
    try:
        job: JobEntry | None = streams.JOB.decode(fields)
    except streams.BadEntry:
        metrics.bad_entries.labels("JobEntry").inc()
        job = None
    return _Entry(queue, entry_id, job, deliveries)


#: The workers' group reads a job stream from its start, so jobs enqueued before any worker ran
#: are not skipped.
GROUP_START = "0"


async def ensure_group(client: aioredis.Redis, stream: str) -> None:
    """Create the workers' group on the job stream ``stream`` unless it exists."""
    await consumer.ensure_group(client, stream, keys.WORKER_GROUP, GROUP_START)


def load_handlers() -> None:
    """Import :data:`HANDLER_MODULES`; a missing one fails start-up rather than leaving its
    queue silently unserved."""
    for name in HANDLER_MODULES:
        importlib.import_module(name)


class JobRunner:
    """Consumes some queues in one process; :func:`run_jobs` is the service around it."""

    def __init__(self, ctx: WorkerContext, queues: list[str], concurrency: int) -> None:
        self.ctx = ctx
        self.queues = queues
        self.concurrency = max(1, concurrency)
        self.streams = {keys.job_stream(q): q for q in queues}
        self.running: dict[asyncio.Task[None], _Entry] = {}
        #: Read but not started yet (kept pending and heartbeated; left for reclaim on exit).
        self.backlog: deque[_Entry] = deque()
        self._slot_freed = asyncio.Event()
        self._mover = ctx.redis.register_script(_MOVER_LUA)
        settings = ctx.settings
        self.claim_idle_ms = settings.job_claim_idle_ms
        self.max_attempts = max(1, settings.job_max_attempts)
        self.retry_base_ms = settings.job_retry_base_ms
        #: Consecutive jobs of this process that met an outage (0 after any other outcome).
        self.outage = 0
        self.reader = consumer.GroupReader(
            ctx.redis,
            keys.WORKER_GROUP,
            ctx.consumer,
            list(self.streams),
            start_id=GROUP_START,
            claim_idle_ms=self.claim_idle_ms,
            claim_every_s=max(self.claim_idle_ms / 4000, 0.05),
            # Wake up in time for the next reclaim round.
            block_ms=int(min(1000, max(50, self.claim_idle_ms / 4))),
            count_deliveries=True,
            name="job",
        )

    async def run(self) -> None:
        await self.reader.ensure_groups()
        helpers = [
            asyncio.create_task(self._move_due_forever(), name="jobs-mover"),
            asyncio.create_task(self._heartbeat_forever(), name="jobs-heartbeat"),
        ]
        try:
            await self._consume_forever()
        finally:
            for task in helpers:
                task.cancel()
            await self._drain(self.ctx.settings.shutdown_timeout_s * 0.8)

    async def _drain(self, grace_s: float) -> None:
        """Let running jobs finish for ``grace_s``; cancel the rest (they stay pending)."""
        tasks = list(self.running)
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=grace_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)

    # The read loop.

    async def _consume_forever(self) -> None:
        while True:
            while len(self.running) >= self.concurrency:
                self._slot_freed.clear()
                await self._slot_freed.wait()
            if self.backlog:
                self._start(self.backlog.popleft())
                continue
            # COUNT applies per stream: the surplus waits in the backlog.
            batch = await self.reader.next_batch(self.concurrency - len(self.running))
            now_ms = time.time() * 1000
            for d in batch:
                entry = _entry(self.streams[d.stream], d.id, d.fields, d.deliveries)
                with contextlib.suppress(ValueError):
                    lag = max(0.0, now_ms - int(entry.id.split(b"-")[0])) / 1000
                    metrics.queue_lag.labels(entry.queue).set(lag)
                self.backlog.append(entry)

    def _start(self, entry: _Entry) -> None:
        task = asyncio.create_task(self._process(entry))
        self.running[task] = entry
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self.running.pop(task, None)
        self._slot_freed.set()

    # Helpers running beside the read loop.

    async def _move_due_forever(self) -> None:
        while True:
            try:
                await self.move_due()
            except redisconn.ERRORS as exc:
                log.debug("job mover: %s", exc)
            await asyncio.sleep(MOVER_INTERVAL_S)

    async def move_due(self) -> int:
        """Move the retries that are due onto their streams; returns how many moved."""
        moved = 0
        now_ms = int(time.time() * 1000)
        for queue in self.queues:
            moved += int(
                await self._mover(
                    keys=[keys.job_delayed_key(queue), keys.job_stream(queue)],
                    args=[now_ms, 500, JOB_STREAM_MAXLEN],
                )
            )
        return moved

    async def _heartbeat_forever(self) -> None:
        """Reset the idle time of running entries so that live jobs are never reclaimed."""
        interval = max(self.claim_idle_ms / 3000, 0.02)
        while True:
            await asyncio.sleep(interval)
            by_stream: dict[str, list[Any]] = {}
            for entry in [*self.running.values(), *self.backlog]:
                by_stream.setdefault(keys.job_stream(entry.queue), []).append(entry.id)
            for stream, ids in by_stream.items():
                try:
                    await self.ctx.redis.xclaim(
                        stream,
                        keys.WORKER_GROUP,
                        self.ctx.consumer,
                        min_idle_time=0,
                        message_ids=ids,
                        justid=True,
                    )
                except redisconn.ERRORS as exc:
                    log.debug("job heartbeat: %s", exc)

    # Running one entry.

    async def _process(self, entry: _Entry) -> None:
        queue = entry.queue
        attempt = entry.failed + entry.deliveries
        if attempt > self.max_attempts:
            await self._settle(entry, "dead", "delivered too often without finishing", attempt - 1)
            return
        if entry.job is None:
            await self._settle(entry, "dead", "malformed job entry", attempt)
            return
        try:
            payload = _payload_decoder.decode(entry.job.payload)
        except msgspec.DecodeError as exc:
            await self._settle(entry, "dead", f"undecodable payload: {exc}", attempt)
            return
        handler = JOB_HANDLERS[queue]
        started = time.perf_counter()
        outcome, error, delay = "ok", "", 0
        try:
            async with asyncio.timeout(JOB_TIMEOUTS.get(queue, DEFAULT_TIMEOUT_S)):
                await handler(self.ctx, payload)
        except PermanentError as exc:
            outcome, error = "dead", f"permanent: {exc}"
        except RetryLater as exc:
            outcome, error, delay = "retry", str(exc), exc.delay_ms
        except Unavailable as exc:
            # Rescheduled with the attempts it had before this delivery.
            outcome, error, delay, attempt = "wait", str(exc), exc.delay_ms, attempt - 1
        except OUTAGE_ERRORS as exc:
            self.outage += 1
            delay = min(OUTAGE_MAX_WAIT_MS, self.retry_base_ms * 2 ** min(self.outage, 20))
            outcome, error, attempt = "wait", f"{type(exc).__name__}: {exc}", attempt - 1
            delay = int(delay * random.uniform(0.8, 1.2))  # jitter, not a secret
            log.warning("job waits for an outage", extra={"queue": queue, "error": error})
        except Exception as exc:
            outcome, error = "retry", f"{type(exc).__name__}: {exc}"
            log.warning(
                "job failed",
                exc_info=True,
                extra={"queue": queue, "entry": entry.id.decode(), "attempt": attempt},
            )
        finally:
            metrics.job_seconds.labels(queue).observe(time.perf_counter() - started)
        if outcome != "wait":
            self.outage = 0
        if outcome == "retry" and attempt >= self.max_attempts:
            outcome = "dead"
        try:
            await self._settle(entry, outcome, error, attempt, delay)
        except redisconn.ERRORS as exc:
            # The work is done (or will be retried); the entry is reclaimed and, the handler
            # being idempotent, settled on its next delivery.
            log.warning("job settle failed: %s", exc, extra={"queue": queue})

    async def _settle(
        self, entry: _Entry, outcome: str, error: str, attempts: int, delay_ms: int = 0
    ) -> None:
        """Acknowledge ``entry`` and, for a failure, reschedule or dead-letter it, atomically."""
        stream = keys.job_stream(entry.queue)
        pipe = self.ctx.redis.pipeline(transaction=True)
        if outcome in ("retry", "wait"):
            delay = delay_ms or backoff_ms(self.ctx.settings.job_retry_base_ms, attempts)
            payload = entry.job.payload if entry.job is not None else b"{}"
            member = _delayed_member(payload, attempts, entry.id.decode())
            pipe.zadd(keys.job_delayed_key(entry.queue), {member: int(time.time() * 1000) + delay})
            counter = metrics.job_waits if outcome == "wait" else metrics.job_retries
            counter.labels(entry.queue).inc()
        elif outcome == "dead":
            letter = DeadLetter(
                payload=entry.job.payload if entry.job is not None else b"",
                attempts=attempts,
                id=entry.id.decode(),
                error=error[:1000],
                ts_ms=int(time.time() * 1000),
            )
            pipe.xadd(
                keys.dead_letter_stream(entry.queue),
                streams.DEAD_LETTER.encode(letter),  # type: ignore[arg-type]
                maxlen=DEAD_LETTER_MAXLEN,
                approximate=True,
            )
            metrics.dead_letters.labels(entry.queue).inc()
            log.error(
                "job dead-lettered",
                extra={"queue": entry.queue, "entry": entry.id.decode(), "error": error[:200]},
            )
        pipe.xack(stream, keys.WORKER_GROUP, entry.id)
        pipe.xdel(stream, entry.id)
        await pipe.execute()


#: Queues whose jobs nobody is waiting on live (mail, fan-outs, imports): they run in their own
#: lane with fewer slots, so a burst of them cannot crowd out grading and other jobs whose result
#: a student is watching for.
BULK_QUEUES = frozenset({"email", "announce", "csv_import"})
BULK_CONCURRENCY = 8


async def run_jobs(
    ctx: WorkerContext, *, queues: list[str] | None = None, concurrency: int = 32
) -> None:
    """Service: consume every registered queue (or ``queues``) until cancelled, in two lanes:
    interactive queues with ``concurrency`` slots, :data:`BULK_QUEUES` with fewer.

    See the module docstring for the guarantees.
    """
    load_handlers()
    names = sorted(queues if queues is not None else JOB_HANDLERS)
    unknown = [q for q in names if q not in JOB_HANDLERS]
    if unknown:
        raise ValueError(f"no handler for queues {unknown}")
    lanes = [
        (lane, slots)
        for lane, slots in (
            ([q for q in names if q not in BULK_QUEUES], concurrency),
            ([q for q in names if q in BULK_QUEUES], min(concurrency, BULK_CONCURRENCY)),
        )
        if lane
    ]
    if lanes:
        await asyncio.gather(*(JobRunner(ctx, lane, slots).run() for lane, slots in lanes))
