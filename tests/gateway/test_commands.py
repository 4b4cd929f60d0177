"""Commands: refusals that never reach the stream, rate limits, POST /cmd, timeouts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import redis.asyncio as aioredis

from config import keys
from tests.gateway.clients import expect_silence, ping_pong, recv_json, recv_until, ws_open
from tests.gateway.conftest import Gateway, GatewayFactory


async def _stream_refs(redis: aioredis.Redis, conn_id: str) -> list[str]:
    """Refs of the commands this connection appended to rt:cmd (newest 1000 entries)."""
    entries: Any = await redis.xrevrange(keys.CMD_STREAM, count=1000)
    return [f[b"ref"].decode() for _, f in entries if f.get(b"conn", b"").decode() == conn_id]


async def test_duplicate_ref_in_flight(
    gateway: Gateway, token, cmd_worker, redis: aioredis.Redis, uid
) -> None:
    """A second command with the ref of one still in flight is refused at once (invalid) and
    never appended; the first still gets its own single reply."""
    async with aiohttp.ClientSession() as http:
        ws, hello = await ws_open(http, f"{gateway.ws_url}?token={token('a' + uid, 'admin')}")
        slow = {"type": "cmd", "ref": "dup", "name": "sys.echo", "data": {"delay_ms": 300}}
        await ws.send_json(slow)
        await ws.send_json({**slow, "data": {"other": True}})
        first = await recv_json(ws, 1)
        assert first["ref"] == "dup" and first["ok"] is False
        assert first["error"]["code"] == "invalid"
        second = await recv_json(ws, 3)
        assert second == {"type": "reply", "ref": "dup", "ok": True, "data": {"delay_ms": 300}}
        await expect_silence(ws, 0.2)
        assert await _stream_refs(redis, hello["conn"]) == ["dup"]
        # Once answered, the ref may be used again.
        await ws.send_json({**slow, "data": {}})
        assert (await recv_json(ws, 3))["ok"] is True
        await ws.close()


async def test_command_on_a_forbidden_topic(
    gateway: Gateway, token, redis: aioredis.Redis, uid
) -> None:
    """A command naming a room the user may not access is refused by the gateway (forbidden;
    bad_topic when malformed) and never appended to the command stream."""
    async with aiohttp.ClientSession() as http:
        ws, hello = await ws_open(
            http, f"{gateway.ws_url}?token={token('u' + uid, cohorts=['c' + uid])}"
        )
        for ref, topic, code in [
            ("a", f"live:other{uid}:s1", "forbidden"),
            ("b", f"staff:c{uid}", "forbidden"),
            ("c", "user:someone-else", "forbidden"),
            ("d", "live:nope", "bad_topic"),
        ]:
            await ws.send_json(
                {"type": "cmd", "ref": ref, "name": "qa.ask", "topic": topic, "data": {}}
            )
            reply = await recv_json(ws, 1)
            assert reply["type"] == "reply" and reply["ref"] == ref and reply["ok"] is False
            assert reply["error"]["code"] == code and topic in reply["error"]["message"]
        await asyncio.sleep(0.2)
        assert await _stream_refs(redis, hello["conn"]) == []
        await ws.close()


async def test_no_worker_means_timeout(make_gateway: GatewayFactory, token, uid) -> None:
    """With no worker running, a command is answered timeout after cmd_reply_timeout_s."""
    gateway = await make_gateway(cmd_reply_timeout_s=0.5)
    async with aiohttp.ClientSession() as http:
        ws, _ = await ws_open(http, f"{gateway.ws_url}?token={token('u' + uid)}")
        start = time.monotonic()
        await ws.send_json({"type": "cmd", "ref": "t", "name": "qa.ask", "data": {}})
        reply = await recv_json(ws, 4)
        elapsed = time.monotonic() - start
        assert reply == {
            "type": "reply",
            "ref": "t",
            "ok": False,
            "error": {"code": "timeout", "message": reply["error"]["message"]},
        }
        # Not before the deadline (it starts after `start`); the exact moment is the unit test
        # tests/unit/test_command_deadline.py, on an injected clock.
        assert elapsed >= 0.5
        assert not gateway.hub.commands.pending
        await ws.close()


async def test_command_rate_limit(make_gateway: GatewayFactory, token, cmd_worker, uid) -> None:
    """Past the burst, frames get rate_limited replies (each command still exactly one reply);
    once the bucket refills, commands go through again."""
    gw = await make_gateway(cmd_rate_per_s=4, cmd_burst=3)
    async with aiohttp.ClientSession() as http:
        ws, hello = await ws_open(http, f"{gw.ws_url}?token={token('a' + uid, 'admin')}")
        assert hello["limits"]["cmd_burst"] == 3
        for i in range(6):
            await ws.send_json({"type": "cmd", "ref": str(i), "name": "sys.echo", "data": {"i": i}})
        replies = {}
        for _ in range(6):
            r = await recv_json(ws)
            assert r["type"] == "reply" and r["ref"] not in replies
            replies[r["ref"]] = r
        ok = sorted(ref for ref, r in replies.items() if r["ok"])
        limited = sorted(ref for ref, r in replies.items() if not r["ok"])
        assert ok == ["0", "1", "2"] and limited == ["3", "4", "5"]
        assert all(replies[r]["error"]["code"] == "rate_limited" for r in limited)
        # A ping is a frame too: refused while the bucket is empty.
        await ws.send_json({"type": "ping", "ref": "p"})
        err = await recv_json(ws)
        assert err["type"] == "error" and err["code"] == "rate_limited" and err["ref"] == "p"
        await asyncio.sleep(0.6)  # 2.4 tokens back
        await ws.send_json({"type": "cmd", "ref": "later", "name": "sys.echo", "data": {}})
        assert (await recv_until(ws, lambda f: f.get("ref") == "later"))["ok"] is True
        await ping_pong(ws)
        await ws.close()


async def test_post_cmd(gateway: Gateway, token, cmd_worker, uid) -> None:
    """POST /cmd: the reply frame for a good command; 401, 400 and 413 for bad requests; the
    same topic authorization as over WebSocket."""
    admin = token("a" + uid, "admin")
    student = token("s" + uid, cohorts=["c" + uid])
    url = f"{gateway.base}/cmd"
    async with aiohttp.ClientSession() as http:
        cmd = {"type": "cmd", "ref": "h1", "name": "sys.echo", "data": {"x": [1, 2]}}
        async with http.post(url, json=cmd, headers={"Authorization": f"Bearer {admin}"}) as resp:
            assert resp.status == 200
            assert await resp.json() == {
                "type": "reply",
                "ref": "h1",
                "ok": True,
                "data": {"x": [1, 2]},
            }
        async with http.post(url, json=cmd) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["code"] == "missing_token"
        async with http.post(f"{url}?token={student}", data=b"{not json") as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["code"] == "bad_frame"
        async with http.post(f"{url}?token={student}", json={"type": "ping"}) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["code"] == "unknown_type"
        async with http.post(
            f"{url}?token={student}", json={"type": "cmd", "ref": 1, "name": "x"}
        ) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["code"] == "invalid"
        big = {"type": "cmd", "ref": "big", "name": "sys.echo", "data": {"b": "x" * 70_000}}
        async with http.post(f"{url}?token={admin}", json=big) as resp:
            assert resp.status == 413
            assert (await resp.json())["error"]["code"] == "too_big"
        forbidden = {"type": "cmd", "ref": "f", "name": "qa.ask", "topic": f"staff:c{uid}"}
        async with http.post(f"{url}?token={student}", json=forbidden) as resp:
            assert resp.status == 200
            body = await resp.json()
            assert body["ok"] is False and body["error"]["code"] == "forbidden"
        async with http.post(f"{url}?token={student}", json={**cmd, "ref": "s"}) as resp:
            body = await resp.json()
            assert body["ref"] == "s" and body["error"]["code"] == "forbidden"  # sys.echo: admins


async def test_post_cmd_oversized_without_content_length(gateway: Gateway, token, uid) -> None:
    """A chunked body (no Content-Length) over the limit is refused with 413 as well."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"type":"cmd","ref":"c","name":"x","data":{"b":"'
        for _ in range(10):
            yield b"x" * 10_000
        yield b'"}}'

    url = f"{gateway.base}/cmd?token={token('u' + uid)}"
    async with aiohttp.ClientSession() as http, http.post(url, data=chunks()) as resp:
        assert resp.status == 413


async def test_post_cmd_without_worker_times_out(make_gateway: GatewayFactory, token, uid) -> None:
    """POST /cmd with no worker: HTTP 200 with a timeout reply, not a hang."""
    gateway = await make_gateway(cmd_reply_timeout_s=0.5)
    async with aiohttp.ClientSession() as http:
        cmd = {"type": "cmd", "ref": "h", "name": "qa.ask", "data": {}}
        start = time.monotonic()
        async with http.post(f"{gateway.base}/cmd?token={token('u' + uid)}", json=cmd) as resp:
            assert resp.status == 200
            body = await resp.json()
        assert body["ref"] == "h" and body["ok"] is False and body["error"]["code"] == "timeout"
        assert time.monotonic() - start >= 0.5  # not before the deadline
        assert not gateway.hub.commands.pending
