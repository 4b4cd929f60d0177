"""A gateway that loses Redis keeps its connections and resumes when Redis is back."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aiohttp
import pytest
import redis.asyncio as aioredis

from config.servers import RedisServer
from config.settings import Settings
from gateway.publish import Publisher
from tests.gateway.clients import SseClient, ping_pong, recv_json, recv_until, ws_open
from tests.gateway.conftest import GatewayFactory


@pytest.fixture
def private_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, which it may kill (the session's is shared).
    Request it before ``make_gateway`` so that the gateway stops first."""
    server = RedisServer().start()
    yield server
    server.stop()


async def _publish(url: str, settings: Settings, topic: str, type_: str) -> str:
    client = aioredis.Redis.from_url(url)
    try:
        return await Publisher(client, settings).publish(topic, type_, {})
    finally:
        await client.aclose()


async def test_redis_restart(
    private_redis: RedisServer, make_gateway: GatewayFactory, settings: Settings, token, uid
) -> None:
    """Redis dies and comes back on the same port with its data lost: /readyz says 503 while
    it is down, WS and SSE clients stay connected, and the first event published after the
    restart reaches them (after a reset for the topic whose history was lost)."""
    gw = await make_gateway(redis_url=private_redis.url)
    topic = f"user:u{uid}"
    tok = token("u" + uid)
    async with aiohttp.ClientSession() as http:
        ws, _ = await ws_open(http, f"{gw.ws_url}?token={tok}&topics={topic}")
        assert (await recv_json(ws))["type"] == "subscribed"
        sse = await SseClient.open(gw.port, f"topics={topic}&token={tok}")
        await sse.event_of("hello")
        before = await _publish(private_redis.url, settings, topic, "before")
        assert (await recv_json(ws))["id"] == before
        assert (await sse.event()).id == before

        private_redis.kill()
        async with asyncio.timeout(5):
            while True:
                async with http.get(f"{gw.base}/readyz") as resp:
                    if resp.status == 503:
                        break
                await asyncio.sleep(0.1)
        await ping_pong(ws)  # no Redis needed to stay connected
        await asyncio.sleep(0.5)
        private_redis.stop()  # clean its old directory; the process is already gone
        private_redis.start()

        after = await _publish(private_redis.url, settings, topic, "after")
        event = await recv_until(ws, lambda f: f["type"] == "event", 15)
        assert event["id"] == after
        async with asyncio.timeout(15):
            while (ev := await sse.event(15)).event != "event":
                assert ev.event == "reset", ev
        assert ev.id == after
        async with asyncio.timeout(5):
            while True:
                async with http.get(f"{gw.base}/readyz") as resp:
                    if resp.status == 200:
                        break
                await asyncio.sleep(0.1)
        await ping_pong(ws)
        await ws.close()
        await sse.close()
