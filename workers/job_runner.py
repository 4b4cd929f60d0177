"""Consuming job queues: :class:`JobRunner` and the :func:`run_jobs` service (the guarantees
are those of :mod:`workers.jobs`, which holds the registry, the errors a handler raises and the
producing side)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import redis.asyncio as aioredis

from config import keys, redisconn, streams
from config.streams import DeadLetter, JobEntry
from workers import consumer, metrics
from workers.jobs import (
    DEAD_LETTER_MAXLEN,
    DEFAULT_TIMEOUT_S,
    HANDLER_MODULES,
    JOB_HANDLERS,
    JOB_STREAM_MAXLEN,
    JOB_TIMEOUTS,
    MOVER_INTERVAL_S,
    MOVER_LUA,
    OUTAGE_ERRORS,
    OUTAGE_MAX_WAIT_MS,
    PermanentError,
    RetryLater,
    Unavailable,
    backoff_ms,
    delayed_member,
    payload_decoder,
)

if TYPE_CHECKING:
    from workers.context import WorkerContext

log = logging.getLogger("lectern.workers.jobs")


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
        self._mover = ctx.redis.register_script(MOVER_LUA)
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
            payload = payload_decoder.decode(entry.job.payload)
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
            member = delayed_member(payload, attempts, entry.id.decode())
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
