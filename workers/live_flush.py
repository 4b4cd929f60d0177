"""The live flusher: the one timer of the live rooms, run in every worker process.

It pops due members of :data:`workers.live_state.DUE_KEY` (atomically, so each goes to exactly
one process) every :data:`POLL_S`, and at the exact due time of the work its own process
scheduled (:class:`workers.due_alarm.DueAlarm`: a quiz question closes at its deadline, not
up to a poll later), and runs them:

* ``tally|c|s|poll``: the trailing poll tally of a burst of votes (:func:`live.flush_tally`);
* ``pclose|c|s|poll``: a poll's timer ran out (:func:`live_polls.close_expired`);
* ``qclose|c|s|quiz.index``: a live quiz question's deadline (:func:`live_quiz.close_expired`);
* ``react|c|s``: the room's reaction window that just ended (:func:`live.flush_reactions`);
* ``pres|c|s``: the coalesced "who is here" publish (:func:`attendance.publish_presence`);
* ``ckpt|c|s``: the periodic attendance credit (:func:`attendance.checkpoint`);
* ``leave|c|s|user``: the end of a grace period (:func:`attendance.finalize`).

A member whose work fails for a transient reason (Redis or PostgreSQL unreachable) is put back,
due again in :data:`RETRY_MS`; a member that fails for any other reason is logged and dropped.
Work that a process had popped when it died is lost (a tally or reaction window waits for the
next change; a lost finalize is rescheduled by the next checkpoint).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
import redis.exceptions

from config import redisconn
from config.retry import Backoff
from workers import attendance, live, live_polls, live_quiz
from workers.context import WorkerContext
from workers.due_alarm import ALARMS, DueAlarm
from workers.live_state import TIMINGS, DueQueue, now_ms, parse_due_member

log = logging.getLogger("lectern.workers.live")

POLL_S = 0.02
BATCH = 100
RETRY_MS = 1000
CONCURRENCY = 32
#: How long popped work may take to finish when the flusher is cancelled.
SHUTDOWN_S = 5.0

TRANSIENT = (
    redis.exceptions.RedisError,
    redis.exceptions.RedisClusterException,
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
)


async def run_due(ctx: WorkerContext, member: str) -> None:
    """Do the work of one due member (see the module docstring)."""
    parsed = parse_due_member(member)
    if parsed is None:
        log.warning("malformed due member dropped: %r", member[:200])
        return
    kind, room, extra = parsed
    timings = TIMINGS[0]
    if kind == "tally" and extra.isdigit():
        await live_polls.flush_tally(ctx, room, int(extra))
    elif kind == "pclose" and extra.isdigit():
        await live_polls.close_expired(ctx, room, int(extra))
    elif kind == "qclose" and (target := live_quiz.parse_due_extra(extra)) is not None:
        await live_quiz.close_expired(ctx, room, *target)
    elif kind == "react":
        await live.flush_reactions(ctx, room)
    elif kind == "pres":
        await attendance.publish_presence(ctx, room)
    elif kind == "ckpt":
        await attendance.checkpoint(ctx, room, timings)
    elif kind == "leave" and extra:
        await attendance.finalize(ctx, room, extra, timings)
    else:
        log.warning("unknown due member dropped: %r", member[:200])


async def _guarded(ctx: WorkerContext, due: DueQueue, member: str) -> None:
    try:
        await run_due(ctx, member)
    except TRANSIENT as exc:
        log.warning("live work %s failed, retrying: %s", member[:100], exc)
        try:
            await due.schedule(member, now_ms() + RETRY_MS)
        except redisconn.ERRORS:
            log.error("live work %s lost: Redis unavailable", member[:100])
    except Exception:
        log.exception("live work %s failed", member[:100])


async def _sleep(alarm: DueAlarm, popped_at: int) -> None:
    """Until the next poll, or until this process's next due time if that comes first (a
    millisecond past it: due times are whole milliseconds), or until a nearer one is added."""
    alarm.changed.clear()
    wait = POLL_S
    nxt = alarm.next_due(popped_at)
    if nxt is not None:
        wait = min(wait, max(0.0, (nxt + 1 - now_ms()) / 1000))
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait):
            await alarm.changed.wait()


async def run_live_flusher(ctx: WorkerContext) -> None:
    """Run due live-room work until cancelled."""
    due = DueQueue(ctx.redis)
    sem = asyncio.Semaphore(CONCURRENCY)
    tasks: set[asyncio.Task[None]] = set()
    backoff = Backoff()

    async def run(member: str) -> None:
        try:
            await _guarded(ctx, due, member)
        finally:
            sem.release()

    alarm = DueAlarm()
    ALARMS.append(alarm)
    try:
        while True:
            try:
                now = now_ms()
                members = await due.pop(now, BATCH)
                backoff.reset()
            except redisconn.ERRORS as exc:
                log.warning("live flusher: %s", exc)
                await backoff.wait()
                continue
            for member in members:
                await sem.acquire()
                task = asyncio.create_task(run(member))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if len(members) < BATCH:
                await _sleep(alarm, now)
    finally:
        ALARMS.remove(alarm)
        # Shutting down: let popped work finish (it is not in the due set any more).
        if tasks:
            _, late = await asyncio.wait(set(tasks), timeout=SHUTDOWN_S)
            for task in late:
                task.cancel()
