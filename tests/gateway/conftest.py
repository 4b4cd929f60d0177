"""Gateway fixtures: an in-process gateway on a real Redis (``gateway``, or ``make_gateway``
for one with other settings), a publisher, and token helpers. Byte-level test clients (raw
WebSocket, SSE, HTTP) are in ``tests/gateway/clients.py``.

Every async gateway test runs twice, on the default asyncio loop and on uvloop (the tests of
``python -m gateway`` subprocesses run once: the gateway's loop is the subprocess's own).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis
import uvloop
from aiohttp import web

from config.servers import free_port
from config.settings import Settings
from gateway.app import HUB, create_app
from gateway.auth import issue_access_token
from gateway.hub import Hub
from gateway.publish import Publisher


def pytest_asyncio_loop_factories(config: Any, item: Any) -> Mapping[str, Callable[[], Any]]:
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
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
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
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
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
    from workers.context import WorkerContext

    ctx = await WorkerContext.open(settings, with_db=False)
    task = asyncio.get_running_loop().create_task(run_commands(ctx))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await ctx.close()
