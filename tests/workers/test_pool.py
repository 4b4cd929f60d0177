"""``python -m workers`` as deployed: a supervisor and its worker processes on the session's
Redis, PostgreSQL and SMTP catcher. A killed worker is replaced; a killed supervisor takes its
workers along; SIGTERM drains them and exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from config.servers import SmtpCatcher, free_port
from tests.processes import alive, child_env, copies, kill_all, until, until_metrics
from tests.workers.helpers import migrated

ROOT = Path(__file__).resolve().parents[2]
SHUTDOWN_TIMEOUT_S = 3


class Pool:
    def __init__(self, proc: asyncio.subprocess.Process, supervisor_port: int) -> None:
        self.proc = proc
        self.supervisor_port = supervisor_port

    async def ready(self, count: int, within: float) -> dict[str, float]:
        return await until_metrics(
            self.supervisor_port,
            lambda m: m.get("lectern_worker_processes_ready") == count,
            within,
            f"{count} worker processes serving",
        )


Starter = Callable[[int], Awaitable[Pool]]


@pytest.fixture
async def start_pool(
    redis_url: str, database_url: str, smtp: SmtpCatcher
) -> AsyncIterator[Starter]:
    """``await start(n)``: ``python -m workers --processes n``, every worker serving. Killed
    after the test (its workers die with it)."""
    await migrated(database_url)
    pools: list[Pool] = []

    async def start(processes: int) -> Pool:
        supervisor_port = free_port()
        env = child_env(
            REDIS_URL=redis_url,
            DATABASE_URL=database_url,
            SMTP_URL=smtp.url,
            LECTERN_WORKER_METRICS_PORT="0",
            LECTERN_WORKER_SUPERVISOR_METRICS_PORT=str(supervisor_port),
            LECTERN_SHUTDOWN_TIMEOUT_S=str(SHUTDOWN_TIMEOUT_S),
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "workers",
            "--processes",
            str(processes),
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
        )
        pool = Pool(proc, supervisor_port)
        pools.append(pool)
        await pool.ready(processes, 30)
        return pool

    yield start
    await kill_all(pool.proc for pool in pools)


async def test_a_killed_worker_is_replaced(start_pool: Starter) -> None:
    """SIGKILL one of two workers: a new one serves within 2 s (it reports ready once its
    Redis and PostgreSQL connections are open and its services run), the restart is counted,
    and SIGTERM still drains both and exits 0."""
    pool = await start_pool(2)
    before = {p.pid for p in copies(pool.proc.pid)}
    assert len(before) == 2
    os.kill(min(before), signal.SIGKILL)
    samples = await until_metrics(
        pool.supervisor_port,
        lambda m: (
            m.get("lectern_worker_process_restarts_total") == 1
            and m.get("lectern_worker_processes_ready") == 2
        ),
        2,
        "a replacement worker serving",
    )
    assert samples["lectern_worker_processes"] == 2
    assert len({p.pid for p in copies(pool.proc.pid)} - before) == 1
    pool.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(pool.proc.wait(), SHUTDOWN_TIMEOUT_S + 5) == 0


async def test_a_killed_supervisor_takes_its_workers_along(start_pool: Starter) -> None:
    """SIGKILL the parent: no worker process is left 2 s later."""
    pool = await start_pool(2)
    children = copies(pool.proc.pid)
    assert len(children) == 2
    pool.proc.kill()
    await until(lambda: not any(alive(c) for c in children), 2, "every worker gone")
