"""The job framework on a real Redis: acknowledgement, retries with backoff, dead letters,
reclaiming the work of a dead process, bounded concurrency, graceful shutdown."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from typing import Any

import asyncpg
import msgspec
import pytest

from config import keys
from config.servers import free_port
from config.settings import Settings
from tests.workers.helpers import Workers, eventually, steady
from workers import job_runner, jobs
from workers.context import WorkerContext

#: Also on the Redis Cluster (docs/cluster.md).
pytestmark = pytest.mark.redis_modes

Handler = Callable[[WorkerContext, dict[str, Any]], Awaitable[None]]


@pytest.fixture
def queue() -> Iterator[Callable[[Handler], str]]:
    """``queue(handler)`` registers ``handler`` on a fresh queue and returns its name."""
    names: list[str] = []

    def register(handler: Handler) -> str:
        name = f"test-{uuid.uuid4().hex[:10]}"
        jobs.job(name, timeout_s=5)(handler)
        names.append(name)
        return name

    yield register
    for name in names:
        jobs.JOB_HANDLERS.pop(name, None)
        jobs.JOB_TIMEOUTS.pop(name, None)


def runner(name: str, concurrency: int = 8) -> Callable[[WorkerContext], Any]:
    return partial(job_runner.run_jobs, queues=[name], concurrency=concurrency)


async def pending(ctx: WorkerContext, name: str) -> int:
    info: Any = await ctx.redis.xpending(keys.job_stream(name), keys.WORKER_GROUP)
    return int(info["pending"])


async def dead(ctx: WorkerContext, name: str) -> list[dict[bytes, bytes]]:
    return [f for _, f in await ctx.redis.xrange(keys.dead_letter_stream(name))]


async def test_job_runs_once_and_is_acknowledged(wsettings: Settings, queue: Any) -> None:
    """An enqueued job runs once with its payload; its entry is acknowledged and deleted."""
    calls: list[dict[str, Any]] = []

    async def handler(ctx: WorkerContext, payload: dict[str, Any]) -> None:
        calls.append(payload)

    name = queue(handler)
    async with Workers(wsettings) as w:
        # Enqueued before any consumer group exists: still delivered.
        await jobs.enqueue(w.ctx.redis, name, {"n": 1})
        w.start(runner(name))
        await eventually(lambda: len(calls) == 1)
        await eventually(lambda: _zero(w.ctx, name))
        await steady(lambda: len(calls), 1, 0.3)
        assert calls == [{"n": 1}]
        assert await w.ctx.redis.xlen(keys.job_stream(name)) == 0


async def test_failing_job_is_retried_with_backoff(wsettings: Settings, queue: Any) -> None:
    """A handler that fails twice runs a third time, each retry later than the one before."""
    times: list[float] = []

    async def handler(ctx: WorkerContext, payload: dict[str, Any]) -> None:
        times.append(time.monotonic())
        if len(times) < 3:
            raise RuntimeError("flaky")

    name = queue(handler)
    settings = msgspec.structs.replace(wsettings, job_retry_base_ms=100)
    async with Workers(settings, runner(name)) as w:
        await jobs.enqueue(w.ctx.redis, name, {})
        await eventually(lambda: len(times) == 3)
        await eventually(lambda: _zero(w.ctx, name))
        assert await w.ctx.redis.zcard(keys.job_delayed_key(name)) == 0
    # Lower bounds only: the backoff guarantees a minimum wait (base * 2**n, jitter only adds);
    # how much later a loaded machine runs the retry is not the runner's to promise.
    first, second = times[1] - times[0], times[2] - times[1]
    assert first >= 0.09, first
    assert second >= 0.19, second
    assert await dead_count(settings, name) == 0


async def dead_count(settings: Settings, name: str) -> int:
    async with Workers(settings) as w:
        return len(await dead(w.ctx, name))


async def test_job_failing_every_time_is_dead_lettered(wsettings: Settings, queue: Any) -> None:
    """After job_max_attempts (3) failures the entry moves to the dead-letter stream with its
    payload, attempt count and error, and is never run again."""
    calls = 0

    async def handler(ctx: WorkerContext, payload: dict[str, Any]) -> None:
        nonlocal calls
        calls += 1
        raise ValueError("always broken")

    name = queue(handler)
    async with Workers(wsettings, runner(name)) as w:
        await jobs.enqueue(w.ctx.redis, name, {"order": 7})
        letters = await eventually(lambda: dead(w.ctx, name))
        await steady(lambda: calls, 3)
        assert len(letters) == 1
        assert msgspec.json.decode(letters[0][b"p"]) == {"order": 7}
        assert letters[0][b"a"] == b"3"
        assert b"always broken" in letters[0][b"error"]
        assert await pending(w.ctx, name) == 0
        assert await w.ctx.redis.zcard(keys.job_delayed_key(name)) == 0
        # Once the cause is fixed, an operator puts them back.
        assert await jobs.replay_dead_letters(w.ctx.redis, name) == 1
        await eventually(lambda: calls == 4)
        assert len(await eventually(lambda: dead(w.ctx, name))) == 1


async def test_an_outage_longer_than_the_retry_budget_is_waited_out(
    wsettings: Settings, queue: Any
) -> None:
    """PostgreSQL unreachable for more tries than job_max_attempts (3) allows: the job waits
    without using attempts, is never dead-lettered, and runs once the database is back."""
    calls, done = 0, []
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/lectern"

    async def handler(ctx: WorkerContext, payload: dict[str, Any]) -> None:
        nonlocal calls
        calls += 1
        # A real connection attempt: refused while the "outage" lasts.
        conn = await asyncpg.connect(nowhere if calls <= 6 else wsettings.database_url)
        try:
            done.append(await conn.fetchval("SELECT 1"))
        finally:
            await conn.close()

    name = queue(handler)
    settings = msgspec.structs.replace(wsettings, job_retry_base_ms=10)
    async with Workers(settings, runner(name)) as w:
        await jobs.enqueue(w.ctx.redis, name, {})
        await eventually(lambda: done == [1])
        await eventually(lambda: _zero(w.ctx, name))
        assert calls == 7
        assert await dead(w.ctx, name) == []


async def test_permanent_error_skips_the_retries(wsettings: Settings, queue: Any) -> None:
    calls = 0

    async def handler(ctx: WorkerContext, payload: dict[str, Any]) -> None:
        nonlocal calls
        calls += 1
        raise jobs.PermanentError("cannot work")

    name = queue(handler)
    async with Workers(wsettings, runner(name)) as w:
        await jobs.enqueue(w.ctx.redis, name, {})
        letters = await eventually(lambda: dead(w.ctx, name))
        assert calls == 1 and letters[0][b"a"] == b"1"


async def test_entry_of_a_dead_process_is_reclaimed(wsettings: Settings, queue: Any) -> None:
    """A process that read an entry and died (never acknowledged it) loses it to a live one
    after job_claim_idle_ms; the job then runs exactly once."""
    calls: list[dict[str, Any]] = []

    async def handler(ctx: WorkerContext, payload: dict[str, Any]) -> None:
        calls.append(payload)

    name = queue(handler)
    async with Workers(wsettings) as w:
        stream = keys.job_stream(name)
        await job_runner.ensure_group(w.ctx.redis, stream)
        await jobs.enqueue(w.ctx.redis, name, {"job": "orphan"})
        got = await w.ctx.redis.xreadgroup(keys.WORKER_GROUP, "dead-process", {stream: ">"}, 1)
        assert len(got[0][1]) == 1
        started = time.monotonic()
        w.start(runner(name))
        await eventually(lambda: len(calls) == 1)
        assert time.monotonic() - started >= 0.3  # not before the entry was idle long enough
        await steady(lambda: len(calls), 1)
        await eventually(lambda: _zero(w.ctx, name))


async def test_entry_that_keeps_killing_its_process_is_dead_lettered(
    wsettings: Settings, queue: Any
) -> None:
    """An entry delivered job_max_attempts times without finishing is not run again."""
    calls = 0

    async def handler(ctx: WorkerContext, payload: dict[str, Any]) -> None:
        nonlocal calls
        calls += 1

    name = queue(handler)
    async with Workers(wsettings) as w:
        stream = keys.job_stream(name)
        await job_runner.ensure_group(w.ctx.redis, stream)
        entry = await jobs.enqueue(w.ctx.redis, name, {"poison": True})
        await w.ctx.redis.xreadgroup(keys.WORKER_GROUP, "victim-1", {stream: ">"}, 1)
        for victim in ("victim-2", "victim-3"):
            await w.ctx.redis.xclaim(stream, keys.WORKER_GROUP, victim, 0, [entry])
        await asyncio.sleep(0.45)
        w.start(runner(name))
        letters = await eventually(lambda: dead(w.ctx, name))
        assert calls == 0
        assert b"delivered too often" in letters[0][b"error"]
        assert letters[0][b"id"] == entry.encode()


async def test_slow_job_is_not_reclaimed_from_a_live_process(
    wsettings: Settings, queue: Any
) -> None:
    """A job running longer than job_claim_idle_ms keeps its entry (heartbeat): a second
    process never runs it too."""
    calls = 0

    async def handler(ctx: WorkerContext, payload: dict[str, Any]) -> None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(1.2)

    name = queue(handler)
    async with (
        Workers(wsettings, runner(name), consumer="proc-a") as a,
        Workers(wsettings, runner(name), consumer="proc-b"),
    ):
        await jobs.enqueue(a.ctx.redis, name, {})
        await eventually(lambda: calls == 1)
        await eventually(lambda: _zero(a.ctx, name), 4)
        assert calls == 1


async def _zero(ctx: WorkerContext, name: str) -> bool:
    return await pending(ctx, name) == 0


async def test_concurrency_is_bounded_across_queues(wsettings: Settings, queue: Any) -> None:
    """Two queues, one process with 3 slots: never more than 3 jobs at once, all of them run."""
    running = peak = done = 0

    async def handler(ctx: WorkerContext, payload: dict[str, Any]) -> None:
        nonlocal running, peak, done
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1
        done += 1

    names = [queue(handler), queue(handler)]
    service = partial(job_runner.run_jobs, queues=names, concurrency=3)
    async with Workers(wsettings) as w:
        for i in range(12):
            await jobs.enqueue(w.ctx.redis, names[i % 2], {"i": i})
        w.start(service)
        await eventually(lambda: done == 12)
    assert peak == 3


async def test_shutdown_lets_running_jobs_finish(wsettings: Settings, queue: Any) -> None:
    """Cancelling run_jobs does not cut a running job short; it is acknowledged."""
    started, finished = asyncio.Event(), asyncio.Event()

    async def handler(ctx: WorkerContext, payload: dict[str, Any]) -> None:
        started.set()
        await asyncio.sleep(0.3)
        finished.set()

    name = queue(handler)
    async with Workers(wsettings, runner(name)) as w:
        await jobs.enqueue(w.ctx.redis, name, {})
        await asyncio.wait_for(started.wait(), 5)
        await w.stop()
        assert finished.is_set()
        assert await pending(w.ctx, name) == 0


async def test_schedule_delays_and_coalesces(wsettings: Settings, queue: Any) -> None:
    """``schedule`` with a key adds one job however often it is called while it waits."""
    calls: list[float] = []

    async def handler(ctx: WorkerContext, payload: dict[str, Any]) -> None:
        calls.append(time.monotonic())

    name = queue(handler)
    async with Workers(wsettings, runner(name)) as w:
        start = time.monotonic()
        added = [
            await jobs.schedule(w.ctx.redis, name, {"x": 1}, delay_ms=300, key="same")
            for _ in range(3)
        ]
        assert added == [True, False, False]
        await eventually(lambda: len(calls) == 1)
        assert calls[0] - start >= 0.28
        await steady(lambda: len(calls), 1)
