"""The HTTP fallback obeys the connection limits: held polls count as live connections, the
process bounds its held polls, and ``POST /cmd`` never decodes a body that is cut short."""

from __future__ import annotations

import asyncio
import contextlib
import json

import aiohttp

from gateway.app import POLLS
from tests.gateway.clients import until
from tests.gateway.conftest import Gateway, GatewayFactory


async def _poll(http: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, object]]:
    async with http.get(url) as resp:
        return resp.status, await resp.json()


async def test_held_polls_count_as_live_connections(
    make_gateway: GatewayFactory, token, uid
) -> None:
    """max_conns_per_user=2: two held polls fill the user's slots, so a third poll (or a
    WebSocket) gets 429; once the polls end the slots are free again."""
    gw = await make_gateway(max_conns_per_user=2)
    tok = token("u" + uid)
    async with aiohttp.ClientSession() as http:
        _, first = await _poll(http, f"{gw.base}/poll?topics=user:u{uid}&token={tok}")
        url = (
            f"{gw.base}/poll?topics=user:u{uid}&cursor={first['cursor']}&timeout_s=1.5&token={tok}"
        )
        held = [asyncio.ensure_future(_poll(http, url)) for _ in range(2)]
        await until(lambda: gw.hub.user_connections("u" + uid) == 2)
        status, body = await _poll(http, url)
        assert status == 429 and body["error"]["code"] == "too_many_connections"  # type: ignore[index]
        assert [status for status, _ in await asyncio.gather(*held)] == [200, 200]
        await until(lambda: gw.hub.user_connections("u" + uid) == 0)
        status, _ = await _poll(http, f"{gw.base}/poll?topics=user:u{uid}&token={tok}")
        assert status == 200


async def test_held_polls_per_process(make_gateway: GatewayFactory, token, uid) -> None:
    """max_held_polls=2: a third concurrent poll on the process gets 503 too_many_polls with
    Retry-After, whoever sends it."""
    gw = await make_gateway(max_held_polls=2)
    async with aiohttp.ClientSession() as http:
        held = []
        for who in ("a", "b"):
            tok = token(who + uid)
            _, first = await _poll(http, f"{gw.base}/poll?topics=user:{who}{uid}&token={tok}")
            url = (
                f"{gw.base}/poll?topics=user:{who}{uid}&cursor={first['cursor']}"
                f"&timeout_s=1.5&token={tok}"
            )
            held.append(asyncio.ensure_future(_poll(http, url)))
        await until(lambda: gw.app[POLLS].held == 2)
        async with http.get(f"{gw.base}/poll?topics=user:c{uid}&token={token('c' + uid)}") as r:
            assert r.status == 503 and r.headers["Retry-After"] == "1"
            assert (await r.json())["error"]["code"] == "too_many_polls"
        assert [status for status, _ in await asyncio.gather(*held)] == [200, 200]


async def _raw_post(port: int, path: str, head_extra: str, parts: list[bytes]) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{head_extra}\r\n".encode())
        for part in parts:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.15)  # separate TCP segments, read separately by the server
        status_line = await asyncio.wait_for(reader.readline(), 10)
        status = int(status_line.split()[1])
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.lower() == "content-length":
                length = int(value)
        return status, await reader.readexactly(length)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_post_cmd_reads_the_whole_body(gateway: Gateway, token, cmd_worker, uid) -> None:
    """A command body that arrives in two TCP segments is decoded whole (not its first part)."""
    body = json.dumps({"type": "cmd", "ref": "r1", "name": "sys.echo", "data": {"x": 1}}).encode()
    head = f"Authorization: Bearer {token('a' + uid, 'admin')}\r\nContent-Length: {len(body)}\r\n"
    status, reply = await _raw_post(gateway.port, "/cmd", head, [body[:20], body[20:]])
    assert status == 200, reply
    assert json.loads(reply) == {"type": "reply", "ref": "r1", "ok": True, "data": {"x": 1}}
