"""Commands: exactly one reply each — ok, error, or timeout."""

from __future__ import annotations

import json

import aiohttp
import pytest

from tests.gateway.conftest import Gateway

#: Also on the Redis Cluster (docs/cluster.md).
pytestmark = pytest.mark.redis_modes


async def _hello(ws: aiohttp.ClientWebSocketResponse) -> dict:
    return json.loads((await ws.receive(timeout=5)).data)


async def test_command_ok_error_and_timeout(gateway: Gateway, token, cmd_worker, uid) -> None:
    """sys.echo answers ok for an admin, forbidden for a student; a slow one times out."""
    async with aiohttp.ClientSession() as http:
        admin = await http.ws_connect(gateway.ws_url + f"?token={token('a' + uid, 'admin')}")
        await _hello(admin)
        await admin.send_json({"type": "cmd", "ref": "1", "name": "sys.echo", "data": {"x": 1}})
        reply = json.loads((await admin.receive(timeout=5)).data)
        assert reply == {"type": "reply", "ref": "1", "ok": True, "data": {"x": 1}}
        await admin.send_json(
            {"type": "cmd", "ref": "2", "name": "sys.echo", "data": {"delay_ms": 3000}}
        )
        reply = json.loads((await admin.receive(timeout=5)).data)
        assert reply["ref"] == "2" and reply["ok"] is False
        assert reply["error"]["code"] == "timeout"

        student = await http.ws_connect(gateway.ws_url + f"?token={token('s' + uid)}")
        await _hello(student)
        await student.send_json({"type": "cmd", "ref": "x", "name": "sys.echo", "data": {}})
        reply = json.loads((await student.receive(timeout=5)).data)
        assert reply["ok"] is False and reply["error"]["code"] == "forbidden"
        await student.send_json({"type": "cmd", "ref": "y", "name": "no.such", "data": {}})
        reply = json.loads((await student.receive(timeout=5)).data)
        assert reply["error"]["code"] == "unknown_command"
        # The late reply to ref 2 arrives after the timeout and must not be forwarded.
        await admin.send_json({"type": "ping", "ref": "p"})
        msg = json.loads((await admin.receive(timeout=5)).data)
        assert msg["type"] == "pong"
