"""Gateway fixtures: an in-process gateway on a real Redis (``gateway``, or ``make_gateway``
for one with other settings), a publisher, and token helpers. Byte-level test clients (raw
WebSocket, SSE, HTTP) are in ``tests/gateway/clients.py``.

Every async gateway test runs twice, on the default asyncio loop and on uvloop (the tests of
``python -m gateway`` subprocesses run once: the gateway's loop is the subprocess's own).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
import redis.asyncio as aioredis
import uvloop
from aiohttp import web

from config import keys, redisconn
from config.servers import free_port
from config.settings import Settings
from gateway.app import HUB, create_app
from gateway.auth import issue_access_token
from gateway.fastpath import FastSite
from gateway.hub import Hub
from gateway.publish import Publisher
from gateway.server import app_runner, reuseport_socket
from tests.conftest import RedisTarget
from tests.processes import child_env, kill_all, until_metrics


def pytest_asyncio_loop_factories(config: Any, item: Any) -> Mapping[str, Callable[[], Any]]:
    if item.get_closest_marker("one_loop"):
        return {"asyncio": asyncio.new_event_loop}
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


class Gateway:
    def __init__(self, app: web.Application, runner: web.AppRunner, port: int) -> None:
        self.app = app
        self.runner = runner
        self.port = port
        self.base = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/ws"

    @property
    def hub(self) -> Hub:
        return self.app[HUB]


async def start_gateway(settings: Settings) -> Gateway:
    app = create_app(settings, settings.redis_url)
    runner = app_runner(app, settings)
    await runner.setup()
    port = free_port()
    # As gateway/server.py serves: /ws and /sse connects meet the fast path first.
    await FastSite(runner, reuseport_socket("127.0.0.1", port), backlog=128).start()
    return Gateway(app, runner, port)


@pytest.fixture
async def gateway(settings: Settings) -> AsyncIterator[Gateway]:
    gw = await start_gateway(settings)
    yield gw
    await gw.runner.cleanup()


GatewayFactory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def make_gateway(settings: Settings) -> AsyncIterator[GatewayFactory]:
    """``await make_gateway(**overrides)``: another gateway, on the test settings with
    ``overrides`` applied (e.g. ``history_maxlen=5``); all of them stop after the test."""
    started: list[Gateway] = []

    async def make(**overrides: Any) -> Gateway:
        gw = await start_gateway(msgspec.structs.replace(settings, **overrides))
        started.append(gw)
        return gw

    yield make
    for gw in reversed(started):
        await gw.runner.cleanup()


@pytest.fixture
async def redis(redis_target: RedisTarget) -> AsyncIterator[aioredis.Redis]:
    client = redisconn.connect(redis_target.url, cluster=redis_target.cluster)
    yield client
    await client.aclose()


@pytest.fixture
def publisher(redis: aioredis.Redis, settings: Settings) -> Publisher:
    return Publisher(redis, settings)


@pytest.fixture
def token(settings: Settings) -> Callable[..., str]:
    """``token(sub, role="student", cohorts=(), staff=(), **kw)`` -> a signed access token."""

    def make(sub: str, role: str = "student", **kw: Any) -> str:
        return issue_access_token(settings, sub=sub, role=role, **kw)

    return make


@pytest.fixture
async def cmd_worker(settings: Settings) -> AsyncIterator[None]:
    """A real command consumer (workers.command_consumer) on the test loop, without PostgreSQL."""
    from workers.command_consumer import run_commands
    from workers.consumer import ensure_group
    from workers.context import WorkerContext

    ctx = await WorkerContext.open(settings, with_db=False)
    # The group exists before the test sends its first command: run_commands creates it at
    # "$" in its task, and on a Redis that never had it a command appended first was skipped.
    await ensure_group(ctx.redis, keys.CMD_STREAM, keys.CMD_GROUP, "$")
    task = asyncio.get_running_loop().create_task(run_commands(ctx))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await ctx.close()


# -- python -m gateway subprocesses ----------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
SHUTDOWN_TIMEOUT_S = 3


#: Every client request is bounded: a connection nobody answers fails the test in seconds
#: instead of waiting out aiohttp's default of 300 s.
CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=10)


class GatewayProcess:
    def __init__(self, proc: asyncio.subprocess.Process, port: int, supervisor_port: int) -> None:
        self.proc = proc
        self.port = port
        self.supervisor_port = supervisor_port
        self.ws_url = f"ws://127.0.0.1:{port}/ws"

    async def wait_exit(self, within: float) -> int:
        """The exit status; fails when the process is still running after ``within`` s."""
        return await asyncio.wait_for(self.proc.wait(), within)


Starter = Callable[..., Awaitable[GatewayProcess]]


async def _wait_ready(gw: GatewayProcess, processes: int) -> None:
    """Every process serves: with several, the supervisor says all reported serving (a
    /readyz answer comes from whichever one process the kernel picked); with one, /readyz."""
    if processes > 1:
        await until_metrics(
            gw.supervisor_port,
            lambda m: m.get("lectern_gateway_processes_ready") == processes,
            30,
            f"{processes} gateway processes serving",
        )
        return
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession(timeout=CLIENT_TIMEOUT) as http:
        while True:
            assert gw.proc.returncode is None, f"gateway exited with {gw.proc.returncode}"
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(f"http://127.0.0.1:{gw.port}/readyz") as resp:
                    if resp.status == 200:
                        return
            assert time.monotonic() < deadline, "gateway did not become ready"
            await asyncio.sleep(0.1)


@pytest.fixture
async def start_gateway_process(redis_target: RedisTarget) -> AsyncIterator[Starter]:
    """``await start(processes, **settings)``: ``python -m gateway`` on a free port, every
    process serving, with ``LECTERN_*`` variables for the given settings. Killed after the
    test (its children die with it)."""
    procs: list[GatewayProcess] = []

    async def start(processes: int, **settings: object) -> GatewayProcess:
        port, supervisor_port = free_port(), free_port()
        env = child_env(
            REDIS_URL=redis_target.url,
            LECTERN_REDIS_CLUSTER=str(int(redis_target.cluster)),
            LECTERN_GATEWAY_METRICS_PORT="0",
            LECTERN_GATEWAY_SUPERVISOR_METRICS_PORT=str(supervisor_port),
            LECTERN_SHUTDOWN_TIMEOUT_S=str(SHUTDOWN_TIMEOUT_S),
            LECTERN_CONN_RATE_PER_IP_PER_S="10000",
            LECTERN_CONN_BURST_PER_IP="10000",
        )
        env.update({f"LECTERN_{k.upper()}": str(v) for k, v in settings.items()})
        args = ["-m", "gateway", "--processes", str(processes), "--port", str(port)]
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *args, cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL
        )
        gw = GatewayProcess(proc, port, supervisor_port)
        procs.append(gw)
        await _wait_ready(gw, processes)
        return gw

    yield start
    await kill_all(gw.proc for gw in procs)
