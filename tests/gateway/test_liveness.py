"""Liveness: WebSocket pings from the shared tick, closed after missed pongs; SSE heartbeats."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from tests.gateway.clients import SseClient
from tests.gateway.conftest import GatewayFactory


async def test_silent_client_is_closed_after_missed_pongs(
    make_gateway: GatewayFactory, token, uid
) -> None:
    """A client that never answers pings is closed with 4004; one that answers stays open."""
    gw = await make_gateway(ping_interval_s=1.0, missed_pongs=2)
    async with aiohttp.ClientSession() as http:
        silent = await http.ws_connect(
            f"{gw.ws_url}?token={token('s' + uid)}", autoping=False, heartbeat=None
        )
        alive = await http.ws_connect(f"{gw.ws_url}?token={token('a' + uid)}", heartbeat=None)
        assert json.loads((await silent.receive(timeout=5)).data)["type"] == "hello"
        assert json.loads((await alive.receive(timeout=5)).data)["type"] == "hello"
        # aiohttp answers pings inside receive(): keep the answering client reading.
        frames: list[dict] = []

        async def read_alive() -> None:
            async for msg in alive:
                frames.append(json.loads(msg.data))

        reader = asyncio.create_task(read_alive())
        pings = 0
        while True:
            msg = await silent.receive(timeout=8)
            if msg.type == aiohttp.WSMsgType.PING:
                pings += 1  # received, never answered
                continue
            break
        assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 4004
        assert pings == 2
        # The answering client was pinged as often and is still served.
        await alive.send_json({"type": "ping", "ref": "p"})
        for _ in range(100):
            if frames:
                break
            await asyncio.sleep(0.05)
        assert frames == [frames[0]] and frames[0]["type"] == "pong"
        assert not alive.closed
        reader.cancel()
        await alive.close()


async def test_sse_heartbeat_comments(make_gateway: GatewayFactory, token, uid) -> None:
    """An idle SSE stream gets a comment heartbeat every sse_heartbeat_s, after `retry:`."""
    gw = await make_gateway(sse_heartbeat_s=1.0)
    sse = await SseClient.open(gw.port, f"topics=user:u{uid}&token={token('u' + uid)}")
    assert sse.status == 200
    assert sse.headers["content-type"].startswith("text/event-stream")
    assert sse.headers["cache-control"] == "no-cache"
    assert sse.headers["x-accel-buffering"] == "no"
    lines = []
    deadline = asyncio.get_running_loop().time() + 5
    while lines.count(": hb") < 2 and asyncio.get_running_loop().time() < deadline:
        line = await asyncio.wait_for(sse.reader.readline(), 5)
        lines.append(line.decode().rstrip("\n"))
    assert lines[0] == "retry: 2000"
    assert lines.count(": hb") == 2
    await sse.close()
